// Command internetd is "the internet" of the network-namespace end-to-end suites
// (test/e2e/*.sh): one process that serves, on each address given with -addr,
//
//   - HTTP on port 80: GET / (a one-line greeting), GET /big (a deterministic
//     pseudo-random file of -big-mib MiB generated at start from -seed),
//     GET /big.sha256 (its hex SHA-256) and POST /upload (answers the hex SHA-256
//     of the request body);
//   - a TCP "reply then close" server on port 7001: it reads until the client
//     half-closes (EOF), then writes "got N bytes\n" and closes;
//   - UDP echo on port 7;
//   - DNS on port 53, UDP and TCP: A and AAAA for -dns-name (default
//     internet.test.) with the IPv4 and IPv6 addresses among -addr (or -dns-a and
//     -dns-aaaa), NXDOMAIN for every other name.
//
// It logs one line per request to standard error, and a line containing " ready: "
// once every listener is bound. SIGINT or SIGTERM stop it.
//
// It is also the test client for what curl and dig cannot do:
//
//	internetd -halfclose-client HOST:PORT [-bytes N]   send N bytes, shut down the
//	    write side, expect "got N bytes\n" back
//	internetd -udp-echo-client HOST:PORT [-count N] [-size B]   send N datagrams
//	    one by one and count the echoes
//
//	internetd -flows-client HOST:PORT[,HOST:PORT...] -proto tcp|udp|connect
//	    [-flows N] [-concurrency C] [-flow-timeout D] [-hold D]   open and close N
//	    flows, C at once: TCP to the reply-then-close server, UDP to the echo
//	    server, or bare TCP connection attempts ("connect", any outcome counts)
//
// They exit 0 on success and 1 otherwise, printing one line of result; the flows
// client succeeds when every flow did (always, for "connect").
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// config is what the servers serve and where.
type config struct {
	addrs         []netip.Addr
	httpPort      int
	halfclosePort int
	echoPort      int
	dnsPort       int
	dnsName       string
	dnsA, dnsAAAA []netip.Addr
	bigMiB        int
	seed          uint64
}

// servers is a running set of servers. The bound addresses are kept so that tests
// that listen on port 0 can find them.
type servers struct {
	log    *log.Logger
	cfg    config
	big    []byte
	bigSum string

	HTTP, HalfClose, DNSTCP []net.Addr
	Echo, DNSUDP            []net.Addr

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	pconns    []net.PacketConn
	conns     map[net.Conn]struct{}
	httpSrvs  []*http.Server
	wg        sync.WaitGroup
}

// bigData returns the deterministic pseudo-random content of /big.
func bigData(mib int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "tetherd e2e /big")
	b := make([]byte, mib<<20)
	_, _ = mrand.NewChaCha8(s).Read(b)
	return b
}

// start binds every listener of cfg and serves until Close.
func start(cfg config, logw io.Writer) (s *servers, err error) {
	if cfg.dnsName == "" {
		cfg.dnsName = "internet.test."
	}
	if !strings.HasSuffix(cfg.dnsName, ".") {
		cfg.dnsName += "."
	}
	if cfg.dnsA == nil && cfg.dnsAAAA == nil {
		for _, a := range cfg.addrs {
			if a.Is4() {
				cfg.dnsA = append(cfg.dnsA, a)
			} else {
				cfg.dnsAAAA = append(cfg.dnsAAAA, a)
			}
		}
	}
	s = &servers{
		log:   log.New(logw, "internetd: ", log.Lmicroseconds),
		cfg:   cfg,
		conns: map[net.Conn]struct{}{},
	}
	t0 := time.Now()
	s.big = bigData(cfg.bigMiB, cfg.seed)
	sum := sha256.Sum256(s.big)
	s.bigSum = hex.EncodeToString(sum[:])
	s.log.Printf("/big: %d MiB, seed %d, sha256 %s (%v)", cfg.bigMiB, cfg.seed, s.bigSum, time.Since(t0).Round(time.Millisecond))

	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the internet (internetd)\n")
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "big", time.Time{}, bytes.NewReader(s.big))
	})
	mux.HandleFunc("GET /big.sha256", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, s.bigSum+"\n")
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Upload-Bytes", strconv.FormatInt(n, 10))
		io.WriteString(w, hex.EncodeToString(h.Sum(nil))+"\n")
	})
	handler := s.logHTTP(mux)

	for _, a := range cfg.addrs {
		if err := s.serveAddr(a, handler); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// serveAddr starts every server on address a.
func (s *servers) serveAddr(a netip.Addr, handler http.Handler) error {
	httpLn, err := s.listen(a, s.cfg.httpPort)
	if err != nil {
		return err
	}
	s.HTTP = append(s.HTTP, httpLn.Addr())
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: s.log}
	s.mu.Lock()
	s.httpSrvs = append(s.httpSrvs, srv)
	s.mu.Unlock()
	s.goServe(func() { _ = srv.Serve(httpLn) })

	hcLn, err := s.listen(a, s.cfg.halfclosePort)
	if err != nil {
		return err
	}
	s.HalfClose = append(s.HalfClose, hcLn.Addr())
	s.goServe(func() { s.acceptLoop(hcLn, s.handleHalfClose) })

	dnsLn, err := s.listen(a, s.cfg.dnsPort)
	if err != nil {
		return err
	}
	s.DNSTCP = append(s.DNSTCP, dnsLn.Addr())
	s.goServe(func() { s.acceptLoop(dnsLn, s.handleDNSTCP) })

	echoPC, err := s.listenPacket(a, s.cfg.echoPort)
	if err != nil {
		return err
	}
	s.Echo = append(s.Echo, echoPC.LocalAddr())
	s.goServe(func() { s.echoLoop(echoPC) })

	dnsPC, err := s.listenPacket(a, s.cfg.dnsPort)
	if err != nil {
		return err
	}
	s.DNSUDP = append(s.DNSUDP, dnsPC.LocalAddr())
	s.goServe(func() { s.dnsUDPLoop(dnsPC) })
	return nil
}

func (s *servers) goServe(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func network(a netip.Addr, base string) string {
	if a.Is4() {
		return base + "4"
	}
	return base + "6"
}

func (s *servers) listen(a netip.Addr, port int) (net.Listener, error) {
	ln, err := net.Listen(network(a, "tcp"), netip.AddrPortFrom(a, uint16(port)).String())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ln.Close()
		return nil, net.ErrClosed
	}
	s.listeners = append(s.listeners, ln)
	return ln, nil
}

func (s *servers) listenPacket(a netip.Addr, port int) (net.PacketConn, error) {
	pc, err := net.ListenPacket(network(a, "udp"), netip.AddrPortFrom(a, uint16(port)).String())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		pc.Close()
		return nil, net.ErrClosed
	}
	s.pconns = append(s.pconns, pc)
	return pc, nil
}

// Close stops every server and waits for their goroutines.
func (s *servers) Close() {
	s.mu.Lock()
	s.closed = true
	for _, srv := range s.httpSrvs {
		srv.Close()
	}
	for _, ln := range s.listeners {
		ln.Close()
	}
	for _, pc := range s.pconns {
		pc.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// countingWriter counts the body bytes an HTTP handler writes.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *servers) logHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		cw := &countingWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		extra := ""
		if n := cw.Header().Get("X-Upload-Bytes"); n != "" {
			extra = ", received " + n + " bytes"
		}
		s.log.Printf("http %s %s %s from %s: %d, sent %d bytes%s in %v", r.Host, r.Method, r.URL.Path, r.RemoteAddr,
			cw.status, cw.n, extra, time.Since(t0).Round(time.Millisecond))
	})
}

// acceptLoop serves each connection of ln with handle, in its own goroutine.
func (s *servers) acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Printf("accept on %v: %v", ln.Addr(), err)
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.goServe(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			handle(c)
		})
	}
}

// handleHalfClose reads until EOF, then answers "got N bytes\n" and closes.
func (s *servers) handleHalfClose(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		s.log.Printf("halfclose %v from %v: read error after %d bytes: %v", c.LocalAddr(), c.RemoteAddr(), n, err)
		return
	}
	_, err = fmt.Fprintf(c, "got %d bytes\n", n)
	s.log.Printf("halfclose %v from %v: got %d bytes, then EOF; replied (err %v)", c.LocalAddr(), c.RemoteAddr(), n, err)
}

func (s *servers) echoLoop(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Printf("udp echo %v: %v", pc.LocalAddr(), err)
			}
			return
		}
		_, err = pc.WriteTo(buf[:n], from)
		s.log.Printf("udp echo %v from %v: %d bytes (err %v)", pc.LocalAddr(), from, n, err)
	}
}

func (s *servers) dnsUDPLoop(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Printf("dns udp %v: %v", pc.LocalAddr(), err)
			}
			return
		}
		resp, desc := s.answer(buf[:n])
		if resp == nil {
			s.log.Printf("dns udp %v from %v: %s, no reply", pc.LocalAddr(), from, desc)
			continue
		}
		_, err = pc.WriteTo(resp, from)
		s.log.Printf("dns udp %v from %v: %s (err %v)", pc.LocalAddr(), from, desc, err)
	}
}

func (s *servers) handleDNSTCP(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(r, msg); err != nil {
			s.log.Printf("dns tcp %v from %v: short message: %v", c.LocalAddr(), c.RemoteAddr(), err)
			return
		}
		resp, desc := s.answer(msg)
		if resp == nil {
			s.log.Printf("dns tcp %v from %v: %s, closing", c.LocalAddr(), c.RemoteAddr(), desc)
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		_, err := c.Write(append(out, resp...))
		s.log.Printf("dns tcp %v from %v: %s (err %v)", c.LocalAddr(), c.RemoteAddr(), desc, err)
		if err != nil {
			return
		}
	}
}

// answer builds the response to the DNS query msg; it returns nil when msg is not
// a query worth answering. desc describes the exchange for the log.
func (s *servers) answer(msg []byte) (resp []byte, desc string) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, "unparsable message: " + err.Error()
	}
	if h.Response {
		return nil, "a response, not a query"
	}
	q, err := p.Question()
	rh := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if err != nil || h.OpCode != 0 {
		if err != nil {
			rh.RCode = dnsmessage.RCodeFormatError
			desc = "no question: FORMERR"
		} else {
			rh.RCode = dnsmessage.RCodeNotImplemented
			desc = fmt.Sprintf("opcode %d: NOTIMP", h.OpCode)
		}
		b := dnsmessage.NewBuilder(nil, rh)
		out, err := b.Finish()
		if err != nil {
			return nil, "building the response: " + err.Error()
		}
		return out, desc
	}
	match := strings.EqualFold(q.Name.String(), s.cfg.dnsName)
	if !match {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err.Error()
	}
	if err := b.Question(q); err != nil {
		return nil, err.Error()
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err.Error()
	}
	var answers []string
	if match {
		hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		switch q.Type {
		case dnsmessage.TypeA:
			for _, a := range s.cfg.dnsA {
				hdr.Type = dnsmessage.TypeA
				if err := b.AResource(hdr, dnsmessage.AResource{A: a.As4()}); err != nil {
					return nil, err.Error()
				}
				answers = append(answers, a.String())
			}
		case dnsmessage.TypeAAAA:
			for _, a := range s.cfg.dnsAAAA {
				hdr.Type = dnsmessage.TypeAAAA
				if err := b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: a.As16()}); err != nil {
					return nil, err.Error()
				}
				answers = append(answers, a.String())
			}
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil, "building the response: " + err.Error()
	}
	rc := "NOERROR"
	if !match {
		rc = "NXDOMAIN"
	}
	return out, fmt.Sprintf("%v %v: %s %v", q.Name, q.Type, rc, answers)
}

// halfCloseClient sends n bytes to addr, shuts down its write side and expects
// "got n bytes\n" before EOF.
func halfCloseClient(ctx context.Context, addr string, n int) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	tc := c.(*net.TCPConn)
	chunk := bytes.Repeat([]byte("half-close "), 1024)
	for left := n; left > 0; {
		k := min(left, len(chunk))
		if _, err := tc.Write(chunk[:k]); err != nil {
			return "", fmt.Errorf("writing: %w", err)
		}
		left -= k
	}
	if err := tc.CloseWrite(); err != nil {
		return "", fmt.Errorf("shutting down the write side: %w", err)
	}
	reply, err := io.ReadAll(io.LimitReader(tc, 4096))
	if err != nil {
		return string(reply), fmt.Errorf("reading the reply after half-close: %w (got %q so far)", err, reply)
	}
	if want := fmt.Sprintf("got %d bytes\n", n); string(reply) != want {
		return string(reply), fmt.Errorf("reply %q, want %q", reply, want)
	}
	return string(reply), nil
}

// udpEchoClient sends count datagrams of size bytes to addr, one at a time, each
// waiting up to wait for its echo, and returns how many came back intact.
func udpEchoClient(ctx context.Context, addr string, count, size int, wait time.Duration) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if size < 16 {
		size = 16
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	buf := make([]byte, 65536)
	got := 0
	for i := 0; i < count; i++ {
		if ctx.Err() != nil {
			return got, ctx.Err()
		}
		msg := make([]byte, size)
		copy(msg, nonce[:])
		binary.BigEndian.PutUint64(msg[8:], uint64(i))
		for j := 16; j < size; j++ {
			msg[j] = byte(i + j)
		}
		if _, err := c.Write(msg); err != nil {
			return got, fmt.Errorf("sending datagram %d: %w", i, err)
		}
		deadline := time.Now().Add(wait)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		_ = c.SetReadDeadline(deadline)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // lost; go on with the next one
				}
				return got, fmt.Errorf("receiving echo %d: %w", i, err)
			}
			if bytes.Equal(buf[:n], msg) {
				got++
				break
			}
			// A late echo of an earlier datagram: keep waiting for this one.
		}
	}
	return got, nil
}

// addrList is a repeatable flag of IP addresses.
type addrList []netip.Addr

func (l *addrList) String() string {
	var s []string
	for _, a := range *l {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

func (l *addrList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		*l = append(*l, a.Unmap())
	}
	return nil
}

func main() {
	log.SetFlags(0)
	var cfg config
	var addrs, dnsA, dnsAAAA addrList
	flag.Var(&addrs, "addr", "serve on this IP `ADDRESS` (repeatable, or comma-separated)")
	flag.IntVar(&cfg.httpPort, "http-port", 80, "HTTP `PORT`")
	flag.IntVar(&cfg.halfclosePort, "halfclose-port", 7001, "TCP reply-then-close `PORT`")
	flag.IntVar(&cfg.echoPort, "echo-port", 7, "UDP echo `PORT`")
	flag.IntVar(&cfg.dnsPort, "dns-port", 53, "DNS `PORT` (UDP and TCP)")
	flag.StringVar(&cfg.dnsName, "dns-name", "internet.test.", "the one DNS `NAME` answered")
	flag.Var(&dnsA, "dns-a", "A record `ADDRESS` for -dns-name (default: the IPv4 -addr)")
	flag.Var(&dnsAAAA, "dns-aaaa", "AAAA record `ADDRESS` for -dns-name (default: the IPv6 -addr)")
	flag.IntVar(&cfg.bigMiB, "big-mib", 64, "size of /big in `MiB`")
	flag.Uint64Var(&cfg.seed, "seed", 1, "`SEED` of the content of /big")
	hcClient := flag.String("halfclose-client", "", "client mode: half-close test against `HOST:PORT`")
	hcBytes := flag.Int("bytes", 100000, "half-close client: bytes to send")
	echoClient := flag.String("udp-echo-client", "", "client mode: UDP echo test against `HOST:PORT`")
	count := flag.Int("count", 50, "UDP echo client: datagrams to send (at most 10000)")
	size := flag.Int("size", 512, "UDP echo client: datagram size in bytes (16 to 65000)")
	wait := flag.Duration("wait", time.Second, "UDP echo client: how long to wait for each echo")
	timeout := flag.Duration("timeout", 30*time.Second, "client modes: overall time limit")
	flowsTargets := flag.String("flows-client", "", "client mode: open and close flows to `HOST:PORT[,HOST:PORT...]`")
	var fo flowOptions
	flag.StringVar(&fo.proto, "proto", "tcp", "flows client: tcp, udp or connect")
	flag.IntVar(&fo.count, "flows", 1000, "flows client: how many flows (at most 1000000)")
	flag.IntVar(&fo.concurrency, "concurrency", 50, "flows client: flows at once (at most 5000)")
	flag.DurationVar(&fo.timeout, "flow-timeout", 5*time.Second, "flows client: time limit of one flow")
	flag.DurationVar(&fo.hold, "hold", 0, "flows client: keep each flow open this long")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("internetd: unexpected argument %q", flag.Arg(0))
	}

	switch {
	case *hcClient != "":
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		reply, err := halfCloseClient(ctx, *hcClient, *hcBytes)
		if err != nil {
			fmt.Printf("halfclose %s: FAILED: %v\n", *hcClient, err)
			os.Exit(1)
		}
		fmt.Printf("halfclose %s: sent %d bytes, shut down writing, received %q\n", *hcClient, *hcBytes, reply)
		return
	case *flowsTargets != "":
		fo.targets = splitTargets(*flowsTargets)
		if fo.count < 1 || fo.count > 1000000 || fo.concurrency < 1 || fo.concurrency > 5000 {
			log.Fatalf("internetd: -flows must be 1..1000000 and -concurrency 1..5000")
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		res, err := flowsClient(ctx, fo)
		fmt.Printf("flows %s %s: %v", fo.proto, *flowsTargets, res)
		if err != nil {
			fmt.Printf(" (stopped: %v)", err)
		}
		fmt.Println()
		if err != nil || (fo.proto != "connect" && res.OK != fo.count) {
			os.Exit(1)
		}
		return
	case *echoClient != "":
		if *count < 1 || *count > 10000 || *size < 16 || *size > 65000 {
			log.Fatalf("internetd: -count must be 1..10000 and -size 16..65000")
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		got, err := udpEchoClient(ctx, *echoClient, *count, *size, *wait)
		fmt.Printf("udp echo %s: sent %d datagrams of %d bytes, received %d echoes", *echoClient, *count, *size, got)
		if err != nil {
			fmt.Printf(" (%v)", err)
		}
		fmt.Println()
		if err != nil || got != *count {
			os.Exit(1)
		}
		return
	}

	if len(addrs) == 0 {
		log.Fatal("internetd: give at least one -addr")
	}
	if cfg.bigMiB < 1 || cfg.bigMiB > 1024 {
		log.Fatal("internetd: -big-mib must be 1..1024")
	}
	cfg.addrs, cfg.dnsA, cfg.dnsAAAA = addrs, dnsA, dnsAAAA
	s, err := start(cfg, os.Stderr)
	if err != nil {
		log.Fatalf("internetd: %v", err)
	}
	s.log.Printf("ready: http %v, halfclose %v, udp echo %v, dns %v", s.HTTP, s.HalfClose, s.Echo, s.DNSUDP)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	sig := <-sigs
	s.log.Printf("received %v, stopping", sig)
	s.Close()
}
