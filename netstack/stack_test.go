package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"golang.zx2c4.com/wireguard/tun"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
	wgtuntest "golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/internal/tuntest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests put an "application" on the other side of the TUN: a second gVisor stack
// (wireguard-go's tun/netstack) whose packets are pumped into the Stack under test,
// as the kernel would after routing them into a TUN device.

var (
	appV4 = netip.MustParseAddr("10.7.0.2")
	appV6 = netip.MustParseAddr("fd7e::2")
)

// fakeHandler dials real loopback sockets on behalf of the stack.
type fakeHandler struct {
	tcpTarget func(dst netip.AddrPort) (string, error) // where to really connect
	udpTarget string                                   // where datagrams really go
	replyFrom netip.AddrPort                           // if valid, replies claim to come from here
	mu        sync.Mutex
	tcpDials  []netip.AddrPort
}

func (h *fakeHandler) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	h.mu.Lock()
	h.tcpDials = append(h.tcpDials, dst)
	h.mu.Unlock()
	addr, err := h.tcpTarget(dst)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (h *fakeHandler) DialUDP(ctx context.Context, src, dst netip.AddrPort) (PacketConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	return &udpPC{c: c, target: netip.MustParseAddrPort(h.udpTarget), replyFrom: h.replyFrom}, nil
}

type udpPC struct {
	c         *net.UDPConn
	target    netip.AddrPort
	replyFrom netip.AddrPort
	mu        sync.Mutex
	lastDst   netip.AddrPort
}

func (p *udpPC) WriteTo(b []byte, dst netip.AddrPort) error {
	p.mu.Lock()
	p.lastDst = dst
	p.mu.Unlock()
	_, err := p.c.WriteToUDPAddrPort(b, p.target)
	return err
}

func (p *udpPC) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, _, err := p.c.ReadFromUDPAddrPort(b)
	if p.replyFrom.IsValid() {
		return n, p.replyFrom, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return n, p.lastDst, err
}

func (p *udpPC) Close() error { return p.c.Close() }

// rig is a Stack with an application stack wired to its device.
type rig struct {
	st  *Stack
	app *wgnetstack.Net
}

func newRig(t *testing.T, h Handler) *rig {
	t.Helper()
	dev, appNet := tuntest.Pair(t, appV4, appV6)
	st, err := New(dev, h, Options{Logger: zaptest.NewLogger(t), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &rig{st: st, app: appNet}
}

func listenTCP(t *testing.T, handle func(net.Conn)) string {
	return testnet.ServeTCP(t, handle).String()
}

func to(addr string) func(netip.AddrPort) (string, error) {
	return func(netip.AddrPort) (string, error) { return addr, nil }
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestTCPBothFamilies: an application connects to an arbitrary IPv4 and IPv6 address;
// the handler is asked for exactly that destination, and bytes flow both ways.
func TestTCPBothFamilies(t *testing.T) {
	echo := listenTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
	h := &fakeHandler{tcpTarget: to(echo)}
	r := newRig(t, h)
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443"), netip.MustParseAddrPort("[2001:db8::7]:80")} {
		c, err := r.app.DialContextTCPAddrPort(ctx5(t), dst)
		if err != nil {
			t.Fatalf("%v: %v", dst, err)
		}
		msg := []byte("hello " + dst.String())
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%v: echo %q, %v", dst, got, err)
		}
		c.Close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.tcpDials) != 2 || h.tcpDials[0].String() != "198.51.100.7:443" || h.tcpDials[1].String() != "[2001:db8::7]:80" {
		t.Fatalf("handler dialed %v", h.tcpDials)
	}
}

// TestTCPRefusedFast: when the handler's dial fails, the application's connect fails at
// once with "connection refused" — the handshake never completed.
func TestTCPRefusedFast(t *testing.T) {
	h := &fakeHandler{tcpTarget: func(netip.AddrPort) (string, error) { return "", syscall.ECONNREFUSED }}
	r := newRig(t, h)
	start := time.Now()
	_, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("198.51.100.7:9"))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want connection refused", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}
	if r.st.Stats().TCPRefused != 1 {
		t.Errorf("TCPRefused = %d", r.st.Stats().TCPRefused)
	}
}

// TestTCPLargeAndHalfClose: 8 MiB up, the application half-closes, 8 MiB back — both
// checked by sha256.
func TestTCPLargeAndHalfClose(t *testing.T) {
	const size = 8 << 20
	reply := make([]byte, size)
	rand.Read(reply)
	gotUp := make(chan [32]byte, 1)
	srv := listenTCP(t, func(c net.Conn) {
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c) // until the application's FIN
		gotUp <- [32]byte(h.Sum(nil))
		c.Write(reply)
	})
	r := newRig(t, &fakeHandler{tcpTarget: to(srv)})
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("203.0.113.5:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchangeHalfClose(t, c, size, reply, gotUp)
}

// exchangeHalfClose sends size random bytes on c and half-closes it; the destination
// reports the sha256 of what it received on gotUp, then sends reply and closes, which
// must arrive whole.
func exchangeHalfClose(t testing.TB, c interface {
	io.ReadWriter
	CloseWrite() error
}, size int, reply []byte, gotUp <-chan [32]byte) {
	t.Helper()
	up := make([]byte, size)
	rand.Read(up)
	if _, err := c.Write(up); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if <-gotUp != sha256.Sum256(up) {
		t.Fatal("upload corrupted")
	}
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != int64(len(reply)) || [32]byte(h.Sum(nil)) != sha256.Sum256(reply) {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
}

// TestTCPResetPropagates: the destination aborts; the application sees a reset, not EOF.
func TestTCPResetPropagates(t *testing.T) {
	srv := listenTCP(t, func(c net.Conn) {
		c.Write([]byte("x"))
		time.Sleep(20 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	r := newRig(t, &fakeHandler{tcpTarget: to(srv)})
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("203.0.113.5:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	if err == nil {
		t.Fatal("reset delivered as a clean EOF")
	}
}

// TestUDPEndpointIndependent: one association per source endpoint; a reply from a
// remote the application never sent to still reaches it, with that remote as source.
func TestUDPEndpointIndependent(t *testing.T) {
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	stranger := netip.MustParseAddrPort("192.0.2.99:3478")
	r := newRig(t, &fakeHandler{udpTarget: echo.LocalAddr().String(), replyFrom: stranger})
	c, err := r.app.ListenUDPAddrPort(netip.AddrPortFrom(appV4, 40000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, dst := range []string{"198.51.100.1:53", "198.51.100.2:5000"} {
		if _, err := c.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst))); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := c.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "q" || from.String() != stranger.String() {
			t.Fatalf("reply %d: %q from %v, %v", i, buf[:n], from, err)
		}
	}
	if st := r.st.Stats(); st.UDPTotal != 1 || st.UDPActive != 1 {
		t.Fatalf("two destinations from one source made %d associations (%d active)", st.UDPTotal, st.UDPActive)
	}
}

// TestUDPLargeDatagram: a reply larger than the MTU is fragmented by the stack and
// reassembled by the application.
func TestUDPLargeDatagram(t *testing.T) {
	echo := testnet.ServeUDPEcho(t)
	r := newRig(t, &fakeHandler{udpTarget: echo.String()})
	c, err := r.app.DialUDPAddrPort(netip.AddrPortFrom(appV4, 40001), netip.MustParseAddrPort("198.51.100.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("0123456789"), 400) // 4000 bytes > 1420
	c.Write(big)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8192)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], big) {
		t.Fatalf("got %d bytes, %v", n, err)
	}
}

// pingHandler is a fakeHandler that also carries pings: reply answers, or not.
type pingHandler struct {
	fakeHandler
	reply bool
}

func (h *pingHandler) DialPing(ctx context.Context, src, dst netip.Addr) (PacketConn, error) {
	return &echoPC{reply: h.reply, q: make(chan []byte, 16), closed: make(chan struct{})}, nil
}

// echoPC answers every echo body it is given, as a peer with a working ping would.
type echoPC struct {
	reply  bool
	q      chan []byte
	last   netip.AddrPort
	mu     sync.Mutex
	closed chan struct{}
	once   sync.Once
}

func (p *echoPC) WriteTo(b []byte, dst netip.AddrPort) error {
	p.mu.Lock()
	p.last = dst
	p.mu.Unlock()
	if p.reply {
		p.q <- append([]byte(nil), b...)
	}
	return nil
}

func (p *echoPC) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case m := <-p.q:
		p.mu.Lock()
		defer p.mu.Unlock()
		return copy(b, m), p.last, nil
	case <-p.closed:
		return 0, netip.AddrPort{}, os.ErrClosed
	}
}

func (p *echoPC) Close() error { p.once.Do(func() { close(p.closed) }); return nil }

// TestPingForwarded: echo requests go to the handler and its replies come back to the
// application, for IPv4 and IPv6.
func TestPingForwarded(t *testing.T) {
	r := newRig(t, &pingHandler{reply: true})
	for _, pair := range [][2]netip.Addr{{appV4, netip.MustParseAddr("198.51.100.1")}, {appV6, netip.MustParseAddr("2001:db8::1")}} {
		pc, err := r.app.DialPingAddr(pair[0], pair[1])
		if err != nil {
			t.Fatal(err)
		}
		req := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'h', 'i'} // ICMPv4 echo; tun/netstack fixes type and checksum
		if pair[1].Is6() {
			req[0] = 128
		}
		// wireguard-go's PingConn.Read waits for a readiness event without first
		// checking for data already queued, so a reply faster than the call to
		// Read would be missed: read first, then send.
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		type result struct {
			n   int
			err error
		}
		got := make(chan result, 1)
		go func() {
			n, err := pc.Read(buf)
			got <- result{n, err}
		}()
		time.Sleep(50 * time.Millisecond)
		if _, err := pc.Write(req); err != nil {
			t.Fatal(err)
		}
		res := <-got
		n, err := res.n, res.err
		if err != nil || n < 10 || string(buf[8:n]) != "hi" {
			t.Fatalf("%v: reply %x, %v (stats %+v)", pair[1], buf[:n], err, r.st.Stats())
		}
		pc.Close()
	}
}

// TestPingNotAnsweredWithoutReply: a peer that does not answer means no reply — the
// stack never makes one up.
func TestPingNotAnsweredWithoutReply(t *testing.T) {
	r := newRig(t, &pingHandler{reply: false})
	pc, err := r.app.DialPingAddr(appV4, netip.MustParseAddr("198.51.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.Write([]byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'h', 'i'})
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := pc.Read(make([]byte, 100)); err == nil {
		t.Fatalf("got a reply of %d bytes that nobody sent", n)
	}
	if r.st.Stats().EchoRequests != 1 {
		t.Fatalf("EchoRequests = %d", r.st.Stats().EchoRequests)
	}
}

// TestEchoNotInvented: gVisor would answer any ping itself; the stack must not.
func TestEchoNotInvented(t *testing.T) {
	r := newRig(t, &fakeHandler{tcpTarget: to("127.0.0.1:1")})
	pkt := wgtuntest.Ping(netip.MustParseAddr("198.51.100.1"), appV4)
	r.st.link.deliver(pkt) // as the kernel would deliver it
	if st := r.st.Stats(); st.EchoUnanswered != 1 {
		t.Fatalf("EchoUnanswered = %d", st.EchoUnanswered)
	}
}

// TestCloseEndsFlows: Close with flows open returns, and no goroutine is left
// (goleak checks after every test).
func TestCloseEndsFlows(t *testing.T) {
	srv := listenTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(io.Discard, c) })
	r := newRig(t, &fakeHandler{tcpTarget: to(srv)})
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("203.0.113.5:80"))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.st.Stats().TCPActive != 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.st.Stats().TCPActive; got != 5 {
		t.Fatalf("TCPActive = %d", got)
	}
	done := make(chan struct{})
	go func() { r.st.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with open flows")
	}
	for _, c := range conns {
		c.Close()
	}
}

func TestNewRejectsNil(t *testing.T) {
	if _, err := New(nil, &fakeHandler{}, Options{}); err == nil {
		t.Error("nil device accepted")
	}
	var dev tun.Device = wgtuntest.NewChannelTUN().TUN()
	if _, err := New(dev, nil, Options{}); err == nil {
		t.Error("nil handler accepted")
	}
	dev.Close()
	_ = errors.New
}

// TestTCPUnreachable: when the handler says the host or network is unreachable, the
// application's connect fails with that error (an ICMP unreachable quoting its SYN),
// at once, not with "connection refused" and not after a timeout.
func TestTCPUnreachable(t *testing.T) {
	for _, c := range []struct {
		err  error
		dst  string
		want string
	}{
		{syscall.EHOSTUNREACH, "198.51.100.9:80", "no route to host"},
		{syscall.ENETUNREACH, "[2001:db8::9]:80", "unreachable"},
	} {
		r := newRig(t, &fakeHandler{tcpTarget: func(netip.AddrPort) (string, error) { return "", c.err }})
		start := time.Now()
		_, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort(c.dst))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.dst, err, c.want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %v", c.dst, d)
		}
	}
}

// TestUDPTableEvictsOldest: a full association table makes room by ending the
// association idle the longest.
func TestUDPTableEvictsOldest(t *testing.T) {
	echo, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer echo.Close()
	dev, app := tuntest.Pair(t, appV4)
	st, err := New(dev, &fakeHandler{udpTarget: echo.LocalAddr().String()}, Options{MaxUDP: 2, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dst := netip.MustParseAddrPort("198.51.100.1:9")
	for port := uint16(41000); port < 41003; port++ {
		c, err := app.DialUDPAddrPort(netip.AddrPortFrom(appV4, port), dst)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for st.Stats().UDPTotal < uint64(port-40999) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond) // distinct lastUsed times
	}
	st.udp.mu.Lock()
	_, first := st.udp.m[netip.AddrPortFrom(appV4, 41000)]
	n := len(st.udp.m)
	st.udp.mu.Unlock()
	if n != 2 || first {
		t.Fatalf("table holds %d associations, oldest still there: %v", n, first)
	}
}

// TestTimeWaitShort: when the destination closes first, gVisor's endpoint ends in
// TIME_WAIT once the application closes too. On the TUN, a lossless local link, a
// minute of TIME_WAIT (the default) only holds memory: a laptop whose servers close
// first would keep every connection of the last minute. It must be gone in seconds.
func TestTimeWaitShort(t *testing.T) {
	srv := listenTCP(t, func(c net.Conn) {
		c.Write([]byte("bye"))
		c.Close() // the destination closes first
	})
	r := newRig(t, &fakeHandler{tcpTarget: to(srv)})
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("203.0.113.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v", b, err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.st.ip.RegisteredEndpoints()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d endpoints still registered 5 s after both sides closed", len(r.st.ip.RegisteredEndpoints()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
