package transport

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/tetherd/tetherd/transport/wire"
)

// discardPacketConn is a UDP socket that sends nothing anywhere: writes are dropped,
// reads wait for Close.
type discardPacketConn struct {
	once   sync.Once
	closed chan struct{}
}

func (c *discardPacketConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}
func (c *discardPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) { return len(p), nil }
func (c *discardPacketConn) Close() error                              { c.once.Do(func() { close(c.closed) }); return nil }
func (c *discardPacketConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
}
func (c *discardPacketConn) SetDeadline(time.Time) error      { return nil }
func (c *discardPacketConn) SetReadDeadline(time.Time) error  { return nil }
func (c *discardPacketConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzSeparator splits a fuzz input into WebSocket messages.
var fuzzSeparator = []byte("|MSG|")

// FuzzSessionReader sends arbitrary messages to a real server session and checks that
// the session either goes on (it answers a PING sent after them) or ends with a clean
// refusal — a close frame with status 1000, 1001, 1002 or 1009 — and that the server
// holds no session once the client is gone. Streams the input opens reach an
// in-process echo: no byte of this fuzz target leaves the process, except ICMP echo
// requests to loopback.
func FuzzSessionReader(f *testing.F) {
	var echoes sync.WaitGroup
	h := newHarness(f, func(s *Server) {
		s.Policy = &Policy{AllowLoopback: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
		s.Logger = zap.NewNop()
		s.DNSServers = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}
		s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			a, b := net.Pipe()
			echoes.Add(1)
			go func() {
				defer echoes.Done()
				defer b.Close()
				io.Copy(b, b)
			}()
			return a, nil
		}
		s.ListenPacket = func(context.Context, string, string) (net.PacketConn, error) {
			return &discardPacketConn{closed: make(chan struct{})}, nil
		}
		s.LookupNetIP = func(_ context.Context, _, host string) ([]netip.Addr, error) {
			if host == "echo.test" {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		s.Config = &Config{MaxStreams: 64, KeepAlive: time.Minute, KeepAliveTimeout: 2 * time.Minute}
	})
	f.Cleanup(echoes.Wait) // after the harness closed the server (cleanups run last first)

	dst := wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 7}
	udp, _ := wire.AppendOpen(nil, 2, wire.Open{Proto: wire.ProtoUDP, Dst: wire.Addr{Name: "echo.test", Port: 53}})
	dg, _ := wire.AppendDgram(nil, 2, wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 53}, []byte("q"))
	for _, seed := range [][]byte{
		settings(),
		cat(settings(), openTCP(1, dst), data(1, []byte("hello"), true)),
		cat(settings(), openTCP(1, dst), wire.AppendWindow(nil, 1, 1000), wire.AppendReset(nil, 1, wire.Reset{Code: wire.CodeCanceled})),
		cat(settings(), udp, dg),
		cat(settings(), openTCP(1, dst), fuzzSeparator, data(1, []byte("x"), false), fuzzSeparator, data(1, nil, true)),
		cat(settings(), wire.AppendGoAway(nil, wire.GoAway{Code: wire.CodeGoingAway, Reason: "bye"})),
		cat(settings(), openTCP(1, wire.Addr{Name: wire.ResolverName, Port: 53})),
		cat(settings(), wire.AppendPing(nil, true, [8]byte{1})),
		{3, 0, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{Subprotocols: []string{wire.Subprotocol}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(wire.MaxMessage * 2)
		msgs := bytes.Split(in, fuzzSeparator)
		if len(msgs) > 8 {
			msgs = msgs[:8]
		}
		key := [8]byte{'f', 'u', 'z', 'z'}
		msgs = append(msgs, wire.AppendPing(nil, false, key))
		for _, m := range msgs {
			if err := c.Write(ctx, websocket.MessageBinary, m); err != nil {
				break // the server may have closed already
			}
		}
		for alive := false; !alive; {
			_, msg, err := c.Read(ctx)
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusProtocolError, websocket.StatusMessageTooBig:
				default:
					t.Fatalf("session ended without a clean refusal: %v", err)
				}
				break
			}
			err = wire.SplitMessage(msg, wire.MaxFrameLimit, func(fh wire.Header, p []byte) error {
				alive = alive || fh.Type == wire.TypePing && fh.Flags&wire.FlagACK != 0 && bytes.Equal(p, key[:])
				return nil
			})
			if err != nil {
				t.Fatalf("the server sent a malformed message: %v", err)
			}
		}
		c.CloseNow()
		for h.srv.Sessions() > 0 {
			if ctx.Err() != nil {
				t.Fatal("the server still holds the session 10 s after the client left")
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// FuzzClientSessionReader is FuzzSessionReader the other way round: a hostile peer
// sends SETTINGS and then arbitrary messages to a client that has a stream open. The
// client must not crash or hang: its Ping and the stream's Read end (answered, or
// failed with the session) within a deadline, and Close returns.
func FuzzClientSessionReader(f *testing.F) {
	var scripts sync.Map // URL path → the messages to send on that connection
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msgs, ok := scripts.LoadAndDelete(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.Subprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		for _, m := range msgs.([][]byte) {
			if c.Write(ctx, websocket.MessageBinary, m) != nil {
				return
			}
		}
		for { // answer nothing more; read until the client goes
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}))
	f.Cleanup(hs.Close)
	url := "ws" + strings.TrimPrefix(hs.URL, "http")

	ok := func([]byte) []byte { return wire.AppendReply(nil, 1, wire.Reply{Code: wire.CodeOK}) }
	for _, seed := range [][]byte{
		cat(settings(), ok(nil), data(1, []byte("hi"), true)),
		cat(settings(), wire.AppendReply(nil, 1, wire.Reply{Code: wire.CodeRefused, Reason: "no"})),
		cat(settings(), ok(nil), wire.AppendWindow(nil, 1, 1<<20), wire.AppendReset(nil, 1, wire.Reset{Code: wire.CodeConnReset})),
		cat(settings(), ok(nil), ok(nil)),
		cat(settings(), wire.AppendGoAway(nil, wire.GoAway{LastStream: 0, Code: wire.CodeGoingAway})),
		cat(settings(), openTCP(2, wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 1})),
		cat(settings(), fuzzSeparator, ok(nil), fuzzSeparator, data(1, make([]byte, 300), false)),
		settings(),
	} {
		f.Add(seed)
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, in []byte) {
		msgs := bytes.Split(in, fuzzSeparator)
		if len(msgs) > 8 {
			msgs = msgs[:8]
		}
		path := "/" + strconv.FormatInt(n.Add(1), 10)
		scripts.Store(path, msgs)
		defer scripts.Delete(path)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		s, err := Dial(dctx, url+path, &DialOptions{Logger: zap.NewNop(), Config: &Config{KeepAlive: time.Minute, KeepAliveTimeout: 2 * time.Minute}})
		dcancel()
		if err != nil {
			return // refused before the session started: a clean failure
		}
		defer s.Close()
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		st, err := s.OpenTCP(pctx, wire.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80})
		pcancel()
		if err == nil {
			st.SetReadDeadline(time.Now().Add(time.Second))
			io.Copy(io.Discard, st)
			st.Close()
		}
		pctx, pcancel = context.WithTimeout(ctx, time.Second)
		s.Ping(pctx) // answered or not: it must return
		pcancel()
		done := make(chan struct{})
		go func() { s.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not return")
		}
	})
}
