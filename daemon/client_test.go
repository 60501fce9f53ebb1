package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/internal/tuntest"
	"github.com/tetherd/tetherd/transport"
)

var (
	appV4 = netip.MustParseAddr("10.255.77.1")
	appV6 = netip.MustParseAddr("fd74:6574:6865:7264::1")
	dnsV4 = netip.MustParseAddr("10.255.77.2")
)

// peerRig is a transport.Server whose every TCP destination is one loopback echo
// server and whose resolver is a loopback UDP "DNS server" that answers "A:" + query.
type peerRig struct {
	srv *transport.Server
	url string
}

func newPeerRig(t *testing.T, token string) *peerRig {
	t.Helper()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	dns, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := dns.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			dns.WriteToUDPAddrPort(append([]byte("A:"), buf[:n]...), from)
		}
	}()
	srv := &transport.Server{
		Token:      token,
		Logger:     zaptest.NewLogger(t).Named("peer"),
		DNSServers: []netip.AddrPort{dns.LocalAddr().(*net.UDPAddr).AddrPort()},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.Addr().String())
		},
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		echo.Close()
		dns.Close()
	})
	return &peerRig{srv: srv, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/tether"}
}

// startClient runs a Client on a TUN wired to an application stack and returns the
// application's network once the tunnel is up.
func startClient(t *testing.T, p *peerRig, token string) (*Client, *wgnetstack.Net) {
	t.Helper()
	dev, app := tuntest.Pair(t, appV4, appV6)
	c := runClient(t, ClientOptions{
		TUN: dev,
		Dial: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, p.url, &transport.DialOptions{Token: token})
		},
		DNS:    []netip.Addr{dnsV4},
		Logger: zaptest.NewLogger(t),
	})
	return c, app
}

// runClient runs a client with opts until the test ends, once its tunnel is up.
func runClient(t *testing.T, opts ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func() { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run ended before the tunnel was up: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("tunnel not up")
	}
	return c
}

func TestClientCarriesTCP(t *testing.T) {
	p := newPeerRig(t, "tok")
	_, app := startClient(t, p, "tok")
	for _, dst := range []string{"198.51.100.7:80", "[2001:db8::7]:443"} {
		c, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort(dst))
		if err != nil {
			t.Fatalf("%s: %v", dst, err)
		}
		c.Write([]byte("through the tunnel"))
		buf := make([]byte, 18)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "through the tunnel" {
			t.Fatalf("%s: %q %v", dst, buf, err)
		}
		c.Close()
	}
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientDNS: a query to the tunnel's resolver address is answered by the peer's
// resolver, and the reply comes from the address the application asked.
func TestClientDNS(t *testing.T) {
	p := newPeerRig(t, "")
	_, app := startClient(t, p, "")
	c, err := app.DialUDPAddrPort(netip.AddrPortFrom(appV4, 5353), netip.AddrPortFrom(dnsV4, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("example.test?"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "A:example.test?" || from.String() != "10.255.77.2:53" {
		t.Fatalf("answer %q from %v, %v", buf[:n], from, err)
	}
}

// TestClientReconnects: when the session dies, the client dials again and new flows
// work; the flow that was open is reset, not left hanging.
func TestClientReconnects(t *testing.T) {
	p := newPeerRig(t, "")
	c, app := startClient(t, p, "")
	old, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	s, err := c.Session(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // the tunnel drops
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := old.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the old flow: %v, want a reset", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.8:80"))
		if err == nil {
			nc.Write([]byte("x"))
			b := make([]byte, 1)
			if _, err := io.ReadFull(nc, b); err != nil {
				t.Fatal(err)
			}
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new flow after reconnecting: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s2, _ := c.Session(ctx10(t)); s2 == s {
		t.Fatal("still on the old session")
	}
}

// TestClientWrongToken: Run fails at once with the peer's refusal, and closes the TUN.
func TestClientWrongToken(t *testing.T) {
	p := newPeerRig(t, "right")
	dev, _ := tuntest.Pair(t, appV4)
	c, err := NewClient(ClientOptions{TUN: dev, Dial: func(ctx context.Context) (*transport.Session, error) {
		return transport.Dial(ctx, p.url, &transport.DialOptions{Token: "wrong"})
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(ctx10(t), nil)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Run = %v, want the 401", err)
	}
	if _, err := dev.Read([][]byte{make([]byte, 100)}, []int{0}, 0); err == nil {
		t.Error("TUN left open")
	}
}

// TestDNSDestinations: which flows go to the peer's resolver.
func TestDNSDestinations(t *testing.T) {
	c := &Client{opts: ClientOptions{DNS: []netip.Addr{dnsV4}}}
	resolver := "dns.tether.invalid:53"
	for dst, want := range map[string]string{
		"10.255.77.2:53":  resolver,          // the tunnel's resolver address
		"10.255.77.2:853": "10.255.77.2:853", // not DNS
		"192.0.2.1:53":    "192.0.2.1:53",    // another resolver: passed on as asked
	} {
		if got, _ := c.dest(netip.MustParseAddrPort(dst)); got.String() != want {
			t.Errorf("dest(%s) = %s, want %s", dst, got, want)
		}
	}
	c.opts.HijackDNS = true
	if got, _ := c.dest(netip.MustParseAddrPort("192.0.2.1:53")); got.String() != resolver {
		t.Errorf("with HijackDNS: %s", got)
	}
}

// TestClientMovesOnGoAway: when the peer shuts down gracefully (a restart), new flows
// go to a new session at once while an open flow finishes on the old one.
func TestClientMovesOnGoAway(t *testing.T) {
	echo := testnet.ServeTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
	newPeer := func() *transport.Server {
		return &transport.Server{Logger: zaptest.NewLogger(t), Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.String())
		}}
	}
	var cur atomic.Pointer[transport.Server]
	old := newPeer()
	cur.Store(old)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	defer hs.Close()
	p := &peerRig{srv: old, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/tether"}
	c, app := startClient(t, p, "")
	flow, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	first, _ := c.Session(ctx10(t))

	next := newPeer()
	defer next.Close()
	cur.Store(next) // the restarted peer answers new sessions
	shut := make(chan error, 1)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { shut <- old.Shutdown(sctx) }()

	start := time.Now()
	for {
		if s, _ := c.Session(ctx10(t)); s != nil && s != first {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("no new session within 5 s of GOAWAY")
		}
		time.Sleep(10 * time.Millisecond)
	}
	nc, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.8:80"))
	if err != nil {
		t.Fatalf("new flow during the peer's shutdown: %v", err)
	}
	nc.Close()
	// The old flow still works until it ends; then the old peer finishes.
	flow.Write([]byte("z"))
	b := make([]byte, 1)
	if _, err := io.ReadFull(flow, b); err != nil {
		t.Fatalf("old flow broke during the graceful shutdown: %v", err)
	}
	flow.Close()
	if err := <-shut; err != nil {
		t.Fatalf("old peer's Shutdown: %v", err)
	}
}

// TestClientStatus: the status reports the session, traffic and open flows, over the
// control socket too.
func TestClientStatus(t *testing.T) {
	p := newPeerRig(t, "")
	c, app := startClient(t, p, "")
	flow, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	flow.Write(make([]byte, 100000))
	io.ReadFull(flow, make([]byte, 100000))

	sock := t.TempDir() + "/control.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.ServeControl(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://tetherd/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != "up" || st.State != "connected" || st.ConnectedSince.IsZero() || st.TCPFlows != 1 || st.TCPFlowsTotal != 1 || st.BytesUp < 100000 || st.BytesDown < 100000 {
		t.Fatalf("status %+v", st)
	}

	resp, err = hc.Get("http://tetherd/flows")
	if err != nil {
		t.Fatal(err)
	}
	var flows []Flow
	err = json.NewDecoder(resp.Body).Decode(&flows)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 1 || flows[0].Proto != "tcp" || flows[0].Dst != "198.51.100.7:80" || flows[0].BytesOut != 100000 || flows[0].BytesIn != 100000 {
		t.Fatalf("flows %+v", flows)
	}
	if flows[0].Src != flow.LocalAddr().String() {
		t.Fatalf("flow source %s, the application's socket is %s", flows[0].Src, flow.LocalAddr())
	}
	if resp, err := hc.Post("http://tetherd/flows", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /flows: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestTwoClientsSideBySide: two clients with their own devices and peers run in one
// process without sharing anything: each carries its own flows, and stopping one
// leaves the other working.
func TestTwoClientsSideBySide(t *testing.T) {
	p1, p2 := newPeerRig(t, "one"), newPeerRig(t, "two")
	run := func(p *peerRig, token string) (*wgnetstack.Net, context.CancelFunc, chan error) {
		dev, app := tuntest.Pair(t, appV4)
		c, err := NewClient(ClientOptions{TUN: dev, Dial: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, p.url, &transport.DialOptions{Token: token})
		}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan struct{}), make(chan error, 1)
		go func() { done <- c.Run(ctx, func() { close(ready) }) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatal(err)
		}
		return app, cancel, done
	}
	app1, stop1, done1 := run(p1, "one")
	app2, stop2, done2 := run(p2, "two")
	defer func() { stop2(); <-done2 }()
	echoOnce := func(app *wgnetstack.Net) error {
		c, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
		if err != nil {
			return err
		}
		defer c.Close()
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		_, err = io.ReadFull(c, b)
		return err
	}
	if err := echoOnce(app1); err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(app2); err != nil {
		t.Fatal(err)
	}
	if p1.srv.Sessions() != 1 || p2.srv.Sessions() != 1 {
		t.Fatalf("sessions: %d and %d, want one each", p1.srv.Sessions(), p2.srv.Sessions())
	}
	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(app2); err != nil {
		t.Fatalf("second client after the first stopped: %v", err)
	}
}

// TestClientStartsWithoutPeer: with the peer unreachable at start the client still
// starts (new flows fail fast meanwhile), connects once the peer appears, and a
// network change cuts the reconnect backoff short.
func TestClientStartsWithoutPeer(t *testing.T) {
	// The peer's URL once it is up; until then every dial is refused, as a port
	// nobody listens on would refuse it. (A port picked and closed for the purpose
	// was taken by another test's socket in the 6 s before the peer came up.)
	var peerURL atomic.Pointer[string]
	netChanged := make(chan struct{}, 1)
	dev, app := tuntest.Pair(t, appV4)
	c, err := NewClient(ClientOptions{
		TUN: dev,
		Dial: func(ctx context.Context) (*transport.Session, error) {
			u := peerURL.Load()
			if u == nil {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			return transport.Dial(ctx, *u, nil)
		},
		NetworkChanged: netChanged,
		SessionWait:    200 * time.Millisecond,
		Logger:         zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- c.Run(ctx, func() { close(ready) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run gave up on an unreachable peer: %v", err)
	}
	if st := c.Status(); st.State != "reconnecting" || st.LastError == "" {
		t.Fatalf("status while the peer is away: %+v", st)
	}
	if _, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80")); err == nil {
		t.Fatal("a flow opened with no tunnel")
	}
	// Let the backoff grow, then bring the peer up and signal a network change.
	time.Sleep(6 * time.Second)
	p := newPeerRig(t, "")
	peerURL.Store(&p.url)
	netChanged <- struct{}{}
	start := time.Now()
	for c.Status().State != "connected" {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("not connected %v after the network change (backoff not cut short)", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
