package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/netstack"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// ClientOptions configures a Client.
type ClientOptions struct {
	// TUN is the device the client serves; the client owns it from New on and closes
	// it. It may come from tun.CreateTUN, or from a file descriptor handed over by
	// Android's VpnService (tun.CreateUnmonitoredTUNFromFD).
	TUN tun.Device
	// Dial opens a session to the peer. The daemon calls it at start and again
	// whenever the session is lost.
	Dial func(ctx context.Context) (*transport.Session, error)
	// DNS lists the resolver addresses inside the TUN network: DNS to them (port 53,
	// UDP and TCP) is answered by the peer's own resolver.
	DNS []netip.Addr
	// HijackDNS sends every port-53 query to the peer's resolver, whatever its
	// destination.
	HijackDNS bool
	// NetworkChanged, if set, signals that the machine's links or routes changed
	// (netlink events on Linux): a lost session is redialed at once instead of after
	// its backoff, and a live one is probed.
	NetworkChanged <-chan struct{}
	// SessionWait is how long a new connection waits for the tunnel while it is
	// reconnecting before it fails. Default 5 s.
	SessionWait time.Duration
	// PeerName and TUNName are shown by Status (give the peer URI redacted).
	PeerName, TUNName string
	// Netstack holds the netstack's options (its Logger is set from Logger).
	Netstack netstack.Options
	// Logger receives the client's logs; nil discards them.
	Logger *zap.Logger
}

// Client is the laptop side: it runs a netstack on a TUN device and carries its flows
// over a session to the peer, reconnecting when the session is lost.
type Client struct {
	opts ClientOptions
	log  *zap.Logger

	mu      sync.Mutex
	cur     *transport.Session
	changed chan struct{} // closed and replaced whenever cur changes
	stack   *netstack.Stack
	status  statusState
}

// NewClient checks opts and returns a client; Run starts it.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.TUN == nil || opts.Dial == nil {
		return nil, errors.New("daemon: ClientOptions needs TUN and Dial")
	}
	if opts.SessionWait == 0 {
		opts.SessionWait = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Client{opts: opts, log: log, changed: make(chan struct{})}, nil
}

// Run connects to the peer, starts the netstack and calls ready (if not nil); then it
// keeps the tunnel up until ctx is done. It returns at once when the first connection
// attempt fails for good (a rejected token, a pin mismatch, another protocol version:
// see transport.Permanent), so the caller can report it and restore the system. When
// the peer is only unreachable — no network yet, the phone away — it starts anyway
// and connects when it can; later losses are reconnected with exponential backoff, at
// once when NetworkChanged fires. When Run returns, the netstack and the TUN are
// closed.
func (c *Client) Run(ctx context.Context, ready func()) error {
	s, err := c.opts.Dial(ctx)
	if err != nil {
		if transport.Permanent(err) || ctx.Err() != nil {
			c.opts.TUN.Close()
			return err
		}
		c.log.Warn("the peer is not reachable yet; connecting when it is", zap.Error(err))
		c.status.mu.Lock()
		c.status.lastError = err.Error()
		c.status.mu.Unlock()
		s = nil
	} else {
		c.setSession(s)
		c.status.mu.Lock()
		c.status.connectedSince = time.Now()
		c.status.mu.Unlock()
	}
	nsOpts := c.opts.Netstack
	nsOpts.Logger = c.log.Named("netstack")
	st, err := netstack.New(c.opts.TUN, handler{c}, nsOpts)
	if err != nil {
		if s != nil {
			s.Close()
		}
		c.opts.TUN.Close()
		return err
	}
	c.mu.Lock()
	c.stack = st
	c.mu.Unlock()
	if ready != nil {
		ready()
	}
	var draining []*transport.Session // sessions the peer is taking down gracefully
	// A session found dead is closed in the background: Close waits for the
	// WebSocket close handshake (up to seconds on a path that is gone), and the
	// reconnect must not wait for it. So is one left behind by a network change,
	// once its streams ended. Run waits for these closes before returning.
	var closing sync.WaitGroup
	defer closing.Wait()
	closeDead := func(s *transport.Session) { closing.Go(func() { s.Close() }) }
	defer func() {
		st.Close()
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		if cur != nil {
			cur.Close()
		}
		for _, d := range draining {
			d.Close()
		}
	}()
	// Housekeeping (rates, memory, draining sessions) every second while anything
	// changes, stretching to every 5 s while the tunnel is idle: an idle tunnel then
	// hardly wakes the CPU.
	var pace Pacer
	tick := time.NewTimer(pace.Next(true))
	defer tick.Stop()
	var mem MemoryReturner
	hadSession := s != nil
	for {
		if s == nil {
			if s = c.reconnect(ctx); s == nil {
				return nil
			}
			c.connected(s, hadSession)
			hadSession = true
			draining = c.reapDraining(draining)
		}
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			moved := c.sampleRates(now)
			ns := st.Stats()
			watch := mem.Observe(ns.TCPActive + ns.UDPActive)
			draining = c.reapDraining(draining)
			tick.Reset(pace.Next(moved || watch || len(draining) > 0))
			continue
		case <-c.opts.NetworkChanged:
			// The path may have changed under the session: check it answers, and
			// if it does not answer at once, try a new one meanwhile.
			fresh, alive, err := c.probe(ctx, s, closeDead)
			if alive || ctx.Err() != nil {
				continue
			}
			if fresh != nil {
				// New flows take the new path now. The old session keeps its
				// streams while it lives (its path may come back; keepalive ends it
				// if not) and closes after the last: a GOAWAY tells the peer so,
				// or a path that came back would keep it up for good.
				c.log.Info("network changed and the peer did not answer at once; moved to a new session", zap.Error(err))
				draining = append(draining, s)
				old := s
				closing.Go(func() { _ = old.Shutdown(ctx) })
				s = fresh
				c.connected(s, true)
				continue
			}
			c.log.Info("network changed and the peer does not answer; reconnecting", zap.Error(err))
			closeDead(s)
			c.sessionEnded(s)
		case <-s.Done():
			c.log.Warn("tunnel lost; reconnecting", zap.Error(s.Err()))
			closeDead(s)
			c.sessionEnded(s)
		case <-s.GoingAway():
			// The peer is shutting down gracefully: its open streams finish on
			// the old session while new flows go to a new one at once.
			c.log.Info("peer is going away; opening a new session")
			draining = append(draining, s)
		}
		c.setSession(nil)
		s = nil
	}
}

// connected makes s the session new flows take, a reconnect when again.
func (c *Client) connected(s *transport.Session, again bool) {
	c.setSession(s)
	c.status.mu.Lock()
	c.status.connectedSince = time.Now()
	if again {
		c.status.reconnects++
	}
	c.status.mu.Unlock()
	c.log.Info("tunnel is connected")
}

// reapDraining closes the draining sessions that ended and returns the others.
func (c *Client) reapDraining(draining []*transport.Session) []*transport.Session {
	live := draining[:0]
	for _, d := range draining {
		select {
		case <-d.Done():
			d.Close()
			c.sessionEnded(d)
		default:
			live = append(live, d)
		}
	}
	clear(draining[len(live):])
	return live
}

// probeTimeout bounds how long a session may take to answer a ping after a network
// change before it counts as dead.
const probeTimeout = 3 * time.Second

// probe checks whether s still answers after a network change. If no answer comes
// within a short grace (4 round trips, between 250 ms and 1 s), it dials a new
// session while the ping keeps waiting, so that an address change costs a dial, not
// the whole probe timeout: alive when the old session answered first (a new one,
// if any, is closed), fresh when the new one was up first, neither when both
// failed (err says why the old one is taken for dead). discard closes an unused new
// session in the background.
func (c *Client) probe(ctx context.Context, s *transport.Session, discard func(*transport.Session)) (fresh *transport.Session, alive bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	pong := make(chan error, 1)
	go func() { _, err := s.Ping(pctx); pong <- err }()
	grace := min(max(4*s.Stats().RTT, 250*time.Millisecond), time.Second)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-pong:
		return nil, err == nil, err
	case <-t.C:
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	dialed := make(chan *transport.Session, 1)
	go func() {
		ns, err := c.opts.Dial(dctx)
		if err != nil {
			ns = nil
		}
		dialed <- ns
	}()
	select {
	case err := <-pong:
		if err == nil {
			dcancel()
			if ns := <-dialed; ns != nil {
				discard(ns) // unused; its close handshake must not hold us up
			}
			return nil, true, nil
		}
		return <-dialed, false, err
	case ns := <-dialed:
		if ns == nil {
			err := <-pong
			return nil, err == nil, err
		}
		cancel()
		<-pong
		return ns, false, fmt.Errorf("no answer within %v", grace)
	}
}

// reconnect dials until it succeeds or ctx is done, with exponential backoff and jitter
// capped at 5 s.
func (c *Client) reconnect(ctx context.Context) *transport.Session {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := c.opts.Dial(dctx)
		cancel()
		if err == nil {
			return s
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.Info("reconnect failed", zap.Int("attempt", attempt), zap.Duration("retry_in", wait), zap.Error(err))
		c.status.mu.Lock()
		c.status.lastError = err.Error()
		c.status.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
			backoff = min(2*backoff, 5*time.Second)
		case <-c.opts.NetworkChanged:
			t.Stop()
			backoff = 250 * time.Millisecond // a new network: try at once
		}
	}
}

func (c *Client) setSession(s *transport.Session) {
	c.mu.Lock()
	c.cur = s
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Session returns the live session, waiting up to SessionWait for one while the tunnel
// reconnects.
func (c *Client) Session(ctx context.Context) (*transport.Session, error) {
	timer := time.NewTimer(c.opts.SessionWait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		s, ch := c.cur, c.changed
		c.mu.Unlock()
		if s != nil {
			select {
			case <-s.Done():
			default:
				return s, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, errors.New("daemon: the tunnel is down (reconnecting)")
		}
	}
}

// Stats returns the netstack's counters and those of the current session.
func (c *Client) Stats() (netstack.Stats, transport.Stats) {
	c.mu.Lock()
	st, s := c.stack, c.cur
	c.mu.Unlock()
	var ns netstack.Stats
	var ts transport.Stats
	if st != nil {
		ns = st.Stats()
	}
	if s != nil {
		ts = s.Stats()
	}
	return ns, ts
}

// dest maps a flow's destination to what the peer is asked for: DNS to the tunnel's
// resolver addresses (or any port-53 destination with HijackDNS) becomes the peer's own
// resolver.
func (c *Client) dest(dst netip.AddrPort) (wire.Addr, bool) {
	if dst.Port() == 53 {
		if c.opts.HijackDNS {
			return wire.Addr{Name: wire.ResolverName, Port: 53}, true
		}
		for _, a := range c.opts.DNS {
			if a == dst.Addr().Unmap() {
				return wire.Addr{Name: wire.ResolverName, Port: 53}, true
			}
		}
	}
	return wire.AddrFromAddrPort(dst), false
}

// handler adapts the transport to the netstack.
type handler struct{ c *Client }

func (h handler) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	s, err := h.c.Session(ctx)
	if err != nil {
		return nil, err
	}
	to, _ := h.c.dest(dst)
	st, err := s.OpenTCP(ctx, to)
	if err != nil {
		return nil, err
	}
	h.logCarrier(ctx, "tcp", st.ID())
	return streamConn{st}, nil
}

// logCarrier logs which stream carries a flow: the flow id is on the netstack's lines,
// the stream id on the transport's and the peer's.
func (h handler) logCarrier(ctx context.Context, proto string, stream uint32) {
	if id, ok := flowtab.IDFrom(ctx); ok && h.c.log.Core().Enabled(zap.DebugLevel) {
		h.c.log.Debug(proto+" flow carried by stream", zap.Uint64("flow", id), zap.Uint32("stream", stream))
	}
}

func (h handler) DialUDP(ctx context.Context, src, dst netip.AddrPort) (netstack.PacketConn, error) {
	s, err := h.c.Session(ctx)
	if err != nil {
		return nil, err
	}
	to, _ := h.c.dest(dst)
	a, err := s.OpenUDP(ctx, to)
	if err != nil {
		return nil, err
	}
	h.logCarrier(ctx, "udp", a.ID())
	return &assocConn{c: h.c, a: a}, nil
}

func (h handler) DialPing(ctx context.Context, src, dst netip.Addr) (netstack.PacketConn, error) {
	s, err := h.c.Session(ctx)
	if err != nil {
		return nil, err
	}
	a, err := s.OpenICMP(ctx, wire.Addr{IP: dst.Unmap()})
	if err != nil {
		return nil, err
	}
	return &assocConn{c: h.c, a: a}, nil
}

var _ netstack.Pinger = handler{}

// streamConn gives a stream the Abort the netstack uses to pass a reset on.
type streamConn struct{ *transport.Stream }

func (s streamConn) Abort() { s.Reset(wire.CodeConnReset, "reset by the application") }

// assocConn adapts an association to netstack.PacketConn, translating the peer
// resolver's name back into the address the application asked.
type assocConn struct {
	c       *Client
	a       *transport.Association
	mu      sync.Mutex
	dnsDest netip.AddrPort // the address the application sent its last DNS query to
}

func (p *assocConn) WriteTo(b []byte, dst netip.AddrPort) error {
	to, dns := p.c.dest(dst)
	if dns {
		p.mu.Lock()
		p.dnsDest = dst
		p.mu.Unlock()
	}
	return p.a.WriteToAddr(b, to)
}

func (p *assocConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		n, from, err := p.a.ReadFromAddr(b)
		if err != nil {
			return 0, netip.AddrPort{}, err
		}
		if from.IP.IsValid() {
			return n, from.AddrPort(), nil
		}
		if from.Name == wire.ResolverName {
			p.mu.Lock()
			d := p.dnsDest
			p.mu.Unlock()
			if d.IsValid() {
				return n, d, nil
			}
		}
		// A source given as a name the application never asked: nothing to
		// deliver it as.
	}
}

func (p *assocConn) Close() error { return p.a.Close() }

// WaitRead lets the netstack wait for a datagram without holding a buffer.
func (p *assocConn) WaitRead() error { return p.a.WaitRead() }

var _ netstack.ReadWaiter = (*assocConn)(nil)
