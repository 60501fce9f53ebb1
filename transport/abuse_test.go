package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/transport/wire"
)

// The abuse suite: every case is a hostile client against a real Server on loopback.
// Each asserts the exact refusal the client gets, that an honest session on the same
// server keeps moving data while the attack runs (transfers complete, every byte
// checked), and that the server's memory and tables stay bounded while the attacker
// holds what it could get. docs/reliability.md ("Abuse of serve") lists the cases.

const abuseToken = "honest-token-0123456789abcdefghijk"

// Limits of the server under attack: small, so that the suite reaches them quickly.
const (
	abuseBurst       = 3
	abuseSources     = 16
	abuseUnauth      = 16
	abuseUnauthPerIP = 4
	abuseSessions    = 8
	abuseMaxStreams  = 256
	abusePending     = 16
	abuseHdrTimeout  = time.Second
	abuseMaxHeader   = 4 << 10
	abuseRelayBufs   = 4 << 20 // 64 buffers of the 64 KiB class
)

// Destinations in TEST-NET-2 that the server's Dial maps to loopback servers, so the
// default policy (loopback refused) stays in force while honest traffic flows.
var (
	echoIP      = netip.MustParseAddr("198.51.100.7")
	firehoseIP  = netip.MustParseAddr("198.51.100.8")
	blackholeIP = netip.MustParseAddr("198.51.100.9")
)

type abuseHarness struct {
	t        *testing.T
	srv      *Server
	hs       *httptest.Server
	url      string // ws://…/tether
	httpURL  string
	logs     *observer.ObservedLogs
	echo     wire.Addr
	firehose wire.Addr
	honest   *Session
	nextSrc  atomic.Uint32
}

func newAbuseHarness(t *testing.T) *abuseHarness {
	t.Helper()
	a := &abuseHarness{t: t}
	echoAP := testnet.ServeTCP(t, echo)
	stop := make(chan struct{})
	fireAP := testnet.ServeTCP(t, func(c net.Conn) { // writes until the other side goes
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Write(buf); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					return
				}
			}
		}
	})
	t.Cleanup(func() { close(stop) }) // runs before the listeners' cleanups
	a.echo = wire.Addr{IP: echoIP, Port: echoAP.Port()}
	a.firehose = wire.Addr{IP: firehoseIP, Port: fireAP.Port()}
	names := map[string][]netip.Addr{
		"metadata.google.internal": {netip.MustParseAddr("169.254.169.254")},
		"localhost.example":        {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"lan.example":              {netip.MustParseAddr("192.168.1.20")},
		"rebind.example":           {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("10.0.0.1")},
		"nat64.example":            {netip.MustParseAddr("64:ff9b::a9fe:a9fe")},
		"mixed.example":            {netip.MustParseAddr("127.0.0.1"), echoIP},
	}
	core, logs := observer.New(zapcore.InfoLevel)
	a.logs = logs
	a.srv = &Server{
		Token:  abuseToken,
		Policy: &Policy{Deny: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.0/8")}},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap := netip.MustParseAddrPort(addr)
			switch ap.Addr() {
			case echoIP, firehoseIP:
				var d net.Dialer
				return d.DialContext(ctx, network, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String())
			case blackholeIP:
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("test dialer: %s must not be dialed", addr) // the policy let it through
		},
		LookupNetIP: func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			if ips, ok := names[host]; ok {
				return ips, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
		ListenPacket: func(ctx context.Context, network, _ string) (net.PacketConn, error) {
			var lc net.ListenConfig // loopback only: no datagram of this suite leaves the machine
			return lc.ListenPacket(ctx, "udp4", "127.0.0.1:0")
		},
		Config:                      &Config{MaxStreams: abuseMaxStreams, MaxPendingOpens: abusePending, KeepAlive: 500 * time.Millisecond, KeepAliveTimeout: 5 * time.Second},
		Logger:                      zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Core())),
		AuthFailureBurst:            abuseBurst,
		AuthFailureInterval:         time.Hour, // no refill during a test
		AuthSources:                 abuseSources,
		MaxUnauthenticatedConns:     abuseUnauth,
		MaxUnauthenticatedPerSource: abuseUnauthPerIP,
		MaxSessions:                 abuseSessions,
		RelayBuffers:                abuseRelayBufs,
	}
	a.hs = httptest.NewUnstartedServer(a.srv)
	a.hs.Config.ConnState = a.srv.ConnState
	a.hs.Config.ReadHeaderTimeout = abuseHdrTimeout
	a.hs.Config.MaxHeaderBytes = abuseMaxHeader
	a.hs.Config.ErrorLog = zap.NewStdLog(zap.NewNop())
	a.hs.Start()
	a.httpURL = a.hs.URL + "/tether"
	a.url = "ws" + strings.TrimPrefix(a.httpURL, "http")
	t.Cleanup(func() {
		a.srv.Close()
		a.hs.Close()
	})
	s, err := Dial(ctxT(t), a.url, &DialOptions{Token: abuseToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a.honest = s
	return a
}

// source returns a fresh loopback address to attack from (the honest client uses
// 127.0.0.1), so every case and every "address" of a case is its own source.
func (a *abuseHarness) source() string {
	n := a.nextSrc.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 10+n/250, 1+n%250)
}

func dialerFrom(src string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
}

// get sends one request from src and returns the status, headers and body.
func (a *abuseHarness) request(t *testing.T, src string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialerFrom(src).DialContext, DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", a.httpURL, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("request from %s: %v", src, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, resp.Header, string(b)
}

// upgradeHeaders is a valid WebSocket upgrade offering tether.v1.
func upgradeHeaders(extra map[string]string) map[string]string {
	h := map[string]string{
		"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": wire.Subprotocol,
	}
	for k, v := range extra {
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return h
}

// rawSession opens an authenticated session from src that speaks tether.v1 by hand.
func (a *abuseHarness) rawSession(t *testing.T, src string) (*rawPeer, *http.Response, error) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: dialerFrom(src).DialContext}}
	c, resp, err := websocket.Dial(ctxT(t), a.url, &websocket.DialOptions{
		HTTPClient:   client,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + abuseToken}},
		Subprotocols: []string{wire.Subprotocol},
	})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(wire.MaxMessage * 2)
	t.Cleanup(func() { c.CloseNow() })
	return &rawPeer{t: t, conn: c}, resp, nil
}

func (a *abuseHarness) mustRawSession(t *testing.T, src string) *rawPeer {
	t.Helper()
	p, _, err := a.rawSession(t, src)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedAtOnce reports whether the server closed c without waiting for anything: a
// read ends with EOF or a reset well before the 5 s read deadline.
func closedAtOnce(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	switch {
	case n > 0:
		return fmt.Errorf("server sent data")
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return fmt.Errorf("connection still open: %v", err)
}

// honestLoad runs echo transfers through the honest session until stopped.
type honestLoad struct {
	stop      chan struct{}
	done      chan struct{}
	transfers atomic.Int64
	bytes     atomic.Int64
	err       error
}

func (a *abuseHarness) startHonest() *honestLoad {
	l := &honestLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			if err := a.transfer(256 << 10); err != nil {
				l.err = err
				return
			}
			l.transfers.Add(1)
			l.bytes.Add(256 << 10)
		}
	}()
	return l
}

// finish stops the load after its current transfer, checks that it moved data
// without error, then checks that one more transfer of 1 MiB completes.
func (l *honestLoad) finish(t *testing.T, a *abuseHarness) {
	t.Helper()
	close(l.stop)
	select {
	case <-l.done:
	case <-time.After(60 * time.Second):
		t.Fatal("honest transfer did not finish within 60 s")
	}
	if l.err != nil {
		t.Fatalf("honest session broke during the attack: %v", l.err)
	}
	if l.transfers.Load() < 1 {
		t.Fatal("honest session completed no transfer during the attack")
	}
	if err := a.transfer(1 << 20); err != nil {
		t.Fatalf("honest session after the attack: %v", err)
	}
}

// transfer echoes n random bytes through the honest session and checks every byte.
func (a *abuseHarness) transfer(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.honest.OpenTCP(ctx, a.echo)
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(30 * time.Second))
	out := make([]byte, n)
	rand.Read(out)
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(out)
		if err == nil {
			err = st.CloseWrite()
		}
		werr <- err
	}()
	in, err := io.ReadAll(st)
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", len(in), err)
	}
	if !bytes.Equal(in, out) {
		return fmt.Errorf("echo corrupted: %d bytes back of %d", len(in), n)
	}
	return nil
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// peak is what a case holds at its worst: the heap and the server's tables.
type peak struct {
	heap                      uint64
	authSources, unauth, sess int
	relayBufs                 int // the most relay buffer bytes one session holds
}

func (a *abuseHarness) measure() peak {
	unauth, _, _ := a.srv.preAuth.counts()
	p := peak{heap: heapAlloc(), unauth: unauth, sess: a.srv.Sessions()}
	a.srv.mu.Lock()
	for _, held := range a.srv.sessions {
		p.relayBufs = max(p.relayBufs, *held)
	}
	a.srv.mu.Unlock()
	if a.srv.auth != nil {
		p.authSources = a.srv.auth.len()
	}
	return p
}

// abuseCase is one hostile client. attack asserts the refusal and calls hold once it
// holds the most it will (open connections, streams); memory is measured then.
type abuseCase struct {
	name   string
	attack func(t *testing.T, a *abuseHarness, hold func())
	// heap bounds the growth of the heap at the hold point; 0 means 32 MiB.
	heap uint64
}

// TestAbuse runs every case of abuseCases against a server of its own.
func TestAbuse(t *testing.T) {
	if testing.Short() {
		t.Skip("abuse suite skipped in -short mode")
	}
	for _, c := range abuseCases() {
		t.Run(c.name, func(t *testing.T) {
			a := newAbuseHarness(t)
			before := heapAlloc()
			load := a.startHonest()
			var at *peak
			hold := func() {
				if at == nil {
					p := a.measure()
					at = &p
				}
			}
			c.attack(t, a, hold)
			hold()
			bound := c.heap
			if bound == 0 {
				bound = 32 << 20
			}
			if at.heap > before && at.heap-before > bound {
				t.Errorf("heap grew by %d KiB under attack, bound %d KiB", (at.heap-before)>>10, bound>>10)
			}
			if at.authSources > abuseSources || at.unauth > abuseUnauth || at.sess > abuseSessions || at.relayBufs > abuseRelayBufs {
				t.Errorf("server tables beyond their bounds: %+v", *at)
			}
			load.finish(t, a)
			t.Logf("%s: heap %+d KiB at the hold point; honest: %d transfers (%d KiB) during the attack",
				c.name, (int64(at.heap)-int64(before))>>10, load.transfers.Load(), load.bytes.Load()>>10)
		})
	}
}

// expectStatus checks a refusal's status and that its body contains want.
func expectStatus(t *testing.T, status int, body string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus || !strings.Contains(body, want) {
		t.Fatalf("got %d %q, want %d with %q", status, body, wantStatus, want)
	}
}

// readFrames hands every frame the server sends to fn (every frame of a message,
// unlike rawPeer.next) until fn returns true.
func readFrames(t *testing.T, p *rawPeer, fn func(h wire.Header, b []byte) (done bool)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for done := false; !done; {
		_, msg, err := p.conn.Read(ctx)
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		err = wire.SplitMessage(msg, wire.MaxFrameLimit, func(h wire.Header, b []byte) error {
			done = done || fn(h, b)
			return nil
		})
		if err != nil {
			t.Fatalf("server sent a malformed message: %v", err)
		}
	}
}

// collect reads frames until it has n that satisfy want, and returns them.
func collect(t *testing.T, p *rawPeer, n int, want func(wire.Header) bool) ([]wire.Header, [][]byte) {
	t.Helper()
	var hs []wire.Header
	var ps [][]byte
	readFrames(t, p, func(h wire.Header, b []byte) bool {
		if len(hs) < n && want(h) {
			hs, ps = append(hs, h), append(ps, append([]byte(nil), b...))
		}
		return len(hs) == n
	})
	return hs, ps
}

func isReply(h wire.Header) bool { return h.Type == wire.TypeReply }

// serverSessions returns the server's sessions now.
func (a *abuseHarness) serverSessions() map[*session]bool {
	a.srv.mu.Lock()
	defer a.srv.mu.Unlock()
	m := map[*session]bool{}
	for s := range a.srv.sessions {
		m[s] = true
	}
	return m
}

// newServerSession waits for the server session that is not in before.
func (a *abuseHarness) newServerSession(t *testing.T, before map[*session]bool) *session {
	t.Helper()
	var found *session
	waitFor(t, "the server's new session", func() bool {
		for s := range a.serverSessions() {
			if !before[s] {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// keepTalking sends a PING every 200 ms until the test ends, so that a client that
// reads nothing is not ended by the keepalive.
func keepTalking(t *testing.T, p *rawPeer) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := p.conn.Write(ctx, websocket.MessageBinary, wire.AppendPing(nil, false, [8]byte{}))
				cancel()
				if err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// BenchmarkIdleRelayedFlows measures what idle TCP flows cost the peer: it opens
// 10,000 streams through a server whose destinations (in-process pipes, so no file
// descriptors are needed) never send, lets them sit idle, and reports the heap and
// goroutine stacks per flow. Client and server run in this process, so the figures
// include the client's side of each stream. Run with -benchtime=1x.
func BenchmarkIdleRelayedFlows(b *testing.B) {
	const flows = 10000
	for range b.N {
		pd := &pipeDests{}
		h := newHarness(b, func(s *Server) {
			s.Logger = zap.NewNop()
			s.Dial = pd.dial
		})
		s := h.dial(nil)
		dst := wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		streams := make([]*Stream, flows)
		var wg sync.WaitGroup
		var failed atomic.Int64
		sem := make(chan struct{}, 128)
		for i := range streams {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				st, err := s.OpenTCP(context.Background(), dst)
				if err != nil {
					failed.Add(1)
					return
				}
				streams[i] = st
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			b.Fatalf("%d opens failed", failed.Load())
		}
		time.Sleep(2 * time.Second) // idle: longer than any relay keeps a buffer
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/flows, "heap-B/flow")
		b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/flows, "stack-B/flow")
		for _, st := range streams {
			st.Close()
		}
		for _, d := range pd.all() {
			d.Close()
		}
		s.Close()
	}
}

// TestIdleFlowResumes: a flow whose relay gave its buffer back after relayIdle
// delivers the next byte at once (a lone keystroke is not held back waiting for
// more), then bulk data byte-exact, then EOF.
func TestIdleFlowResumes(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	bulk := make([]byte, 300<<10)
	rand.Read(bulk)
	dst := listen(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		ack := make([]byte, 1)
		for _, b := range []byte("ab") {
			time.Sleep(relayIdle + relayIdle/2) // idle: the relay returns its buffer
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			// Wait for the client to have received the byte: a relay that held it
			// back for more data would stall here until the deadline.
			if _, err := io.ReadFull(c, ack); err != nil || ack[0] != b {
				return
			}
		}
		c.Write(bulk)
	})
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, 1)
	for _, want := range []byte("ab") {
		if _, err := io.ReadFull(st, got); err != nil || got[0] != want {
			t.Fatalf("after an idle time: read %q, %v; want %q", got, err, want)
		}
		if _, err := st.Write(got); err != nil {
			t.Fatal(err)
		}
	}
	rest, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(rest, bulk) {
		t.Fatalf("bulk after idle: %d bytes of %d, %v", len(rest), len(bulk), err)
	}
}
