package testnet

import (
	"io"
	"net"
	"testing"
	"time"
)

// A test that ends with a connection still open — as a failing test does — must
// not leave ServeTCP's cleanup waiting for a handler blocked on that connection.
// (Before the cleanup closed open connections, this hung until the binary's
// timeout.)
func TestServeTCPCleanupClosesOpenConns(t *testing.T) {
	handlerDone := make(chan error, 1)
	started := make(chan struct{})
	var client net.Conn
	t.Run("leaves a connection open", func(t *testing.T) {
		ap := ServeTCP(t, func(c net.Conn) {
			close(started)
			_, err := io.Copy(io.Discard, c) // until the client goes: never, here
			handlerDone <- err
		})
		var err error
		client, err = net.Dial("tcp", ap.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		<-started // accepted and handled (a dial completes before the accept)
	})
	defer client.Close()
	select {
	case <-handlerDone:
	default:
		t.Fatal("the subtest's cleanup returned with its handler still running")
	}
	// The client sees its connection closed by the server.
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatalf("client read %d bytes, want the connection closed", n)
	}
}
