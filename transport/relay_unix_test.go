//go:build unix

package transport

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpRelayPair returns both ends of a loopback TCP connection and a pumpRelay (its
// socket half only) on the server's end; everything is closed when t ends.
func tcpRelayPair(t *testing.T) (client, server net.Conn, r *pumpRelay) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	rc, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return client, server, &pumpRelay{conn: server, rc: rc}
}

// TestRelayWaitSeesDataThatArrivedBeforeIt: the relay reads its destination
// socket until it would block, gives its buffer back, then waits for the socket.
// Data that arrives between the two — the reply of a request/response flow,
// usually — must end the wait at once. Go's poller forgets a readiness it already
// saw when a new wait begins (RawConn.Read resets it), so a wait that trusted the
// poller alone slept until the read deadline: up to relayIdle (a second) for one
// reply, seen as 0.5–1 s stalls of a ping-pong under load, and forever without a
// deadline (no idle watcher: macOS).
func TestRelayWaitSeesDataThatArrivedBeforeIt(t *testing.T) {
	client, server, r := tcpRelayPair(t)

	buf := make([]byte, 64)
	for round := range 20 {
		if _, err := r.readNow(buf); err != errWouldBlock {
			t.Fatalf("round %d: read of an empty socket: %v, want errWouldBlock", round, err)
		}
		// The reply arrives after the read saw nothing and before the wait starts;
		// let the poller take the socket's event meanwhile.
		if _, err := client.Write([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)

		if err := server.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := r.waitReadable(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("round %d: the wait missed data that was already there and ran to the deadline", round)
			}
			t.Fatalf("round %d: wait: %v", round, err)
		}
		if n, err := r.readNow(buf); err != nil || string(buf[:n]) != "reply" {
			t.Fatalf("round %d: read after the wait: %q, %v", round, buf[:n], err)
		}
	}
}

// TestRelayWaitWaits: with nothing to read, the wait lasts until data comes (and
// a closed peer, EOF, ends it too).
func TestRelayWaitWaits(t *testing.T) {
	client, server, r := tcpRelayPair(t)

	// Nothing comes: the deadline ends the wait.
	if err := server.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := r.waitReadable(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait on a silent socket: %v, want the deadline", err)
	}

	// Data comes while it waits.
	if err := server.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.waitReadable() }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the wait returned before there was anything to read: %v", err)
	default:
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("wait: %v", err)
	}
	buf := make([]byte, 8)
	if n, err := r.readNow(buf); n != 1 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}

	// The peer closes while it waits: readable (EOF).
	go func() { done <- r.waitReadable() }()
	time.Sleep(20 * time.Millisecond)
	client.Close()
	if err := <-done; err != nil {
		t.Fatalf("wait through a close: %v", err)
	}
	if _, err := r.readNow(buf); err == nil || err == errWouldBlock {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
}
