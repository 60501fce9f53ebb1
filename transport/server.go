package transport

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/pump"
	"github.com/tetherd/tetherd/transport/wire"
)

// Server is the peer side of tetherd: an http.Handler that accepts tether.v1
// WebSockets and dials the destinations clients ask for. Mount it at any path of any
// HTTP server. The zero value works (no token, default policy, the system's dialer and
// resolver); set the fields before the first request and do not change them after.
type Server struct {
	// Token, when not empty, must be presented as "Authorization: Bearer TOKEN"; it is
	// compared in constant time before the upgrade.
	Token string
	// Dial connects to a destination. addr is always "IP:port" (names are resolved
	// first, and the IP checked by Policy). Default: a net.Dialer that checks Policy
	// again on the socket's connect address.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket opens the socket of a UDP association ("udp", "udp4"). Default:
	// net.ListenConfig.
	ListenPacket func(ctx context.Context, network, addr string) (net.PacketConn, error)
	// LookupNetIP resolves host names. Default: net.DefaultResolver.LookupNetIP.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// Policy decides which destinations may be dialed; nil means the zero Policy.
	Policy *Policy
	// DNSServers are the resolvers behind wire.ResolverName; default: the
	// nameservers of the peer's resolv.conf.
	DNSServers []netip.AddrPort
	// DialTimeout bounds each TCP dial. Default 10 s.
	DialTimeout time.Duration
	// UDPIdleTimeout ends an association that saw no datagram either way for this
	// long. Default 2 minutes.
	UDPIdleTimeout time.Duration
	// Config sets each session's limits and timers.
	Config *Config
	// Logger receives logs: a line per session and per refused stream. Nil discards.
	Logger *zap.Logger

	// AuthFailureBurst is how many failed authentications (a missing or wrong token)
	// one source — an IPv4 address, or an IPv6 /64 — may make in a row; then it
	// regains one attempt per AuthFailureInterval, and until then is answered 429 Too
	// Many Requests with Retry-After without its token being compared. Default 5;
	// negative turns the limit off.
	AuthFailureBurst int
	// AuthFailureInterval is how often a source regains one authentication attempt.
	// Default 20 s.
	AuthFailureInterval time.Duration
	// AuthSources bounds how many sources the failure counter tracks; when the table
	// is full, the sources not in it share one counter. Default 4096.
	AuthSources int
	// MaxUnauthenticatedConns caps the connections that have not completed an
	// authenticated upgrade (TLS handshakes and requests in progress, idle
	// keep-alives); a new connection beyond it is closed at once. It is enforced by
	// the ConnState method, which must be set as the http.Server's ConnState. Default
	// 64.
	MaxUnauthenticatedConns int
	// MaxUnauthenticatedPerSource caps those connections per source (an IPv4
	// address, or an IPv6 /64). Default 8.
	MaxUnauthenticatedPerSource int
	// MaxSessions caps the sessions running at once; beyond it a new session is
	// answered 503 Service Unavailable with Retry-After. Default 32.
	MaxSessions int
	// RelayBuffers caps the read buffers the TCP relays of one session hold at once,
	// in bytes. A relay holds one only while its destination sends (and while the
	// client has not yet taken the data); the relays beyond the cap read 2 KiB at a
	// time, so a client that opens many streams and reads none cannot make the peer
	// hold 64 KiB for each. Default 16 MiB.
	RelayBuffers int

	initOnce sync.Once
	auth     *authLimiter // nil when the limit is off
	preAuth  *connLimiter
	idle     idleWaiter // watches the destinations of idle relays (idlewait_linux.go)

	mu       sync.Mutex
	sessions map[*session]*int // running sessions and the relay buffer bytes each holds
	active   int               // sessions admitted, from before the upgrade until they end
	closing  bool
	wg       sync.WaitGroup // sessions and their relays
	counters serverCounters // server_stats.go
}

// init builds the abuse limiters from the fields, once.
func (srv *Server) init() {
	srv.initOnce.Do(func() {
		srv.idle.init()
		def := func(v, d int) int {
			if v == 0 {
				return d
			}
			return v
		}
		if srv.AuthFailureBurst >= 0 {
			interval := srv.AuthFailureInterval
			if interval <= 0 {
				interval = defaultAuthFailureInterval
			}
			srv.auth = newAuthLimiter(def(srv.AuthFailureBurst, defaultAuthFailureBurst), interval,
				max(1, def(srv.AuthSources, defaultAuthSources)), time.Now)
		}
		srv.preAuth = newConnLimiter(max(1, def(srv.MaxUnauthenticatedConns, defaultMaxUnauthConns)),
			max(1, def(srv.MaxUnauthenticatedPerSource, defaultMaxUnauthPerSource)))
	})
}

func (srv *Server) maxSessions() int {
	if srv.MaxSessions > 0 {
		return srv.MaxSessions
	}
	return defaultMaxSessions
}

// CorkListener wraps ln so that the sessions of a Server behind it write each round of
// frames with one system call, not one per TLS record (16 KiB) or per buffer of the
// HTTP server's writer: the connections it accepts collect writes while a session's
// writer is in a round. Put it under tls.NewListener, and set the http.Server's
// ConnContext to srv.ConnContext, which tells the sessions where it is. Writes
// outside a round (the WebSocket library's own control frames, HTTP responses) pass
// straight through.
func CorkListener(ln net.Listener) net.Listener { return corkListener{ln} }

type corkListener struct{ net.Listener }

func (l corkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newCorkConn(c, nil), nil
}

// corkKey is the context key of a connection's *corkConn.
type corkKey struct{}

// ConnContext is a hook for http.Server.ConnContext: it notes the connection's place
// in a CorkListener, if it has one, for the session the connection will carry. Set
// it on the http.Server that serves srv from a CorkListener.
func (srv *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*corkConn); ok {
		return context.WithValue(ctx, corkKey{}, cc)
	}
	return ctx
}

// ConnState is a hook for http.Server.ConnState that caps the connections that have
// not completed an authenticated upgrade (MaxUnauthenticatedConns,
// MaxUnauthenticatedPerSource), so slow or idle clients without the token cannot use
// up the peer's connections and memory. Set it on the http.Server that serves srv.
func (srv *Server) ConnState(c net.Conn, st http.ConnState) {
	srv.init()
	srv.preAuth.state(c, st)
}

func (srv *Server) logger() *zap.Logger {
	if srv.Logger == nil {
		return zap.NewNop()
	}
	return srv.Logger
}

// ServeHTTP authenticates the request, negotiates tether.v1 and runs the session until
// it ends.
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	srv.init()
	log := srv.logger()
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Protocol", wire.Subprotocol)
		w.WriteHeader(http.StatusUpgradeRequired)
		fmt.Fprintf(w, "tetherd peer: this endpoint speaks %s over WebSocket; connect with 'tetherd up'\n", wire.Subprotocol)
		return
	}
	if !srv.authenticate(w, r) {
		return
	}
	offered := offeredProtocols(r)
	if !contains(offered, wire.Subprotocol) {
		w.Header().Set("Sec-WebSocket-Protocol", wire.Subprotocol)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUpgradeRequired)
		fmt.Fprintf(w, "this peer speaks %s; the client offered %s\n", wire.Subprotocol, describe(offered))
		log.Info("refused session: protocol version mismatch", zap.String("remote", r.RemoteAddr), zap.Strings("offered", offered))
		return
	}
	cfg, err := srv.Config.withDefaults()
	if err != nil {
		http.Error(w, "tetherd: server misconfigured", http.StatusInternalServerError)
		log.Error("bad transport config", zap.Error(err))
		return
	}
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		refuse(w, http.StatusServiceUnavailable, 0, "tetherd: shutting down")
		return
	}
	if srv.active >= srv.maxSessions() {
		srv.mu.Unlock()
		log.Warn("refused session: too many sessions", zap.String("remote", r.RemoteAddr), zap.Int("limit", srv.maxSessions()))
		refuse(w, http.StatusServiceUnavailable, 10*time.Second,
			fmt.Sprintf("tetherd: too many sessions (limit %d); try again later", srv.maxSessions()))
		return
	}
	srv.active++
	srv.wg.Add(1)
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		srv.active--
		srv.mu.Unlock()
		srv.wg.Done()
	}()

	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{wire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		log.Info("refused session: bad upgrade", zap.String("remote", r.RemoteAddr), zap.Error(err))
		return
	}
	slog := log.With(zap.String("remote", r.RemoteAddr))
	s := newSession(conn, false, cfg, slog)
	if cc, ok := r.Context().Value(corkKey{}).(*corkConn); ok {
		s.cork = cc
	}
	s.onOpen = func(e entry, o wire.Open) { srv.handleOpen(s, e, o) }
	if !srv.track(s) {
		s.start()
		s.close(&SessionError{Reason: "server shutting down"})
		return
	}
	start := time.Now()
	srv.counters.sessions.Add(1)
	slog.Info("session started")
	s.start()
	<-s.done
	s.close(nil)
	st := s.Stats()
	srv.untrack(s, st)
	fields := []zap.Field{
		zap.Duration("duration", time.Since(start).Round(time.Millisecond)),
		zap.Uint64("bytes_up", st.BytesReceived), zap.Uint64("bytes_down", st.BytesSent),
		zap.Uint64("streams", st.StreamsTotal),
	}
	if err := s.Err(); err != nil {
		fields = append(fields, zap.Error(err))
	}
	slog.Info("session ended", fields...)
}

// authenticate checks the token, unless the source failed too often lately; it
// answers the request itself when it returns false. The token is never logged.
func (srv *Server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	if srv.Token == "" {
		return true
	}
	log := srv.logger()
	src, hasSrc := sourceOf(r.RemoteAddr)
	if srv.auth != nil && hasSrc {
		if wait := srv.auth.wait(src); wait > 0 {
			// Debug: a client hammering away must not flood the log (the 401s it got
			// first, at most AuthFailureBurst per interval, are logged at info).
			srv.counters.rateLimited.Add(1)
			log.Debug("refused session: too many failed authentications", zap.String("remote", r.RemoteAddr), zap.Duration("retry_after", wait))
			refuse(w, http.StatusTooManyRequests, wait, "tetherd: too many wrong tokens from this address; try again later")
			return false
		}
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	// Compare digests so the comparison takes the same time whatever the lengths.
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(srv.Token))
	if ok && subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
		if srv.auth != nil && hasSrc {
			srv.auth.succeed(src)
		}
		return true
	}
	if srv.auth != nil && hasSrc {
		srv.auth.fail(src)
	}
	msg := "tetherd: wrong token"
	if !ok {
		msg = "tetherd: missing token: send Authorization: Bearer TOKEN (the token= of the peer URI)"
	}
	srv.counters.refusedToken.Add(1)
	log.Info("refused session: bad or missing token", zap.String("remote", r.RemoteAddr), zap.Bool("token_sent", ok))
	w.Header().Set("WWW-Authenticate", `Bearer realm="tetherd"`)
	refuse(w, http.StatusUnauthorized, 0, msg)
	return false
}

// refuse answers a request that gets no session with status and msg, and closes the
// connection after it, so a client that keeps trying pays for a new connection each
// time. retry, when positive, is sent as Retry-After (whole seconds, rounded up).
func refuse(w http.ResponseWriter, status int, retry time.Duration, msg string) {
	h := w.Header()
	h.Set("Connection", "close")
	if retry > 0 {
		h.Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
	}
	http.Error(w, msg, status)
}

func offeredProtocols(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func describe(offered []string) string {
	if len(offered) == 0 {
		return "no subprotocol"
	}
	return strings.Join(offered, ", ")
}

func (srv *Server) track(s *session) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	if srv.sessions == nil {
		srv.sessions = make(map[*session]*int)
	}
	srv.sessions[s] = new(int)
	return true
}

// untrack removes an ended session and adds its final counters to the totals, both
// under mu, so Stats never counts it twice or not at all.
func (srv *Server) untrack(s *session, final Stats) {
	srv.mu.Lock()
	srv.counters.ended(final)
	delete(srv.sessions, s)
	srv.mu.Unlock()
}

// Sessions returns how many sessions are running.
func (srv *Server) Sessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

// Shutdown sends GOAWAY on every session, lets open streams finish until ctx is done,
// then closes what is left and waits for every goroutine the server started. New
// sessions are refused from the start.
func (srv *Server) Shutdown(ctx context.Context) error {
	list := srv.stopAccepting()
	var wg sync.WaitGroup
	for _, s := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.goAway(ctx, "server shutting down")
		}()
	}
	wg.Wait()
	srv.wg.Wait()
	return ctx.Err()
}

// stopAccepting refuses new sessions from now on and returns the running ones.
func (srv *Server) stopAccepting() []*session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.closing = true
	list := make([]*session, 0, len(srv.sessions))
	for s := range srv.sessions {
		list = append(list, s)
	}
	return list
}

// Close ends every session at once and waits for the server's goroutines.
func (srv *Server) Close() error {
	list := srv.stopAccepting()
	for _, s := range list {
		s.shutdown(&SessionError{Reason: "server closed"})
	}
	srv.wg.Wait()
	return nil
}

// handleOpen runs on the session's reader goroutine; the dial happens elsewhere.
func (srv *Server) handleOpen(s *session, e entry, o wire.Open) {
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		switch v := e.(type) {
		case *Stream:
			srv.serveTCP(s, v)
		case *Association:
			srv.serveAssoc(s, v)
		}
	}()
}

// reply answers an OPEN.
func (s *session) reply(id uint32, r wire.Reply) {
	_ = s.queuePri(func(b []byte) []byte { return wire.AppendReply(b, id, r) })
}

func (srv *Server) serveTCP(s *session, st *Stream) {
	log := s.log.With(zap.Uint32("stream", st.sid), zap.String("dst", st.dst.String()))
	ctx, cancel := context.WithTimeout(s.life, srv.dialTimeout())
	conn, addr, err := srv.dialTCP(ctx, st.dst)
	cancel()
	if err != nil {
		se := asStreamError(err)
		log.Info("refused stream", zap.String("proto", "tcp"), zap.Stringer("code", se.Code), zap.String("reason", se.Reason))
		st.mu.Lock()
		st.err = se
		st.mu.Unlock()
		s.openDone(st.dst) // the slot is free before the client hears
		s.reply(st.sid, wire.Reply{Code: se.Code, Reason: se.Reason})
		st.removeFromTable()
		return
	}
	s.openDone(st.dst) // the slot is free before the client hears
	s.reply(st.sid, wire.Reply{Code: wire.CodeOK, Addr: addr})
	srv.relay(st, conn)
}

// relay copies between a stream and a TCP connection until both directions finished,
// preserving half-close and turning an abort on either side into one on the other.
//
// Each direction runs only while it has bytes to move (see relay_unix.go): a relay
// whose flow is idle holds no goroutine and no buffer. Destinations without a raw
// socket (tests' pipes, other systems) keep this goroutine for the conn → stream
// direction.
func (srv *Server) relay(st *Stream, conn net.Conn) {
	if r := srv.newPumpRelay(st, conn); r != nil {
		r.start()
		return
	}
	down := make(chan struct{})
	p := pump.New(func() bool { return drainToConn(st, conn) }, func() { close(down) })
	st.OnReadable(p.Kick)
	p.Kick() // data that arrived before the dial finished
	err := srv.copyToStream(st, conn)
	endToStream(st, err)
	<-down
	st.OnReadable(nil)
	_ = st.Close()
	_ = conn.Close()
}

// drainToConn is the stream → conn direction's pump: it writes what the stream has
// to conn and reports whether the direction finished (FIN passed on, or conn
// aborted).
func drainToConn(st *Stream, conn net.Conn) bool {
	_, err := st.DrainTo(conn)
	switch {
	case err == nil:
		return false // everything buffered was written: wait for the next kick
	case err == io.EOF:
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			return true
		}
	}
	abort(conn)
	return true
}

// endToStream passes the end of the conn → stream direction on: EOF as FIN, a reset
// as a reset.
func endToStream(st *Stream, err error) {
	switch {
	case err == nil:
		_ = st.CloseWrite()
	case errors.Is(err, syscall.ECONNRESET):
		st.Reset(wire.CodeConnReset, "destination reset the connection")
	default:
		st.Reset(wire.CodeInternal, err.Error())
	}
}

// abort closes conn with a TCP RST where possible, so the destination sees an abort,
// not a clean end.
func abort(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// relayIdle is how long a destination may stay silent before its relay gives its read
// buffer back to the pool.
const relayIdle = time.Second

// copyToStream copies conn to st until EOF (then it returns nil), like io.Copy, but
// holds a pooled read buffer only while data flows, so that idle flows cost no
// buffer: once the destination has been silent for relayIdle it returns the buffer
// and waits with a one-byte read, sends that byte at once (holding it back for more
// would delay a lone keystroke), then reads with a buffer again.
func (srv *Server) copyToStream(st *Stream, conn net.Conn) error {
	var one [1]byte
	for {
		n, err := conn.Read(one[:])
		if n > 0 {
			if _, werr := st.Write(one[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		buf := srv.getRelayBuf(st.s)
		idle, err := copyBusy(st, conn, *buf)
		srv.putRelayBuf(st.s, buf)
		if !idle {
			return err
		}
		if err := conn.SetReadDeadline(time.Time{}); err != nil {
			return err
		}
	}
}

// getRelayBuf returns a 32 KiB read buffer while s holds less than RelayBuffers of
// them, else a 2 KiB one.
func (srv *Server) getRelayBuf(s *session) *[]byte {
	budget := srv.RelayBuffers
	if budget <= 0 {
		budget = defaultRelayBuffers
	}
	const big, bigClass = 32 << 10, 64 << 10 // what getBuf(big) takes from its pool
	srv.mu.Lock()
	held, ok := srv.sessions[s]
	ok = ok && *held+bigClass <= budget
	if ok {
		*held += bigClass
	}
	srv.mu.Unlock()
	if ok {
		return getBuf(big)
	}
	return getBuf(2 << 10)
}

// putRelayBuf gives back a buffer of getRelayBuf.
func (srv *Server) putRelayBuf(s *session, buf *[]byte) {
	if n := cap(*buf); n > 2<<10 {
		srv.mu.Lock()
		if held, ok := srv.sessions[s]; ok {
			*held -= n
		}
		srv.mu.Unlock()
	}
	putBuf(buf)
}

// copyBusy copies conn to st with buf until EOF (nil), an error, or relayIdle without
// data (idle true). A conn without read deadlines is copied until EOF or an error.
func copyBusy(st *Stream, conn net.Conn, buf []byte) (idle bool, err error) {
	var deadline time.Time
	for {
		// Move the deadline only when half of it has passed: one timer update per
		// half second, not one per read.
		if now := time.Now(); deadline.Sub(now) < relayIdle/2 {
			deadline = now.Add(relayIdle)
			if conn.SetReadDeadline(deadline) != nil {
				deadline = now.Add(1000 * time.Hour) // no deadlines: never idle
			}
		}
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return false, werr
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return false, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return true, nil
		default:
			return false, err
		}
	}
}

func (srv *Server) dialTimeout() time.Duration {
	if srv.DialTimeout > 0 {
		return srv.DialTimeout
	}
	return 10 * time.Second
}

// resolve returns the addresses of dst that the policy allows, or a *StreamError.
func (srv *Server) resolve(ctx context.Context, dst wire.Addr) ([]netip.Addr, error) {
	var ips []netip.Addr
	if dst.IP.IsValid() {
		ips = []netip.Addr{dst.IP}
	} else {
		lookup := srv.LookupNetIP
		if lookup == nil {
			lookup = net.DefaultResolver.LookupNetIP
		}
		var err error
		ips, err = lookup(ctx, "ip", dst.Name)
		if err != nil {
			var de *net.DNSError
			if errors.As(err, &de) && de.IsTimeout {
				return nil, &StreamError{Code: wire.CodeTimedOut, Reason: "resolving " + dst.Name + " timed out"}
			}
			return nil, &StreamError{Code: wire.CodeHostNotFound, Reason: "no address for " + dst.Name}
		}
	}
	var allowed []netip.Addr
	var firstDenial error
	for _, ip := range ips {
		if err := srv.Policy.Check(ip, dst.Port); err != nil {
			if firstDenial == nil {
				firstDenial = err
			}
			continue
		}
		allowed = append(allowed, ip.Unmap())
	}
	if len(allowed) == 0 {
		if firstDenial == nil {
			return nil, &StreamError{Code: wire.CodeHostNotFound, Reason: "no address for " + dst.String()}
		}
		return nil, firstDenial
	}
	return allowed, nil
}

func (srv *Server) dialTCP(ctx context.Context, dst wire.Addr) (net.Conn, wire.Addr, error) {
	if isResolver(dst) {
		return srv.dialResolver(ctx)
	}
	ips, err := srv.resolve(ctx, dst)
	if err != nil {
		return nil, wire.Addr{}, err
	}
	dial := srv.Dial
	if dial == nil {
		d := &net.Dialer{Control: srv.controlPolicy}
		dial = d.DialContext
	}
	var firstErr error
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip, dst.Port)
		conn, err := dial(ctx, "tcp", ap.String())
		if err == nil {
			return conn, wire.AddrFromAddrPort(ap), nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, wire.Addr{}, firstErr
}

// controlPolicy checks the policy once more on the address a socket is about to connect
// to, whatever resolved it.
func (srv *Server) controlPolicy(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	return srv.Policy.Check(ap.Addr(), ap.Port())
}

// asStreamError maps a dial error to the code the client sees.
func asStreamError(err error) *StreamError {
	var se *StreamError
	if errors.As(err, &se) {
		return se
	}
	code := wire.CodeInternal
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		code = wire.CodeRefused
	case errors.Is(err, syscall.ENETUNREACH):
		code = wire.CodeNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		code = wire.CodeHostUnreach
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		code = wire.CodeTimedOut
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		code = wire.CodeDenied
	case errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EADDRNOTAVAIL):
		code = wire.CodeNetUnreachable
	}
	reason := err.Error()
	if len(reason) > 200 {
		reason = reason[:200]
	}
	return &StreamError{Code: code, Reason: reason}
}

// ServerTLSConfig returns the TLS configuration a peer serves cert with: TLS 1.3 and
// HTTP/1.1 only (the WebSocket upgrade needs HTTP/1.1).
func ServerTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"http/1.1"},
	}
}
