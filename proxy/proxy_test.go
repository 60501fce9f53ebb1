package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is a transport.Server behind httptest, a Sessions holder and a proxy Server
// listening on loopback.
type env struct {
	t        *testing.T
	addr     string // the proxy's host:port
	sessions *Sessions
	srv      *Server
}

func newEnv(t *testing.T, auth *Credentials) *env {
	t.Helper()
	peer := &transport.Server{
		Policy: &transport.Policy{AllowLoopback: true},
		LookupNetIP: func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			switch host {
			case "files.test", "a.test", "b.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
		Logger: zaptest.NewLogger(t),
	}
	hs := httptest.NewServer(peer)
	uri := "ws" + strings.TrimPrefix(hs.URL, "http") + "/tether"
	sessions, err := NewSessions(SessionsOptions{
		Dialer: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, uri, nil)
		},
		Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Session: sessions.Session, Auth: auth, Logger: zaptest.NewLogger(t)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		sessions.Close()
		peer.Close()
		hs.Close()
	})
	return &env{t: t, addr: ln.Addr().String(), sessions: sessions, srv: srv}
}

// serveTCP runs handle for each connection on a loopback listener until the test ends.
func serveTCP(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echo copies back and half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

func (e *env) dial() net.Conn {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	e.t.Cleanup(func() { c.Close() })
	return c
}

// socksConnect runs greeting (with creds if not nil) and CONNECT, returning the reply code.
func socksConnect(t *testing.T, c net.Conn, creds *Credentials, dst wire.Addr) byte {
	t.Helper()
	if creds == nil {
		c.Write([]byte{5, 1, 0})
	} else {
		c.Write([]byte{5, 1, 2})
	}
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		t.Fatal(err)
	}
	if m[1] == methodNoAccept {
		return 0xff
	}
	if creds != nil {
		b := []byte{1, byte(len(creds.User))}
		b = append(b, creds.User...)
		b = append(b, byte(len(creds.Password)))
		b = append(b, creds.Password...)
		c.Write(b)
		if _, err := io.ReadFull(c, m[:]); err != nil {
			t.Fatal(err)
		}
		if m[1] != 0 {
			return 0xfe
		}
	}
	c.Write(appendSOCKSAddr([]byte{5, cmdConnect, 0}, dst))
	return readReply(t, c)
}

func readReply(t *testing.T, c net.Conn) byte {
	t.Helper()
	var h [3]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := readSOCKSAddr(c); err != nil {
		t.Fatal(err)
	}
	return h[1]
}

func checkEcho(t *testing.T, c net.Conn) {
	t.Helper()
	msg := []byte("hello through the tether")
	c.Write(msg)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %q, %v", got, err)
	}
}

func TestSOCKSConnect(t *testing.T) {
	e := newEnv(t, nil)
	dst := serveTCP(t, echo)
	t.Run("ip", func(t *testing.T) {
		c := e.dial()
		if rep := socksConnect(t, c, nil, wire.AddrFromAddrPort(dst)); rep != 0 {
			t.Fatalf("reply 0x%02x", rep)
		}
		checkEcho(t, c)
	})
	t.Run("name", func(t *testing.T) {
		c := e.dial()
		if rep := socksConnect(t, c, nil, wire.Addr{Name: "files.test", Port: dst.Port()}); rep != 0 {
			t.Fatalf("reply 0x%02x", rep)
		}
		checkEcho(t, c)
	})
	t.Run("refused", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		closed := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		if rep := socksConnect(t, e.dial(), nil, wire.AddrFromAddrPort(closed)); rep != repRefused {
			t.Fatalf("reply 0x%02x, want 0x05", rep)
		}
	})
	t.Run("not-found", func(t *testing.T) {
		if rep := socksConnect(t, e.dial(), nil, wire.Addr{Name: "nowhere.test", Port: 80}); rep != repHostUnreachable {
			t.Fatalf("reply 0x%02x, want 0x04", rep)
		}
	})
	t.Run("bind", func(t *testing.T) {
		c := e.dial()
		c.Write([]byte{5, 1, 0})
		var m [2]byte
		io.ReadFull(c, m[:])
		c.Write(appendSOCKSAddr([]byte{5, cmdBind, 0}, wire.AddrFromAddrPort(dst)))
		if rep := readReply(t, c); rep != repCmdNotSupported {
			t.Fatalf("reply 0x%02x, want 0x07", rep)
		}
	})
}

func TestSOCKSAuth(t *testing.T) {
	creds := &Credentials{User: "alice", Password: "s3cret"}
	e := newEnv(t, creds)
	dst := serveTCP(t, echo)
	c := e.dial()
	if rep := socksConnect(t, c, creds, wire.AddrFromAddrPort(dst)); rep != 0 {
		t.Fatalf("reply 0x%02x", rep)
	}
	checkEcho(t, c)
	if rep := socksConnect(t, e.dial(), &Credentials{User: "alice", Password: "wrong"}, wire.AddrFromAddrPort(dst)); rep != 0xfe {
		t.Fatalf("wrong password: got 0x%02x, want auth failure", rep)
	}
	if rep := socksConnect(t, e.dial(), nil, wire.AddrFromAddrPort(dst)); rep != 0xff {
		t.Fatalf("no-auth method: got 0x%02x, want 0xff", rep)
	}
}

func TestSOCKSUDPAssociate(t *testing.T) {
	e := newEnv(t, nil)
	echoAddr := testnet.ServeUDPEcho(t)

	c := e.dial()
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	io.ReadFull(c, m[:])
	c.Write(appendSOCKSAddr([]byte{5, cmdAssociate, 0}, wire.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))))
	var h [3]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || h[1] != 0 {
		t.Fatalf("associate reply %v %v", h, err)
	}
	relayAddr, err := readSOCKSAddr(c)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i, dst := range []wire.Addr{wire.AddrFromAddrPort(echoAddr), {Name: "files.test", Port: echoAddr.Port()}} {
		payload := fmt.Appendf(nil, "datagram %d", i)
		pkt := append(appendSOCKSAddr([]byte{0, 0, 0}, dst), payload...)
		var got []byte
		for try := 0; try < 5 && got == nil; try++ { // UDP: retry a lost datagram
			pc.WriteToUDPAddrPort(pkt, relayAddr.AddrPort())
			pc.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 2048)
			n, err := pc.Read(buf)
			if err != nil {
				continue
			}
			r := &bytesReader{b: buf[3:n]}
			from, err := readSOCKSAddr(r)
			if err != nil || from.AddrPort() != echoAddr {
				t.Fatalf("reply from %v (%v)", from, err)
			}
			got = r.b
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("got %q, want %q", got, payload)
		}
	}
	// A fragment is dropped.
	pc.WriteToUDPAddrPort(append(appendSOCKSAddr([]byte{0, 0, 1}, wire.AddrFromAddrPort(echoAddr)), "frag"...), relayAddr.AddrPort())
	pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := pc.Read(make([]byte, 100)); err == nil {
		t.Fatal("a fragment was relayed")
	}
	// One association, one UDP flow, named by its first destination.
	fl := e.srv.Flows()
	if len(fl) != 1 || fl[0].Proto != "udp" || fl[0].Dst != echoAddr.String() || fl[0].BytesOut < 20 || fl[0].BytesIn < 20 {
		t.Fatalf("flows %+v", fl)
	}
	c.Close() // ends the association
	waitFor(t, "udp flow removed", func() bool { return len(e.srv.Flows()) == 0 })
	if st := e.srv.Stats(); st.UDPTotal != 1 {
		t.Errorf("stats %+v", st)
	}
}

// httpProxyClient is an http.Client that uses the proxy for http:// URLs.
func httpProxyClient(e *env, creds *Credentials) *http.Client {
	u := &url.URL{Scheme: "http", Host: e.addr}
	if creds != nil {
		u.User = url.UserPassword(creds.User, creds.Password)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(u), MaxConnsPerHost: 1}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func TestHTTPConnect(t *testing.T) {
	e := newEnv(t, nil)
	dst := serveTCP(t, echo)
	c := e.dial()
	fmt.Fprintf(c, "CONNECT files.test:%d HTTP/1.1\r\nHost: files.test:%d\r\n\r\n", dst.Port(), dst.Port())
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	c.Write([]byte("half-close"))
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(br)
	if string(got) != "half-close" {
		t.Fatalf("got %q", got)
	}
	// Unreachable: 502 with a reason.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	c2 := e.dial()
	fmt.Fprintf(c2, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", closed, closed)
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("want 502: %v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "refused") {
		t.Fatalf("502 body %q does not say why", body)
	}
}

func TestHTTPTwoHostsKeepAlive(t *testing.T) {
	e := newEnv(t, nil)
	mk := func(name string) *httptest.Server {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.URL.Path)
		}))
		t.Cleanup(hs.Close)
		return hs
	}
	a, b := mk("A"), mk("B")
	c := e.dial()
	br := bufio.NewReader(c)
	for i := range 3 {
		for _, hs := range []struct {
			name string
			url  string
		}{{"A", a.URL}, {"B", b.URL}} {
			u, _ := url.Parse(hs.url)
			path := fmt.Sprintf("/p%d", i)
			fmt.Fprintf(c, "GET http://%s%s HTTP/1.1\r\nHost: %s\r\nProxy-Connection: keep-alive\r\n\r\n", u.Host, path, u.Host)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if want := hs.name + " " + path; string(body) != want {
				t.Fatalf("got %q, want %q", body, want)
			}
			if resp.Close {
				t.Fatal("proxy closed the keep-alive connection")
			}
		}
	}
	s, err := e.sessions.Session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().StreamsTotal; n != 2 {
		t.Errorf("%d streams for 6 requests to 2 hosts, want 2 (one per host)", n)
	}
	// One flow per kept-alive upstream, named as the client named the host.
	flows := e.srv.Flows()
	ua, _ := url.Parse(a.URL)
	ub, _ := url.Parse(b.URL)
	if len(flows) != 2 || flows[0].Dst != ua.Host || flows[1].Dst != ub.Host || flows[0].Src != c.LocalAddr().String() {
		t.Fatalf("flows %+v", flows)
	}
	for _, f := range flows {
		if f.BytesOut < 3*50 || f.BytesIn < 3*100 {
			t.Errorf("flow %d counted %d out, %d in for 3 requests", f.ID, f.BytesOut, f.BytesIn)
		}
	}
	c.Close()
	waitFor(t, "flows closed with their client", func() bool { return len(e.srv.Flows()) == 0 })
	if st := e.srv.Stats(); st.TCPTotal != 2 || st.TCPActive != 0 {
		t.Errorf("stats %+v", st)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSOCKSFlows: a CONNECT is one flow with the bytes both ways, listed while it is
// open; a refused one is counted, not listed.
func TestSOCKSFlows(t *testing.T) {
	e := newEnv(t, nil)
	dst := serveTCP(t, echo)
	c := e.dial()
	if rep := socksConnect(t, c, nil, wire.Addr{Name: "files.test", Port: dst.Port()}); rep != 0 {
		t.Fatalf("reply 0x%02x", rep)
	}
	msg := bytes.Repeat([]byte("x"), 10000)
	c.Write(msg)
	if _, err := io.ReadFull(c, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bytes counted", func() bool {
		fl := e.srv.Flows()
		return len(fl) == 1 && fl[0].BytesOut == 10000 && fl[0].BytesIn == 10000
	})
	f := e.srv.Flows()[0]
	if f.Proto != "tcp" || f.Dst != fmt.Sprintf("files.test:%d", dst.Port()) || f.Src != c.LocalAddr().String() {
		t.Fatalf("flow %+v", f)
	}
	c.Close()
	waitFor(t, "flow removed", func() bool { return len(e.srv.Flows()) == 0 })

	if rep := socksConnect(t, e.dial(), nil, wire.Addr{Name: "nowhere.test", Port: 80}); rep != repHostUnreachable {
		t.Fatalf("reply 0x%02x", rep)
	}
	if st := e.srv.Stats(); st.TCPTotal != 1 || st.TCPFailed != 1 || st.TCPActive != 0 || len(e.srv.Flows()) != 0 {
		t.Fatalf("stats %+v, flows %+v", st, e.srv.Flows())
	}
}

func TestHTTPPost(t *testing.T) {
	e := newEnv(t, nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Proxy-Authorization") != "" || r.Header.Get("Proxy-Connection") != "" {
			http.Error(w, "hop-by-hop header forwarded", 500)
			return
		}
		fmt.Fprintf(w, "%s got %d bytes", r.Method, len(b))
	}))
	defer hs.Close()
	cl := httpProxyClient(e, nil)
	for _, expect := range []bool{false, true} {
		req, _ := http.NewRequest("POST", hs.URL+"/post", strings.NewReader(strings.Repeat("x", 100000)))
		if expect {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "POST got 100000 bytes" {
			t.Fatalf("expect=%v: %s %q", expect, resp.Status, b)
		}
	}
}

func TestSOCKSReplyCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want byte
	}{
		{&transport.StreamError{Code: wire.CodeRefused}, 0x05},
		{&transport.StreamError{Code: wire.CodeNetUnreachable}, 0x03},
		{&transport.StreamError{Code: wire.CodeHostUnreach}, 0x04},
		{&transport.StreamError{Code: wire.CodeHostNotFound}, 0x04},
		{&transport.StreamError{Code: wire.CodeDenied}, 0x02},
		{&transport.StreamError{Code: wire.CodeTimedOut}, 0x06},
		{&transport.StreamError{Code: wire.CodeInternal}, 0x01},
		{context.DeadlineExceeded, 0x06},
		{errors.New("other"), 0x01},
	} {
		if got := socksReplyCode(tc.err); got != tc.want {
			t.Errorf("%v: 0x%02x, want 0x%02x", tc.err, got, tc.want)
		}
	}
}

func TestHTTPAuthAndLargeDownload(t *testing.T) {
	creds := &Credentials{User: "bob", Password: "pw"}
	e := newEnv(t, creds)
	data := make([]byte, 8<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	}))
	defer hs.Close()

	resp, err := httpProxyClient(e, nil).Get(hs.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusProxyAuthRequired || resp.Header.Get("Proxy-Authenticate") == "" {
		t.Fatalf("without credentials: %s %v", resp.Status, resp.Header)
	}
	resp, err = httpProxyClient(e, creds).Get(hs.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("sha256 mismatch")
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name  string
		in    string
		close bool   // the client half-closes after in
		want  []byte // prefix of the answer; nil: closed without answer
	}{
		{"truncated greeting", "\x05\x02\x00", true, nil},
		{"empty methods", "\x05\x00", false, []byte{5, 0xff}},
		{"version 4 request", "\x05\x01\x00\x04\x01\x00\x50\x7f\x00\x00\x01", false, []byte{5, 0, 5, repGeneralFailure}},
		{"unknown command", "\x05\x01\x00\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50", false, []byte{5, 0, 5, repCmdNotSupported}},
		{"unknown address type", "\x05\x01\x00\x05\x01\x00\x07", false, []byte{5, 0, 5, repAddrTypeNotSupport}},
		{"truncated request", "\x05\x01\x00\x05\x01\x00\x03\x20ab", true, []byte{5, 0}},
		{"malformed request line", "GARBAGE\r\n\r\n", false, []byte("HTTP/1.1 400")},
		{"missing host", "GET /x HTTP/1.1\r\n\r\n", false, []byte("HTTP/1.1 400")},
		{"origin form", "GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n", false, []byte("HTTP/1.1 400")},
		{"bad connect target", "CONNECT nocolon HTTP/1.1\r\nHost: x\r\n\r\n", false, []byte("HTTP/1.1 400")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial()
			c.Write([]byte(tc.in))
			if tc.close {
				c.(*net.TCPConn).CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("read: %v (got %q)", err, got)
			}
			if !bytes.HasPrefix(got, tc.want) || (tc.want == nil && len(got) > 0) {
				t.Fatalf("got %q, want prefix %q", got, tc.want)
			}
		})
	}
}

func TestCheckListen(t *testing.T) {
	open := &net.TCPAddr{IP: net.IPv4zero, Port: 1080}
	if err := CheckListen(open, nil, false); !errors.Is(err, ErrOpenProxy) {
		t.Fatalf("0.0.0.0 without auth: %v", err)
	}
	if err := CheckListen(open, &Credentials{User: "u", Password: "p"}, false); err != nil {
		t.Fatal(err)
	}
	if err := CheckListen(open, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := CheckListen(&net.TCPAddr{IP: net.IPv6loopback, Port: 1}, nil, false); err != nil {
		t.Fatal(err)
	}
}

func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	e := newEnv(t, nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer hs.Close()
	port := hs.Listener.Addr().(*net.TCPAddr).Port
	hts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer hts.Close()
	tlsPort := hts.Listener.Addr().(*net.TCPAddr).Port
	for _, args := range [][]string{
		{"--socks5-hostname", e.addr, fmt.Sprintf("http://files.test:%d/socks", port)},
		{"-x", "http://" + e.addr, fmt.Sprintf("http://127.0.0.1:%d/http", port)},
		{"-p", "-x", "http://" + e.addr, fmt.Sprintf("http://files.test:%d/tunnel", port)},
		// HTTPS through CONNECT, as browsers do it (the test server's certificate is
		// self-signed: -k).
		{"-k", "-x", "http://" + e.addr, fmt.Sprintf("https://files.test:%d/https", tlsPort)},
		{"-k", "--socks5-hostname", e.addr, fmt.Sprintf("https://files.test:%d/socks-https", tlsPort)},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, curl, append([]string{"-sS", "--noproxy", "", "--max-time", "15"}, args...)...).CombinedOutput()
		cancel()
		path := args[len(args)-1][strings.LastIndex(args[len(args)-1], "/"):]
		if err != nil || string(out) != "hello "+path {
			t.Errorf("curl %v: %q, %v", args, out, err)
		}
	}
}

func TestSessionsRedial(t *testing.T) {
	peer := &transport.Server{Policy: &transport.Policy{AllowLoopback: true}, Logger: zaptest.NewLogger(t)}
	hs := httptest.NewServer(peer)
	defer func() { peer.Close(); hs.Close() }()
	uri := "ws" + strings.TrimPrefix(hs.URL, "http") + "/tether"
	var mu sync.Mutex
	dials, fail := 0, false
	h, err := NewSessions(SessionsOptions{
		Dialer: func(ctx context.Context) (*transport.Session, error) {
			mu.Lock()
			dials++
			f := fail
			mu.Unlock()
			if f {
				return nil, errors.New("peer down")
			}
			return transport.Dial(ctx, uri, nil)
		},
		MaxBackoff: 200 * time.Millisecond,
		Logger:     zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s1, err := h.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := h.Session(ctx); s != s1 {
		t.Fatal("a live session was not reused")
	}
	s1.Close()
	<-s1.Done()
	mu.Lock()
	fail = true
	mu.Unlock()
	if _, err := h.Session(ctx); err == nil {
		t.Fatal("want the dial error")
	}
	start := time.Now()
	mu.Lock()
	fail = false
	mu.Unlock()
	s2, err := h.Session(ctx)
	if err != nil || s2 == s1 {
		t.Fatalf("redial: %v", err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Error("redial after a failure did not back off")
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != 3 {
		t.Errorf("%d dials, want 3", dials)
	}
	st := h.Stats()
	if !st.Connected || st.Reconnects != 1 || st.LastError != "peer down" || st.BytesUp == 0 || st.BytesDown == 0 || time.Since(st.Since) > 5*time.Second {
		t.Errorf("stats %+v", st)
	}
}
