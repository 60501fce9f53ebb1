package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tetherd/tetherd/transport/wire"
)

// rawPeer speaks tether.v1 by hand, to send what a correct implementation never would.
type rawPeer struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialRaw(t *testing.T, url string, subprotocols ...string) *rawPeer {
	t.Helper()
	if subprotocols == nil {
		subprotocols = []string{wire.Subprotocol}
	}
	c, _, err := websocket.Dial(ctxT(t), url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(wire.MaxMessage * 2)
	t.Cleanup(func() { c.CloseNow() })
	return &rawPeer{t: t, conn: c}
}

func (p *rawPeer) send(b []byte) {
	p.t.Helper()
	if err := p.conn.Write(ctxT(p.t), websocket.MessageBinary, b); err != nil {
		p.t.Fatal(err)
	}
}

// next reads frames until one satisfies want, or the connection ends; it returns the
// matching frame or the close error.
func (p *rawPeer) next(want func(wire.Header, []byte) bool) (wire.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, msg, err := p.conn.Read(ctx)
		if err != nil {
			return wire.Header{}, nil, err
		}
		var hit *wire.Header
		var payload []byte
		err = wire.SplitMessage(msg, wire.MaxFrameLimit, func(h wire.Header, b []byte) error {
			if hit == nil && want(h, b) {
				hit, payload = &h, append([]byte(nil), b...)
			}
			return nil
		})
		if err != nil {
			p.t.Fatalf("server sent a malformed message: %v", err)
		}
		if hit != nil {
			return *hit, payload, nil
		}
	}
}

func settings() []byte {
	return wire.AppendSettings(nil, []wire.Setting{{ID: wire.SettingInitialWindow, Value: 64 << 10}})
}

func openTCP(id uint32, dst wire.Addr) []byte {
	b, err := wire.AppendOpen(nil, id, wire.Open{Proto: wire.ProtoTCP, Dst: dst})
	if err != nil {
		panic(err)
	}
	return b
}

func data(id uint32, p []byte, fin bool) []byte {
	return append(wire.AppendDataHeader(nil, id, len(p), fin), p...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// bigMessage is one message of valid DATA frames on stream id that is larger than
// wire.MaxMessage.
func bigMessage(id uint32) []byte {
	var b []byte
	for len(b) <= wire.MaxMessage {
		b = append(b, data(id, make([]byte, 60000), false)...)
	}
	return b
}

// TestBadInput lists every kind of malformed input a client can send. Each gets a clear
// refusal — the session closed with a WebSocket status and a reason that names the
// problem, or just the stream refused or reset — and another session on the same
// server keeps working throughout.
func TestBadInput(t *testing.T) {
	h := newHarness(t, nil)
	bystander := h.dial(nil)
	live := listen(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	hdr := func(typ wire.Type, flags uint8, stream, length uint32) []byte {
		return wire.AppendHeader(nil, wire.Header{Type: typ, Flags: flags, Stream: stream, Length: length})
	}
	sessionErrors := []struct {
		name   string
		msgs   [][]byte
		status websocket.StatusCode
		reason string
	}{
		{"truncated header", [][]byte{cat(settings(), []byte{3, 0, 0})}, websocket.StatusProtocolError, "inside a frame header"},
		{"truncated payload", [][]byte{cat(settings(), hdr(wire.TypePing, 0, 0, 8), []byte("short"))}, websocket.StatusProtocolError, "inside the payload"},
		{"unknown frame type", [][]byte{cat(settings(), hdr(0x77, 0, 1, 0))}, websocket.StatusProtocolError, "unknown frame type 0x77"},
		{"unknown flags", [][]byte{cat(settings(), hdr(wire.TypeWindow, 0x10, 1, 4), []byte{0, 0, 0, 1})}, websocket.StatusProtocolError, "unknown flags"},
		{"first frame not SETTINGS", [][]byte{openTCP(1, live)}, websocket.StatusProtocolError, "want SETTINGS"},
		{"second SETTINGS", [][]byte{cat(settings(), settings())}, websocket.StatusProtocolError, "second SETTINGS"},
		{"bad SETTINGS value", [][]byte{wire.AppendSettings(nil, []wire.Setting{{ID: wire.SettingMaxFrame, Value: 10}})}, websocket.StatusProtocolError, "MAX_FRAME 10 out of range"},
		{"DATA on unknown stream", [][]byte{cat(settings(), data(9, []byte("x"), false))}, websocket.StatusProtocolError, "never opened"},
		{"WINDOW on unknown stream", [][]byte{cat(settings(), wire.AppendWindow(nil, 5, 100))}, websocket.StatusProtocolError, "never opened"},
		{"stream ids not increasing", [][]byte{cat(settings(), openTCP(5, live), openTCP(5, live))}, websocket.StatusProtocolError, "ids must increase"},
		{"frame over MAX_FRAME", [][]byte{cat(settings(), hdr(wire.TypeData, 0, 1, 70000), make([]byte, 70000))}, websocket.StatusProtocolError, "exceeds MAX_FRAME"},
		{"REPLY from the client", [][]byte{cat(settings(), openTCP(1, live), wire.AppendReply(nil, 1, wire.Reply{}))}, websocket.StatusProtocolError, "REPLY sent by the client"},
		{"malformed OPEN", [][]byte{cat(settings(), hdr(wire.TypeOpen, 0, 1, 2), []byte{6, 9})}, websocket.StatusProtocolError, "unknown address type"},
		{"PING with stream id", [][]byte{cat(settings(), hdr(wire.TypePing, 0, 3, 8), make([]byte, 8))}, websocket.StatusProtocolError, "want stream 0"},
		{"message over 1 MiB", [][]byte{cat(settings(), openTCP(1, live)), bigMessage(1)}, websocket.StatusMessageTooBig, ""},
	}
	for _, c := range sessionErrors {
		t.Run(c.name, func(t *testing.T) {
			p := dialRaw(t, h.url)
			for _, m := range c.msgs {
				if err := p.conn.Write(ctxT(t), websocket.MessageBinary, m); err != nil {
					break // the server may already have closed
				}
			}
			_, _, err := p.next(func(wire.Header, []byte) bool { return false })
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != c.status || !strings.Contains(ce.Reason, c.reason) {
				t.Fatalf("closed with %v, want status %v and a reason containing %q", err, c.status, c.reason)
			}
			if _, err := bystander.Ping(ctxT(t)); err != nil {
				t.Fatalf("another session broke: %v", err)
			}
		})
	}

	t.Run("text message", func(t *testing.T) {
		p := dialRaw(t, h.url)
		p.conn.Write(ctxT(t), websocket.MessageText, []byte("hello"))
		_, _, err := p.next(func(wire.Header, []byte) bool { return false })
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusProtocolError || !strings.Contains(ce.Reason, "binary") {
			t.Fatalf("closed with %v", err)
		}
	})

	// A destination that reads to the end and keeps its side open until the test
	// ends: a stream that the client half-closed stays open on the server, so DATA
	// after the client's FIN meets it. (With a destination that closes at EOF the
	// stream may be gone by the time the next frame is read — a late frame for a
	// closed stream is discarded, not answered — and the check would race.)
	stopHolding := make(chan struct{})
	holding := listen(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
		<-stopHolding
	})
	t.Cleanup(func() { close(stopHolding) }) // before listen's cleanup waits for the handler

	// Stream errors: only the stream is refused or reset; the session goes on.
	streamErrors := []struct {
		name string
		msgs []byte
		typ  wire.Type
		code wire.Code
	}{
		{"malformed host name", cat(settings(), hdr(wire.TypeOpen, 0, 1, 7), []byte{6, 3, 2, 'a', '/', 0, 80}), wire.TypeReply, wire.CodeProtocol},
		{"unknown protocol", cat(settings(), hdr(wire.TypeOpen, 0, 1, 8), []byte{0x84, 1, 127, 0, 0, 1, 0, 80}), wire.TypeReply, wire.CodeUnsupported},
		{"data after FIN", cat(settings(), openTCP(1, holding)), wire.TypeReset, wire.CodeProtocol},
		{"window overflow", cat(settings(), openTCP(1, live)), wire.TypeReset, wire.CodeProtocol},
	}
	// A server whose destinations never read, so credit is never returned.
	var pipesMu sync.Mutex
	var pipes []net.Conn
	stuck := newHarness(t, func(s *Server) {
		s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			a, b := net.Pipe()
			pipesMu.Lock()
			pipes = append(pipes, a, b)
			pipesMu.Unlock()
			return a, nil
		}
	})
	t.Cleanup(func() {
		pipesMu.Lock()
		defer pipesMu.Unlock()
		for _, c := range pipes {
			c.Close()
		}
	})
	for _, c := range streamErrors {
		t.Run(c.name, func(t *testing.T) {
			url := h.url
			if c.name == "window overflow" {
				url = stuck.url
			}
			p := dialRaw(t, url)
			p.send(c.msgs)
			if c.typ == wire.TypeReset {
				// Wait for the stream to open, then break its rules.
				_, r, err := p.next(func(h wire.Header, _ []byte) bool { return h.Type == wire.TypeReply })
				if err != nil || r[0] != byte(wire.CodeOK) {
					t.Fatalf("open: %v %v", r, err)
				}
				if c.name == "data after FIN" {
					p.send(cat(data(1, []byte("a"), true), data(1, []byte("b"), false)))
				} else {
					// 5 × 60000 bytes against the server's 256 KiB initial window.
					p.send(cat(data(1, make([]byte, 60000), false), data(1, make([]byte, 60000), false),
						data(1, make([]byte, 60000), false), data(1, make([]byte, 60000), false),
						data(1, make([]byte, 60000), false)))
				}
			}
			fh, payload, err := p.next(func(h wire.Header, _ []byte) bool { return h.Type == c.typ && h.Stream == 1 })
			if err != nil {
				t.Fatalf("want %v on stream 1: %v", c.typ, err)
			}
			if wire.Code(payload[0]) != c.code {
				t.Fatalf("%v code %v, want %v (payload %q)", fh.Type, wire.Code(payload[0]), c.code, payload)
			}
			// The session still answers pings.
			var key [8]byte
			key[0] = 42
			p.send(wire.AppendPing(nil, false, key))
			if _, _, err := p.next(func(h wire.Header, b []byte) bool { return h.Type == wire.TypePing && b[0] == 42 }); err != nil {
				t.Fatalf("session died after a stream error: %v", err)
			}
		})
	}

	t.Run("junk upgrade requests", func(t *testing.T) {
		for _, hdrs := range []map[string]string{
			{"Upgrade": "websocket", "Connection": "Upgrade"}, // no key, no version
			{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "!!", "Sec-WebSocket-Protocol": wire.Subprotocol},
			{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": wire.Subprotocol},
		} {
			req, _ := http.NewRequest("GET", strings.Replace(h.url, "ws://", "http://", 1), nil)
			for k, v := range hdrs {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Errorf("%v: status %d, want a 4xx refusal", hdrs, resp.StatusCode)
			}
		}
		http.DefaultClient.CloseIdleConnections()
	})
}

// TestVersionMismatch: both sides fail fast and say why.
func TestVersionMismatch(t *testing.T) {
	h := newHarness(t, nil)
	t.Run("client offers another version", func(t *testing.T) {
		_, resp, err := websocket.Dial(ctxT(t), h.url, &websocket.DialOptions{Subprotocols: []string{"tether.v2"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("err %v, resp %v", err, resp)
		}
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != wire.Subprotocol {
			t.Errorf("426 names %q", got)
		}
	})
	t.Run("server selects none", func(t *testing.T) {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil) // a WebSocket server that knows no subprotocol
			if err != nil {
				return
			}
			c.Read(r.Context())
			c.CloseNow()
		}))
		defer hs.Close()
		start := time.Now()
		_, err := Dial(ctxT(t), "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
		if err == nil || !strings.Contains(err.Error(), "does not speak tether.v1") {
			t.Fatalf("err = %v", err)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("took %v: must fail fast", time.Since(start))
		}
	})
	t.Run("plain GET", func(t *testing.T) {
		resp, err := http.Get(strings.Replace(h.url, "ws://", "http://", 1))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(b), "tether.v1") {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	})
}

// TestKeepaliveDetectsSilentPeer: a peer that accepts and then says nothing is
// declared dead after KeepAliveTimeout, not hours later.
func TestKeepaliveDetectsSilentPeer(t *testing.T) {
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.Subprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Write(r.Context(), websocket.MessageBinary, settings())
		<-release // then silence: read nothing, answer nothing
	}))
	defer hs.Close()
	defer close(release)
	s, err := Dial(ctxT(t), "ws"+strings.TrimPrefix(hs.URL, "http"), &DialOptions{Config: &Config{KeepAlive: 100 * time.Millisecond, KeepAliveTimeout: 500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("silent peer not detected")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "keepalive") {
		t.Fatalf("Err = %v", err)
	}
}
