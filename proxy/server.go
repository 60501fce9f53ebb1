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
	"syscall"
	"time"

	"go.uber.org/zap"

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

	mu     sync.Mutex
	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	lns    map[net.Listener]struct{}
	closed bool
	wg     sync.WaitGroup // connection goroutines
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

// open opens a TCP stream to dst on the live session.
func (s *Server) open(ctx context.Context, dst wire.Addr) (*transport.Stream, error) {
	t := s.OpenTimeout
	if t <= 0 {
		t = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	sess, err := s.Session(ctx)
	if err != nil {
		return nil, err
	}
	return sess.OpenTCP(ctx, dst)
}

// closeWriter is a connection that can half-close.
type closeWriter interface{ CloseWrite() error }

// relay copies both ways between the client c (read through cr, which may hold
// buffered bytes) and the upstream stream up, preserving half-close; an error in
// either direction ends both. It closes up.
func relay(c net.Conn, cr io.Reader, up *transport.Stream) {
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
		_, err := io.Copy(up, cr)
		done(up, err)
	})
	_, err := io.Copy(c, up)
	done(c, err)
	wg.Wait()
	up.Close()
}
