package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// FuzzSOCKSAddr checks ATYP ADDR PORT decoding (SOCKS requests and the header of
// every UDP datagram): what decodes is a usable destination and encodes back to
// bytes that decode to the same destination.
func FuzzSOCKSAddr(f *testing.F) {
	for _, s := range []string{
		"\x01\x7f\x00\x00\x01\x00\x50",
		"\x04" + string(make([]byte, 16)) + "\x01\xbb",
		"\x03\x0bexample.com\x00\x50",
		"\x03\x091.2.3.4:5\x00\x50",
		"\x03\x07::ffff:1\x00\x50",
		"\x03\x00\x00\x50",
		"\x03\x03a/b\x00\x01",
		"\x05",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := readSOCKSAddr(bytes.NewReader(in))
		if err != nil {
			return
		}
		if a.IP.Zone() != "" { // found by this target: "::%0" used to decode to one
			t.Fatalf("%q decoded to a zoned address %v", in, a.IP)
		}
		if a.IP.IsValid() == (a.Name != "") || a.Name != "" && !wire.ValidName(a.Name) || a.IP.Is4In6() {
			t.Fatalf("%q decoded to %+v", in, a)
		}
		again, err := readSOCKSAddr(bytes.NewReader(appendSOCKSAddr(nil, a)))
		if err != nil || again != a {
			t.Fatalf("%q decoded to %v; re-encoded it decodes to %v, %v", in, a, again, err)
		}
	})
}

// FuzzSOCKSRequest checks the request decoder: it never reads past the request, and
// the errors it answers with a reply are SOCKS reply codes.
func FuzzSOCKSRequest(f *testing.F) {
	f.Add([]byte("\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50rest"))
	f.Add([]byte("\x05\x03\x00\x03\x01a\x00\x00"))
	f.Add([]byte("\x04\x01\x00\x01"))
	f.Add([]byte("\x05\x01\x00\x09"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		cmd, a, err := readSOCKSRequest(br)
		var se *socksError
		switch {
		case errors.As(err, &se):
			if se.rep == repSucceeded {
				t.Fatalf("%q: an error replied as success", in)
			}
		case err == nil:
			rest, _ := io.ReadAll(br)
			want := append([]byte{socksVersion, cmd, in[2]}, appendSOCKSAddr(nil, a)...)
			if a.IP.IsValid() && in[3] == atypDomain {
				return // a name that is an IP address is decoded as the address
			}
			if !bytes.Equal(append(want, rest...), in) {
				t.Fatalf("%q: decoded %x %v, leaving %q", in, cmd, a, rest)
			}
		}
	})
}

// FuzzParseHostPort checks the host[:port] of HTTP requests (CONNECT targets and
// absolute URLs): what parses is a usable destination that prints back to itself.
func FuzzParseHostPort(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:80", "[fe80::1%eth0]:22", "1.2.3.4", "h:0", "h:65536", ":80", "[::1]", "a..b:1", "\xff:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseHostPort(s, "80")
		if err != nil {
			return
		}
		if a.IP.Zone() != "" { // found by this target: "::0%]00" used to parse to one
			t.Fatalf("parseHostPort(%q) = zoned %v", s, a.IP)
		}
		if a.Port == 0 || a.IP.IsValid() == (a.Name != "") || a.Name != "" && !wire.ValidName(a.Name) {
			t.Fatalf("parseHostPort(%q) = %+v", s, a)
		}
		again, err := parseHostPort(a.String(), "")
		if err != nil || again != a {
			t.Fatalf("parseHostPort(%q) = %v; its String parses to %v, %v", s, a, again, err)
		}
	})
}

// FuzzServeConn runs a whole proxy connection (protocol detection, SOCKS negotiation
// and request, or HTTP requests) on arbitrary client bytes, with credentials
// required. It must end once the client has finished sending, and must never ask for
// a session — that is, never open anything — unless the client presented the
// password.
func FuzzServeConn(f *testing.F) {
	const user, pass = "user", "s3cret-pw"
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	for _, s := range []string{
		"\x05\x01\x02\x01\x04user\x09s3cret-pw\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50",
		"\x05\x01\x02\x01\x04user\x05wrong",
		"\x05\x01\x00",
		"\x05\x02\x00\x02\x01\x04user\x09s3cret-pw\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic " + basic + "\r\n\r\n",
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: Basic " + basic + "\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST http://x/ HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nProxy-Authorization: Basic " + basic + "\r\n\r\nhello",
	} {
		f.Add([]byte(s))
	}
	var sessions atomic.Int64
	s := &Server{
		Session: func(context.Context) (*transport.Session, error) {
			sessions.Add(1)
			return nil, errors.New("fuzz: no session")
		},
		Auth:             &Credentials{User: user, Password: pass},
		HandshakeTimeout: 5 * time.Second,
		OpenTimeout:      time.Second,
		Logger:           zap.NewNop(),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		before := sessions.Load()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.serveConn(context.Background(), sc)
		}()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(io.Discard, c) // until serveConn closes its side
		c.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("serveConn still runs 10 s after the client finished")
		}
		if sessions.Load() != before && !bytes.Contains(in, []byte(pass)) && !bytes.Contains(in, []byte(basic)) {
			t.Fatalf("%q: a session was requested without the password", in)
		}
	})
}
