package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/tetherd/tetherd/transport/wire"
)

// DialOptions configures Dial. A nil *DialOptions means all defaults.
type DialOptions struct {
	// Token is the bearer token; it overrides a token given in the URI.
	Token string
	// Pin is the peer certificate's "sha256:…" SPKI pin; it overrides a pin in the
	// URI. With a pin, the certificate chain and host name are not checked.
	Pin string
	// TLSConfig is the base TLS configuration (root CAs, client certificates). It is
	// cloned, never modified.
	TLSConfig *tls.Config
	// Control is called on the tunnel's socket before it connects: set SO_MARK on
	// Linux, IP_BOUND_IF on macOS, or call VpnService.protect on Android here, so the
	// tunnel's own connection is never routed into the tunnel.
	Control func(network, address string, c syscall.RawConn) error
	// NetDialContext, if set, replaces the TCP dialer entirely (Control is then not
	// used).
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Header holds extra HTTP headers for the upgrade request.
	Header http.Header
	// Config sets the session's limits and timers.
	Config *Config
	// Logger receives the session's logs; nil discards them.
	Logger *zap.Logger
}

// Session is a client's connection to a peer. Open streams with OpenTCP and
// associations with OpenUDP; a Session is safe for concurrent use.
type Session struct {
	s *session
}

// Dial connects to the peer at uri — "tether://host:port?token=…&pin=sha256:…",
// "wss://…" or "ws://…" — and returns a running session once the peer has accepted the
// WebSocket and sent its SETTINGS. A wrong token, a peer that speaks another protocol
// version, or a certificate that does not match the pin fails here with an error that
// says so.
func Dial(ctx context.Context, uri string, opts *DialOptions) (_ *Session, err error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	u, err := ParsePeerURI(uri)
	if err != nil {
		return nil, uriError{err}
	}
	if o.Token == "" {
		o.Token = u.Token
	}
	if o.Pin == "" {
		o.Pin = u.Pin
	}
	cfg, err := o.Config.withDefaults()
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("dial %s: %w", u.Redacted(), err)
		}
	}()

	tlsConf := o.TLSConfig
	if o.Pin != "" {
		if tlsConf, err = PinnedTLSConfig(o.TLSConfig, o.Pin); err != nil {
			return nil, err
		}
	} else if tlsConf != nil {
		tlsConf = tlsConf.Clone()
	} else {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsConf.NextProtos = []string{"http/1.1"}

	dialTCP := o.NetDialContext
	if dialTCP == nil {
		d := &net.Dialer{Control: o.Control, KeepAlive: -1}
		dialTCP = d.DialContext
	}
	var cork *corkConn
	var corkMu sync.Mutex
	keep := func(c *corkConn) net.Conn {
		corkMu.Lock()
		cork = c
		corkMu.Unlock()
		return c
	}
	tr := &http.Transport{
		Proxy: nil, // never through an HTTP proxy: this connection is the proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialTCP(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return keep(newCorkConn(c, nil)), nil
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialTCP(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			raw := newCorkConn(c, nil)
			conf := tlsConf.Clone()
			if conf.ServerName == "" {
				conf.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(raw, conf)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return keep(newCorkConn(tc, raw)), nil
		},
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		ResponseHeaderTimeout: 30 * time.Second,
	}
	defer tr.CloseIdleConnections()

	header := http.Header{}
	for k, v := range o.Header {
		header[k] = v
	}
	if o.Token != "" {
		header.Set("Authorization", "Bearer "+o.Token)
	}
	conn, resp, err := websocket.Dial(ctx, u.URL, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		HTTPHeader:      header,
		Subprotocols:    []string{wire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, upgradeError(resp, err)
	}
	if conn.Subprotocol() != wire.Subprotocol {
		conn.Close(websocket.StatusProtocolError, "client speaks "+wire.Subprotocol)
		return nil, fmt.Errorf("%w: peer does not speak %s (it selected subprotocol %q)", ErrVersionMismatch, wire.Subprotocol, conn.Subprotocol())
	}
	s := newSession(conn, true, cfg, log)
	corkMu.Lock()
	if cork != nil {
		s.cork = cork
	}
	corkMu.Unlock()
	s.start()
	select {
	case <-s.peerSettings:
	case <-s.done:
		s.close(nil)
		return nil, s.errOr(ErrSessionClosed)
	case <-ctx.Done():
		s.close(nil)
		return nil, ctx.Err()
	}
	return &Session{s: s}, nil
}

// upgradeError turns a failed upgrade into an error that says what to do.
func upgradeError(resp *http.Response, err error) error {
	if resp == nil {
		return err
	}
	var body string
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		body = strings.TrimSpace(string(b))
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w (HTTP 401): check the token in the peer URI", ErrUnauthorized)
	case http.StatusUpgradeRequired:
		return fmt.Errorf("%w (HTTP 426): %s", ErrVersionMismatch, body)
	case http.StatusTooManyRequests:
		return fmt.Errorf("peer is rate-limiting this client (HTTP 429): %s", body)
	}
	if body != "" {
		return fmt.Errorf("peer answered HTTP %d: %s", resp.StatusCode, body)
	}
	return fmt.Errorf("peer answered HTTP %d: %w", resp.StatusCode, err)
}

// OpenTCP opens a TCP stream to dst through the peer and returns once the peer has
// connected to it. When the peer could not, the error is a *StreamError whose Code says
// why (errors.Is(err, syscall.ECONNREFUSED) works).
func (c *Session) OpenTCP(ctx context.Context, dst wire.Addr) (*Stream, error) {
	e, err := c.start(func(id uint32) entry { return newStream(c.s, id, dst) }, wire.ProtoTCP, dst)
	if err != nil {
		return nil, err
	}
	st := e.(*Stream)
	if err := c.open(ctx, st.opened, func() error { return st.openErr }, func() {
		st.Reset(wire.CodeCanceled, "open canceled")
	}, st.removeFromTable); err != nil {
		return nil, err
	}
	return st, nil
}

// OpenUDP opens a UDP association. dst is the first destination (used by the peer's
// policy check and to pick the address family); datagrams may go to any destination.
func (c *Session) OpenUDP(ctx context.Context, dst wire.Addr) (*Association, error) {
	return c.openAssoc(ctx, wire.ProtoUDP, dst)
}

// OpenICMP opens an ICMP echo association to dst (see docs/protocol.md).
func (c *Session) OpenICMP(ctx context.Context, dst wire.Addr) (*Association, error) {
	return c.openAssoc(ctx, wire.ProtoICMP, dst)
}

func (c *Session) openAssoc(ctx context.Context, proto wire.Proto, dst wire.Addr) (*Association, error) {
	e, err := c.start(func(id uint32) entry { return newAssociation(c.s, id, proto, dst) }, proto, dst)
	if err != nil {
		return nil, err
	}
	a := e.(*Association)
	if err := c.open(ctx, a.opened, func() error { return a.openErr }, func() {
		_ = a.Close()
	}, a.removeFromTable); err != nil {
		return nil, err
	}
	return a, nil
}

// start registers a new entry made by mk under the next id and queues its OPEN, as
// one step: the peer ends the session when OPENs arrive out of id order, and
// concurrent opens would otherwise queue theirs in any order.
func (c *Session) start(mk func(id uint32) entry, proto wire.Proto, dst wire.Addr) (entry, error) {
	c.s.openMu.Lock()
	defer c.s.openMu.Unlock()
	e, err := c.s.register(mk, proto == wire.ProtoTCP)
	if err != nil {
		return nil, err
	}
	var ferr error
	err = c.s.queuePri(func(b []byte) []byte {
		out, err := wire.AppendOpen(b, e.id(), wire.Open{Proto: proto, Dst: dst})
		ferr = err
		return out
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		if r, ok := e.(interface{ removeFromTable() }); ok {
			r.removeFromTable()
		}
		return nil, err
	}
	return e, nil
}

// open waits for the REPLY to an OPEN that start queued.
func (c *Session) open(ctx context.Context, opened <-chan struct{}, openErr func() error, cancel, remove func()) error {
	select {
	case <-opened:
		if err := openErr(); err != nil {
			remove()
			return err
		}
		return nil
	case <-ctx.Done():
		cancel()
		return ctx.Err()
	}
}

// Ping sends a PING and returns the round-trip time.
func (c *Session) Ping(ctx context.Context) (time.Duration, error) { return c.s.Ping(ctx) }

// RTT returns the smoothed round-trip time of the session's pings, 0 before the first.
func (c *Session) RTT() time.Duration { return c.s.rtt.smoothedRTT() }

// Stats returns the session's counters.
func (c *Session) Stats() Stats { return c.s.Stats() }

// Done returns a channel that is closed when the session has ended.
func (c *Session) Done() <-chan struct{} { return c.s.done }

// GoingAway returns a channel that is closed when the peer announced a graceful
// shutdown (GOAWAY): open streams finish, new ones must go to a new session.
func (c *Session) GoingAway() <-chan struct{} { return c.s.goAwayRecv }

// Err returns why the session ended: nil while it runs and after a clean close.
func (c *Session) Err() error { return c.s.Err() }

// Close ends the session at once: every stream is reset locally and the peer is told.
// It waits for the session's goroutines.
func (c *Session) Close() error {
	c.s.close(nil)
	return nil
}

// Shutdown announces GOAWAY (no new streams), waits for the open streams to finish
// or ctx to be done, then closes the session. The session's datagram associations
// end at once (the application's next datagram opens one on another session).
func (c *Session) Shutdown(ctx context.Context) error {
	return c.s.goAway(ctx, "client closing this session")
}

// errOr returns the session's error or def.
func (s *session) errOr(def error) error {
	if err := s.Err(); err != nil {
		return err
	}
	return def
}

// corkConn coalesces writes. coder/websocket's client masks payloads through a 4 KiB
// buffer and so writes a large message in 4 KiB pieces, one system call each; corked,
// those pieces collect here and go out in one write when the session's writer has
// finished a round (Flush). Uncorked, writes pass straight through, so control frames
// the library writes by itself are never held back. next, if set, is a corkConn below
// this one (the raw TCP socket under TLS): it is corked and flushed along, so TLS
// records are coalesced too.
type corkConn struct {
	net.Conn
	next   *corkConn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

func newCorkConn(c net.Conn, next *corkConn) *corkConn { return &corkConn{Conn: c, next: next} }

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > corkMax && len(c.buf) > 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= corkMax {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

const corkMax = 1 << 20

// Cork starts collecting writes.
func (c *corkConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
	if c.next != nil {
		c.next.Cork()
	}
}

// Flush writes what was collected and uncorks.
func (c *corkConn) Flush() error {
	c.mu.Lock()
	err := c.flushLocked()
	c.corked = false
	c.mu.Unlock()
	if c.next != nil {
		if err2 := c.next.Flush(); err == nil {
			err = err2
		}
	}
	return err
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 2*corkMax {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}
