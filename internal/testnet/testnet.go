// Package testnet holds helpers that tests of several packages share: loopback servers
// whose goroutines end with the test.
package testnet

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// ServeTCP starts a TCP server on 127.0.0.1 that runs handle in a goroutine for each
// connection, and returns its address. The test's cleanup closes the listener and
// every connection still open, then waits for every handler, so goroutine-leak
// checks stay exact and a test that fails with a stream still open does not leave
// a handler blocked on it (a handler blocked on anything else must be released by
// a cleanup registered after ServeTCP).
func ServeTCP(t testing.TB, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		open   = make(map[net.Conn]struct{})
		closed bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// PingPong sends 64 bytes on c and waits for them to come back, b.N times after
// resetting the timer: with an echo at the other end, ns/op is the round trip.
func PingPong(b *testing.B, c net.Conn) {
	buf := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// ServeUDPEcho starts a UDP server on 127.0.0.1 that sends every datagram (up to
// 64 KiB) back to its sender, and returns its address. The test's cleanup closes it
// and waits for its goroutine.
func ServeUDPEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	t.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}
