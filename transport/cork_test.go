package transport

import (
	"crypto/tls"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"
)

// countListener counts the Write calls on the connections it accepts.
type countListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countConn{c, l.writes}, nil
}

type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestServerCork: a server behind CorkListener (under TLS, with ConnContext set)
// writes a download with one system call per round of frames, not one per 16 KiB
// TLS record; without it, the same download takes a write per record.
func TestServerCork(t *testing.T) {
	const total = 8 << 20
	for _, corked := range []bool{true, false} {
		name := "plain TLS listener"
		if corked {
			name = "CorkListener"
		}
		t.Run(name, func(t *testing.T) {
			srv := &Server{Policy: &Policy{AllowLoopback: true}, Logger: zaptest.NewLogger(t)}
			hs := httptest.NewUnstartedServer(srv)
			var writes atomic.Int64
			hs.Listener = countListener{hs.Listener, &writes}
			if corked {
				hs.Listener = CorkListener(hs.Listener)
				hs.Config.ConnContext = srv.ConnContext
			}
			cert := certTestLoad(t, t.TempDir(), []string{"127.0.0.1"})
			hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			hs.StartTLS()
			t.Cleanup(func() { srv.Close(); hs.Close() })

			s, err := Dial(ctxT(t), "wss"+strings.TrimPrefix(hs.URL, "https")+"/tether",
				&DialOptions{Pin: SPKIPin(cert.Leaf)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			st := openDownload(t, s, total)
			before := writes.Load()
			n, err := io.Copy(io.Discard, st)
			if err != nil || n != total {
				t.Fatalf("downloaded %d bytes, %v; want %d", n, err, total)
			}
			w := writes.Load() - before
			records := int64(total / (16 << 10))
			t.Logf("%d writes for %d bytes (%d TLS records at least)", w, total, records)
			if corked && w >= records/2 {
				t.Fatalf("%d writes through CorkListener: not coalesced (%d records)", w, records)
			}
			if !corked && w < records {
				t.Fatalf("%d writes without CorkListener, fewer than the %d records: the test measures nothing", w, records)
			}
		})
	}
}
