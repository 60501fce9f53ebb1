package main

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherd/tetherd/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRelay: ping-pong through two relays in a row reaches the echo server and
// back, a half-close travels through both, and the relays end with their context.
func TestRelay(t *testing.T) {
	echo := testnet.ServeTCP(t, func(c net.Conn) { defer c.Close(); _, _ = io.Copy(c, c) }).String()
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
	closedOnStop(t, next, func() { cancel(); wg.Wait() })
}

// TestServeEcho: the echo server answers rr and conns, and ends with its context,
// closing the connections still open.
func TestServeEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); serveEcho(ctx, []net.Listener{ln}) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	r, err := rr(ctx, addr, 100, 10*time.Second, 64)
	if err != nil || r.Count != 100 || r.Errors != 0 {
		t.Fatalf("rr: %+v, %v", r, err)
	}
	r, err = conns(ctx, addr, 5, 50, 10*time.Second, 32)
	if err != nil || r.Count != 50 || r.Errors != 0 {
		t.Fatalf("conns: %+v, %v", r, err)
	}

	closedOnStop(t, addr, func() { cancel(); <-done })
}

// closedOnStop opens a connection to the echo at addr, checks that it echoes, calls
// stop and checks that the connection was closed.
func closedOnStop(t *testing.T, addr string, stop func()) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	stop()
	if _, err := c.Read(b); err == nil {
		t.Fatal("connection still open after the server stopped")
	}
}
