package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/transport/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness is a Server behind httptest and a way to dial it.
type harness struct {
	t   testing.TB
	srv *Server
	hs  *httptest.Server
	url string
}

func newHarness(t testing.TB, configure func(*Server)) *harness {
	t.Helper()
	srv := &Server{
		Policy: &Policy{AllowLoopback: true},
		Logger: zaptest.NewLogger(t),
	}
	if configure != nil {
		configure(srv)
	}
	hs := httptest.NewServer(srv)
	h := &harness{t: t, srv: srv, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/tether"}
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	return h
}

func (h *harness) dial(opts *DialOptions) *Session {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Dial(ctx, h.url, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { s.Close() })
	return s
}

// listen starts a TCP server on loopback that runs handle for each connection.
func listen(t testing.TB, handle func(net.Conn)) wire.Addr {
	return wire.AddrFromAddrPort(testnet.ServeTCP(t, handle))
}

// openDownload opens a stream on s to a loopback destination that sends n zero
// bytes and closes; the stream is closed at the test's end.
func openDownload(t testing.TB, s *Session, n int) *Stream {
	t.Helper()
	dst := listen(t, func(c net.Conn) {
		defer c.Close()
		c.Write(make([]byte, n))
	})
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func echo(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// listenUDP returns a UDP socket on 127.0.0.1, closed at the test's end. With a
// non-empty prefix it answers every datagram with prefix + the datagram, from a
// goroutine the cleanup waits for.
func listenUDP(t testing.TB, prefix string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	if prefix != "" {
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
			}
		})
	}
	return pc
}

// openUDP opens an association of s to pc's address.
func openUDP(t testing.TB, s *Session, pc net.PacketConn) *Association {
	t.Helper()
	a, err := s.OpenUDP(ctxT(t), wire.AddrFromAddrPort(pc.LocalAddr().(*net.UDPAddr).AddrPort()))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTCPEcho(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	dst := listen(t, echo)
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if got := st.LocalAddr().String(); got != dst.String() {
		t.Errorf("LocalAddr %s, want %s", got, dst)
	}
	if s.Stats().StreamsOpen != 1 {
		t.Errorf("StreamsOpen = %d", s.Stats().StreamsOpen)
	}
}

// TestLargeTransferBothWays sends 64 MiB each way at once through one stream and
// checks both with sha256: everything arrives, in order, and EOF follows FIN.
func TestLargeTransferBothWays(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	const size = 64 << 20
	down := make([]byte, size)
	rand.Read(down)
	wantDown := sha256.Sum256(down)
	upSum := make(chan [32]byte, 1)
	dst := listen(t, func(c net.Conn) {
		defer c.Close()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			hh := sha256.New()
			io.Copy(hh, c)
			upSum <- [32]byte(hh.Sum(nil))
		}()
		c.Write(down)
		c.(*net.TCPConn).CloseWrite()
		wg.Wait()
	})
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	up := make([]byte, size)
	rand.Read(up)
	go func() {
		st.Write(up)
		st.CloseWrite()
	}()
	hh := sha256.New()
	n, err := io.Copy(hh, st)
	if err != nil || n != size {
		t.Fatalf("downloaded %d bytes, err %v", n, err)
	}
	if [32]byte(hh.Sum(nil)) != wantDown {
		t.Fatal("download corrupted")
	}
	if got := <-upSum; got != sha256.Sum256(up) {
		t.Fatal("upload corrupted")
	}
}

// TestHalfClose: the client finishes sending and still reads the reply; then the
// other way round: the server finishes first and still reads what the client sends.
func TestHalfClose(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	t.Run("client-first", func(t *testing.T) {
		dst := listen(t, func(c net.Conn) {
			defer c.Close()
			req, _ := io.ReadAll(c) // until the client's FIN
			c.Write(append([]byte("got "), req...))
		})
		st, err := s.OpenTCP(ctxT(t), dst)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.Write([]byte("request"))
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("x")); err == nil {
			t.Error("Write after CloseWrite succeeded")
		}
		reply, err := io.ReadAll(st)
		if err != nil || string(reply) != "got request" {
			t.Fatalf("reply %q, %v", reply, err)
		}
	})
	t.Run("server-first", func(t *testing.T) {
		got := make(chan string, 1)
		dst := listen(t, func(c net.Conn) {
			defer c.Close()
			c.Write([]byte("banner"))
			c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			got <- string(b)
		})
		st, err := s.OpenTCP(ctxT(t), dst)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		banner, err := io.ReadAll(st)
		if err != nil || string(banner) != "banner" {
			t.Fatalf("banner %q, %v", banner, err)
		}
		st.Write([]byte("after EOF"))
		st.CloseWrite()
		if g := <-got; g != "after EOF" {
			t.Fatalf("server read %q", g)
		}
	})
}

// TestResetIsNotEOF: a destination that aborts (RST) mid-transfer must surface as an
// error on the client, after the bytes that did arrive — never as a clean EOF.
func TestResetIsNotEOF(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	dst := listen(t, func(c net.Conn) {
		c.Write([]byte("partial"))
		time.Sleep(50 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST
	})
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b, err := io.ReadAll(st)
	if string(b) != "partial" {
		t.Errorf("read %q before the reset", b)
	}
	var se *StreamError
	if !errors.As(err, &se) || se.Code != wire.CodeConnReset || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v, want a CONN_RESET StreamError", err)
	}
}

// TestClientResetReachesDestination: Reset on the client aborts the destination's
// connection (it reads ECONNRESET, not EOF).
func TestClientResetReachesDestination(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	res := make(chan error, 1)
	dst := listen(t, func(c net.Conn) {
		defer c.Close()
		_, err := io.ReadAll(c)
		res <- err
	})
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("some"))
	st.Reset(wire.CodeCanceled, "test abort")
	if err := <-res; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("destination read %v, want ECONNRESET", err)
	}
	if _, err := st.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("read after Reset = %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	h := newHarness(t, func(s *Server) {
		s.Policy = &Policy{AllowLoopback: true, Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, DenyPorts: []PortRange{{25, 25}}}
		s.LookupNetIP = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			switch host {
			case "meta.example":
				return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
			case "loop.example":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
	})
	s := h.dial(nil)
	// A port nobody listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := wire.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	ln.Close()
	live := listen(t, echo)
	cases := []struct {
		name  string
		dst   wire.Addr
		code  wire.Code
		errno error
	}{
		{"refused", closed, wire.CodeRefused, syscall.ECONNREFUSED},
		{"denied CIDR", wire.Addr{IP: netip.MustParseAddr("127.0.0.2"), Port: live.Port}, wire.CodeDenied, syscall.EACCES},
		{"denied port", wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 25}, wire.CodeDenied, syscall.EACCES},
		{"metadata by name", wire.Addr{Name: "meta.example", Port: 80}, wire.CodeDenied, syscall.EACCES},
		{"multicast", wire.Addr{IP: netip.MustParseAddr("224.0.0.1"), Port: 80}, wire.CodeDenied, syscall.EACCES},
		{"not found", wire.Addr{Name: "nx.example", Port: 80}, wire.CodeHostNotFound, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := s.OpenTCP(ctxT(t), c.dst)
			var se *StreamError
			if !errors.As(err, &se) || se.Code != c.code || !se.Open {
				t.Fatalf("err = %v, want code %v", err, c.code)
			}
			if c.errno != nil && !errors.Is(err, c.errno) {
				t.Errorf("errors.Is(%v, %v) = false", err, c.errno)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusal took %v", d)
			}
		})
	}
	// A name that resolves to an allowed address works.
	st, err := s.OpenTCP(ctxT(t), wire.Addr{Name: "loop.example", Port: live.Port})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if n := s.Stats().StreamsOpen; n != 0 {
		t.Errorf("%d streams left in the table after refusals", n)
	}
}

// TestDefaultPolicyRefusesLoopback: without AllowLoopback the peer never dials its own
// loopback, by IP or by name.
func TestDefaultPolicyRefusesLoopback(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.Policy = nil })
	s := h.dial(nil)
	live := listen(t, echo)
	for _, dst := range []wire.Addr{live, {Name: "localhost", Port: live.Port}, {IP: netip.MustParseAddr("::ffff:127.0.0.1"), Port: live.Port}} {
		_, err := s.OpenTCP(ctxT(t), dst)
		var se *StreamError
		if !errors.As(err, &se) || se.Code != wire.CodeDenied {
			t.Errorf("%v: err = %v, want denied", dst, err)
		}
	}
}

// TestSlowReaderDoesNotStallOthers: one stream whose reader never reads holds at most
// its window, and a second stream still moves 32 MiB.
func TestSlowReaderDoesNotStallOthers(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(&DialOptions{Config: &Config{InitialWindow: 64 << 10, MaxWindow: 64 << 10, SessionWindow: 64 << 10}})
	blast := listen(t, func(c net.Conn) {
		defer c.Close()
		chunk := make([]byte, 32<<10)
		for i := 0; i < 32<<20/len(chunk); i++ {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	stalled, err := s.OpenTCP(ctxT(t), blast)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	busy, err := s.OpenTCP(ctxT(t), blast)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	n, err := io.Copy(io.Discard, busy)
	if err != nil || n != 32<<20 {
		t.Fatalf("busy stream moved %d bytes, %v", n, err)
	}
	stalled.mu.Lock()
	buffered := stalled.buffered
	stalled.mu.Unlock()
	if buffered > 64<<10 {
		t.Fatalf("stalled stream buffers %d bytes, more than its 64 KiB window", buffered)
	}
	if buffered == 0 {
		t.Fatal("stalled stream received nothing; the test does not test anything")
	}
}

// TestWindowGrows: with a large MaxWindow, a bulk transfer grows its window.
func TestWindowGrows(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(&DialOptions{Config: &Config{InitialWindow: 16 << 10, MaxWindow: 4 << 20}})
	st := openDownload(t, s, 16<<20)
	buf := make([]byte, 256<<10)
	total := 0
	var win int
	for total < 16<<20 {
		n, err := st.Read(buf)
		total += n
		if err != nil {
			break
		}
		st.mu.Lock()
		win = st.recvWindow
		st.mu.Unlock()
	}
	if win <= 16<<10 {
		t.Fatalf("window stayed at %d", win)
	}
}

func TestDeadlines(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	st, err := s.OpenTCP(ctxT(t), listen(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = st.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read err = %v, want a timeout", err)
	}
	st.SetReadDeadline(time.Time{})
	st.Write([]byte("x"))
	if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
		t.Fatalf("read after clearing the deadline: %v", err)
	}
}

func TestAuth(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.Token = "s3cret-token" })
	for _, tok := range []string{"", "wrong"} {
		_, err := Dial(ctxT(t), h.url, &DialOptions{Token: tok})
		if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("token %q: err = %v", tok, err)
		}
	}
	s := h.dial(&DialOptions{Token: "s3cret-token"})
	if _, err := s.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// The token may also come in the URI.
	s2, err := Dial(ctxT(t), h.url+"?token=s3cret-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestStreamLimit(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.Config = &Config{MaxStreams: 2} })
	s := h.dial(nil)
	dst := listen(t, echo)
	var open []*Stream
	for i := 0; i < 2; i++ {
		st, err := s.OpenTCP(ctxT(t), dst)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	_, err := s.OpenTCP(ctxT(t), dst)
	var se *StreamError
	if !errors.As(err, &se) || se.Code != wire.CodeLimit {
		t.Fatalf("third stream: %v, want LIMIT", err)
	}
	for _, st := range open {
		st.Close()
	}
}

// TestGoAway: Shutdown refuses new streams but lets the open one finish.
func TestGoAway(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	release := make(chan struct{})
	dst := listen(t, func(c net.Conn) {
		defer c.Close()
		<-release
		c.Write([]byte("last words"))
	})
	// Registered after listen, so it runs before the listener's cleanup waits for
	// the handlers: a failure below must not leave them blocked.
	releaseAll := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseAll)
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctxT(t)) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		late, err := s.OpenTCP(ctxT(t), dst)
		if errors.Is(err, ErrGoingAway) {
			break
		}
		if err == nil {
			// Opened before the GOAWAY went out (the Shutdown goroutine may not
			// have run yet): legitimate, and the shutdown waits for it too.
			late.Close()
		} else {
			t.Fatalf("open during shutdown: %v, want ErrGoingAway", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("opens still accepted 5 s after Shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	releaseAll()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(st)
	if err != nil || string(b) != "last words" {
		t.Fatalf("open stream during shutdown: %q, %v", b, err)
	}
	st.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client session did not end after the server went away")
	}
	if err := s.Err(); err != nil {
		t.Errorf("graceful shutdown ended the client with %v", err)
	}
}

func TestPing(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	rtt, err := s.Ping(ctxT(t))
	if err != nil || rtt <= 0 || rtt > time.Second {
		t.Fatalf("rtt %v, %v", rtt, err)
	}
	if s.RTT() <= 0 {
		t.Error("RTT not recorded")
	}
}

// TestCloseFailsStreams: when the session ends, blocked reads and writes end with an
// error, never EOF.
func TestCloseFailsStreams(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	st, err := s.OpenTCP(ctxT(t), listen(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 10))
		res <- err
	}()
	time.Sleep(20 * time.Millisecond)
	h.srv.Close()
	select {
	case err := <-res:
		if err == nil || err == io.EOF {
			t.Fatalf("read after session death: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked after the session ended")
	}
	<-s.Done()
	if s.Err() == nil {
		t.Error("session ended by server Close reports no error")
	}
	if _, err := s.OpenTCP(ctxT(t), listen(t, echo)); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("open on dead session: %v", err)
	}
}

// TestPinnedTLS runs a session over TLS with a pinned self-signed certificate, and
// checks that a wrong pin fails clearly.
func TestPinnedTLS(t *testing.T) {
	cert, err := LoadOrCreateCertificate(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Policy: &Policy{AllowLoopback: true}, Token: "tok"}
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = ServerTLSConfig(cert)
	hs.StartTLS()
	defer func() { srv.Close(); hs.Close() }()
	host := strings.TrimPrefix(hs.URL, "https://")
	uri := FormatPeerURI(host, "/tether", "tok", SPKIPin(cert.Leaf))
	s, err := Dial(ctxT(t), uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.OpenTCP(ctxT(t), listen(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("tls"), 100000)
	go st.Write(data)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo over TLS: %v", err)
	}
	st.Close()
	other, err := LoadOrCreateCertificate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctxT(t), FormatPeerURI(host, "/tether", "tok", SPKIPin(other.Leaf)), nil)
	if err == nil || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("wrong pin: %v", err)
	}
}

// TestPeerResolver: the well-known resolver name reaches the peer's own DNS servers,
// over UDP and TCP, even where the policy would refuse their addresses (loopback here).
func TestPeerResolver(t *testing.T) {
	pc := listenUDP(t, "answer:")
	udpAddr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	tcpDst := listen(t, echo)
	h := newHarness(t, func(s *Server) {
		s.Policy = nil // loopback denied for ordinary destinations
		s.DNSServers = []netip.AddrPort{udpAddr}
	})
	s := h.dial(nil)
	resolver := wire.Addr{Name: wire.ResolverName, Port: 53}
	a, err := s.OpenUDP(ctxT(t), resolver)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.WriteToAddr([]byte("query"), resolver); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := a.ReadFromAddr(buf)
	if err != nil || string(buf[:n]) != "answer:query" || from != resolver {
		t.Fatalf("got %q from %v, %v", buf[:n], from, err)
	}
	// TCP to the resolver: point the server at the TCP echo's address.
	h.srv.DNSServers = []netip.AddrPort{tcpDst.AddrPort()}
	st, err := s.OpenTCP(ctxT(t), resolver)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("tcpq"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "tcpq" {
		t.Fatalf("tcp resolver: %q %v", got, err)
	}
	st.Close()
	if got := parseResolvConf([]byte("# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\n")); len(got) != 2 || got[0].String() != "192.0.2.53:53" || got[1].String() != "[fe80::1]:53" {
		t.Errorf("parseResolvConf: %v", got)
	}
}
