package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherd/tetherd/transport"
)

// TestServeAbuse checks the limits of the real `tetherd serve` HTTP server, over TLS,
// with its built-in defaults: the handshake and header timeout, the per-address cap on
// connections that have not authenticated, the header size limit, and the failed-token
// limit. An honest session opened first keeps carrying data through all of it.
// transport/abuse_test.go has the protocol-level cases.
func TestServeAbuse(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 10 s header timeout")
	}
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), loopbackConfig)
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", dir, "--config", cfg)
	uri := p.line(t)
	pu, err := transport.ParsePeerURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(pu.URL, "wss://"), "/tether")
	tlsConf, err := transport.PinnedTLSConfig(nil, pu.Pin)
	if err != nil {
		t.Fatal(err)
	}
	honest, err := transport.Dial(ctxT(t), uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	dst := echoServer(t)

	dialFrom := func(t *testing.T, src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// ended reports whether the server closed c within within.
	ended := func(c net.Conn, within time.Duration) error {
		c.SetReadDeadline(time.Now().Add(within))
		_, err := c.Read(make([]byte, 1))
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil
		}
		return fmt.Errorf("still open after %v: %v", within, err)
	}
	request := func(t *testing.T, src string, hdr http.Header) *http.Response {
		t.Helper()
		c := tls.Client(dialFrom(t, src), tlsConf)
		req, _ := http.NewRequest("GET", "https://"+addr+"/tether", nil)
		for k, v := range map[string]string{
			"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
			"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "tether.v1",
		} {
			req.Header.Set(k, v)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"silent connection closed after the header timeout", func(t *testing.T) {
			c := dialFrom(t, "127.0.0.2") // no TLS ClientHello, nothing
			if err := ended(c, headerTimeout+5*time.Second); err != nil {
				t.Fatal(err)
			}
		}},
		{"slow TLS handshake closed after the header timeout", func(t *testing.T) {
			c := dialFrom(t, "127.0.0.3")
			c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}) // the start of a ClientHello
			if err := ended(c, headerTimeout+5*time.Second); err != nil {
				t.Fatal(err)
			}
		}},
		{"connections beyond the per-address cap closed at once", func(t *testing.T) {
			for range 8 { // the default MaxUnauthenticatedPerSource
				// A finished handshake shows the server counted the connection (it
				// counts before it starts the handshake).
				tc := tls.Client(dialFrom(t, "127.0.0.4"), tlsConf)
				if err := tc.HandshakeContext(ctxT(t)); err != nil {
					t.Fatal(err)
				}
			}
			c := dialFrom(t, "127.0.0.4")
			if err := ended(c, 3*time.Second); err != nil {
				t.Fatalf("9th connection: %v", err)
			}
			// Another address is not affected.
			if resp := request(t, "127.0.0.5", http.Header{"Authorization": {"Bearer nope"}}); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("another address: %s", resp.Status)
			}
		}},
		{"headers beyond 16 KiB answered 431", func(t *testing.T) {
			resp := request(t, "127.0.0.6", http.Header{"X-Junk": {strings.Repeat("j", 32<<10)}})
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %s, want 431", resp.Status)
			}
		}},
		{"wrong tokens answered 401, then 429", func(t *testing.T) {
			for i := range 5 { // the default AuthFailureBurst
				resp := request(t, "127.0.0.7", http.Header{"Authorization": {fmt.Sprintf("Bearer guess-%d", i)}})
				if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
					t.Fatalf("attempt %d: %s %v", i+1, resp.Status, resp.Header)
				}
			}
			resp := request(t, "127.0.0.7", http.Header{"Authorization": {"Bearer " + pu.Token}})
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("6th attempt, even with the right token: %s %v", resp.Status, resp.Header)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(t)
			checkEcho(t, honest, dst) // the honest session still carries data
		})
	}
	p.stop(t)
	if p.logs.FilterMessageSnippet(pu.Token).Len() != 0 {
		t.Error("a log message shows the token")
	}
	for _, e := range p.logs.All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()), pu.Token) {
			t.Errorf("log %q shows the token", e.Message)
		}
	}
}
