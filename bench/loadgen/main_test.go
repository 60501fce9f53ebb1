package main

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoListener serves an echo on a loopback port until the test ends: what a
// connection sends comes back, and its half-close closes it.
func echoListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRelay: ping-pong through two relays in a row reaches the echo server and
// back, a half-close travels through both, and the relays end with their context.
func TestRelay(t *testing.T) {
	echo := echoListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	next := echo
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(to string) { defer wg.Done(); relay(ctx, ln, to) }(next)
		next = ln.Addr().String()
	}
	defer func() { cancel(); wg.Wait() }()

	r, err := rr(ctx, next, 200, 10*time.Second, 64)
	if err != nil || r.Count != 200 || r.Errors != 0 {
		t.Fatalf("rr through two relays: %+v, %v", r, err)
	}

	c, err := net.Dial("tcp", next)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("half-close")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "half-close" {
		t.Fatalf("after a half-close through two relays read %q, %v; want the bytes, then EOF", got, err)
	}

	// A connection still open when the relays stop is closed by them.
	open, err := net.Dial("tcp", next)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	open.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(open, b); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	if _, err := open.Read(b); err == nil {
		t.Fatal("connection through a stopped relay still open")
	}
}
