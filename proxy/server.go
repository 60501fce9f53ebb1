package proxy

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// Credentials are the username and password a client must present: SOCKS5
// username/password (RFC 1929) or HTTP Basic in Proxy-Authorization.
type Credentials struct {
	// User is the user name.
	User string
	// Password is the password; compared in constant time.
	Password string
}

// match compares in constant time.
func (c *Credentials) match(user, password string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(c.User))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(c.Password))
	return u&p == 1
}

// Server is a SOCKS5 and HTTP proxy whose connections go through a tether.v1
// session. Set the fields before Serve and do not change them after.
type Server struct {
	// Session returns the live session; it is called for every new connection
	// (Sessions.Session fits). Required.
	Session func(ctx context.Context) (*transport.Session, error)
	// Auth, when set, is required from every client; nil: no authentication.
	Auth *Credentials
	// AllowOpen lets Serve run without Auth on a listener that is not loopback.
	AllowOpen bool
	// HandshakeTimeout bounds the SOCKS negotiation and the reading of each HTTP
	// request head. Default 30 s.
	HandshakeTimeout time.Duration
	// OpenTimeout bounds each stream open through the session. Default 30 s.
	OpenTimeout time.Duration
	// Logger receives a line per failed connection; nil discards.
	Logger *zap.Logger

	flowsOnce sync.Once
	flows     *flowtab.Table // open upstream streams and associations

	mu     sync.Mutex
	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	lns    map[net.Listener]struct{}
	closed bool
	wg     sync.WaitGroup // connection goroutines

	tcpTotal, udpTotal, tcpFailed atomic.Uint64
}

// ErrOpenProxy is returned by Serve for a listener beyond loopback without Auth and
// without AllowOpen.
var ErrOpenProxy = errors.New("proxy: refusing to listen beyond loopback without authentication (set credentials, or allow an open proxy explicitly)")

// CheckListen reports ErrOpenProxy when addr is not a loopback address and neither
// auth nor allowOpen is set.
func CheckListen(addr net.Addr, auth *Credentials, allowOpen bool) error {
	if auth != nil || allowOpen {
		return nil
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil && ap.Addr().IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrOpenProxy, addr)
}

func (s *Server) init() error {
	if s.closed {
		return net.ErrClosed
	}
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.lns = map[net.Listener]struct{}{}
	}
	return nil
}

func (s *Server) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return 30 * time.Second
}

// Serve accepts connections on ln and serves each on its own goroutine until ln is
// closed or Close is called; it returns nil after Close, else the accept error. It
// does not close ln on return unless Close was called. Connections stay open after
// Serve returns until they end or Close is called.
func (s *Server) Serve(ln net.Listener) error {
	if s.Session == nil {
		return errors.New("proxy: Server needs Session")
	}
	if err := CheckListen(ln.Addr(), s.Auth, s.AllowOpen); err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.init(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.lns[ln] = struct{}{}
	ctx := s.ctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) {
				// Out of descriptors or an aborted handshake: wait and go on.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

// Close stops every Serve, closes every connection, and waits for their goroutines.
// It does not close the session.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// serveConn detects the protocol and serves c; c is closed when it returns or when
// ctx ends.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()

	log := s.logger().With(zap.Stringer("client", c.RemoteAddr()))
	_ = c.SetReadDeadline(time.Now().Add(s.handshakeTimeout()))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	if first[0] == socksVersion {
		err = s.serveSOCKS(ctx, c, br, log)
	} else {
		err = s.serveHTTP(ctx, c, br, log)
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		log.Debug("connection ended", zap.Error(err))
	}
}

// table returns the flow table, creating it on first use.
func (s *Server) table() *flowtab.Table {
	s.flowsOnce.Do(func() { s.flows = flowtab.New() })
	return s.flows
}

// Flows returns the proxy's open flows, oldest first: one per upstream TCP stream
// (a CONNECT, or the kept-alive stream of http:// requests to one host) and one per
// UDP ASSOCIATE once it carried a datagram. Src is the proxy client's address, Dst
// the destination as the client named it.
func (s *Server) Flows() []flowtab.Info { return s.table().List() }

// Stats returns the proxy's counters.
func (s *Server) Stats() Stats {
	tab := s.table()
	st := Stats{TCPActive: tab.Count("tcp"), UDPActive: tab.Count("udp")}
	st.TCPTotal = s.tcpTotal.Load()
	st.UDPTotal = s.udpTotal.Load()
	st.TCPFailed = s.tcpFailed.Load()
	return st
}

// Stats are a proxy's counters.
type Stats struct {
	// TCPActive and UDPActive are the flows open now.
	TCPActive, UDPActive int
	// TCPTotal and UDPTotal count the flows opened since start; TCPFailed the
	// streams that could not be opened (refused, unreachable, denied, no session).
	TCPTotal, UDPTotal, TCPFailed uint64
}

// flowStream is an upstream stream and its flow: closing it ends both.
type flowStream struct {
	*transport.Stream
	f *flowtab.Flow
}

// Close closes the stream and removes its flow from the table.
func (u *flowStream) Close() error {
	u.f.Close()
	return u.Stream.Close()
}

// open opens a TCP stream to dst on the live session for the client c. The returned
// log carries the flow id.
func (s *Server) open(ctx context.Context, c net.Conn, dst wire.Addr, log *zap.Logger) (*flowStream, *zap.Logger, error) {
	f := s.table().StartNamed("tcp", c.RemoteAddr().String(), dst.String())
	log = log.With(zap.Uint64("flow", f.ID()))
	t := s.OpenTimeout
	if t <= 0 {
		t = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	sess, err := s.Session(ctx)
	if err == nil {
		var st *transport.Stream
		if st, err = sess.OpenTCP(ctx, dst); err == nil {
			s.tcpTotal.Add(1)
			f.Open()
			log.Debug("tcp flow open", zap.Stringer("dst", dst), zap.Uint32("stream", st.ID()))
			return &flowStream{Stream: st, f: f}, log, nil
		}
	}
	s.tcpFailed.Add(1)
	return nil, log, err
}

// closeWriter is a connection that can half-close.
type closeWriter interface{ CloseWrite() error }

// relay copies both ways between the client c (read through cr, which may hold
// buffered bytes) and the upstream stream up, preserving half-close and counting the
// bytes of its flow; an error in either direction ends both. It closes up.
func relay(c net.Conn, cr io.Reader, up *flowStream, log *zap.Logger) {
	var wg sync.WaitGroup
	done := func(dst net.Conn, err error) {
		if err != nil {
			c.Close()
			up.Close()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Go(func() {
		_, err := io.Copy(flowtab.Writer{W: up.Stream, Add: up.f.AddOut}, cr)
		done(up, err)
	})
	// Counting on the writer side keeps the stream's WriteTo.
	_, err := io.Copy(flowtab.Writer{W: c, Add: up.f.AddIn}, up.Stream)
	done(c, err)
	wg.Wait()
	up.Close()
	out, in := up.f.Bytes()
	log.Debug("tcp flow closed", zap.Uint64("bytes_out", out), zap.Uint64("bytes_in", in), zap.Duration("age", up.f.Age()))
}
