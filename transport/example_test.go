package transport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// The peer side mounts transport.Server in any HTTP server; the client dials it and
// opens streams to destinations the peer connects to. Here both run in one process,
// and the destination is a loopback echo server (the peer's policy must allow its
// own loopback for that).
func Example() {
	echo, _ := net.Listen("tcp", "127.0.0.1:0")
	defer echo.Close()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	peer := &transport.Server{Token: "secret", Policy: &transport.Policy{AllowLoopback: true}}
	mux := http.NewServeMux()
	mux.Handle("/tether", peer)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer peer.Close()

	ctx := context.Background()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/tether?token=secret"
	s, err := transport.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	dst, _ := transport.ParseAddr(echo.Addr().String())
	conn, err := s.OpenTCP(ctx, dst)
	if err != nil {
		log.Fatal(err)
	}
	conn.Write([]byte("hello through the tunnel"))
	conn.CloseWrite() // half-close: the echo server sees EOF and closes too
	reply, _ := io.ReadAll(conn)
	conn.Close()
	fmt.Println(string(reply))
	// Output: hello through the tunnel
}

// A refused destination is an error that says why, and maps to the errno a kernel
// socket would give.
func ExampleStreamError() {
	err := error(&transport.StreamError{Code: wire.CodeRefused, Reason: "dial tcp 192.0.2.1:81: connect: connection refused", Remote: true, Open: true})
	fmt.Println(err)
	// Output: transport: open refused by peer: connection refused: dial tcp 192.0.2.1:81: connect: connection refused
}

// A peer in an HTTP server of its own, as `tetherd serve` runs it: the listener corks
// each session's writes (under TLS, one system call per round of frames rather than
// per record), and the http.Server's hooks come from the transport.Server.
func ExampleCorkListener() {
	peer := &transport.Server{Token: "secret"}
	defer peer.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ln = transport.CorkListener(ln)
	// With TLS: ln = tls.NewListener(ln, tlsConfig)
	mux := http.NewServeMux()
	mux.Handle("/tether", peer)
	hs := &http.Server{Handler: mux, ConnState: peer.ConnState, ConnContext: peer.ConnContext}
	go hs.Serve(ln)
	defer hs.Close()

	s, err := transport.Dial(context.Background(), "ws://"+ln.Addr().String()+"/tether?token=secret", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	_, err = s.Ping(context.Background())
	fmt.Println("ping:", err)
	// Output: ping: <nil>
}
