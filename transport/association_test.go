package transport

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestAssociationWaitRead: WaitRead returns once a datagram is queued (and leaves it
// for ReadFrom), and returns the error ReadFrom would: timeout, closed.
func TestAssociationWaitRead(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	pc := listenUDP(t, "")
	a := openUDP(t, s, pc)
	// Nothing queued: WaitRead blocks until the deadline.
	a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := a.WaitRead(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitRead with nothing queued: %v, want ErrTimeout", err)
	}
	a.SetReadDeadline(time.Time{})

	waited := make(chan error, 1)
	go func() { waited <- a.WaitRead() }()
	if _, err := a.WriteTo([]byte("hello"), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		t.Fatalf("WaitRead returned %v before any datagram came back", err)
	case <-time.After(20 * time.Millisecond):
	}
	pc.WriteTo(buf[:n], from)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitRead: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRead did not return when a datagram came")
	}
	// The datagram is still there, and a second WaitRead returns at once.
	if err := a.WaitRead(); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(time.Second))
	if n, _, err := a.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("ReadFrom after WaitRead: %q %v", buf[:n], err)
	}
	a.SetReadDeadline(time.Time{})

	go func() { waited <- a.WaitRead() }()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-waited:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("WaitRead on close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRead did not return on Close")
	}
}
