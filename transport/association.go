package transport

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tetherd/tetherd/transport/wire"
)

// Association is a UDP (or ICMP echo) association: a net.PacketConn whose datagrams
// travel in DGRAM frames, outside stream flow control. Sending never blocks: when the
// session's datagram queue is full the datagram is dropped and counted. Received
// datagrams wait in a bounded queue; when it is full, new ones are dropped and counted.
//
// On the client, WriteTo sends to a destination and ReadFrom returns the source of each
// reply; on the server side of a session the roles are the same with directions
// swapped.
type Association struct {
	s     *session
	sid   uint32
	proto wire.Proto
	dst   wire.Addr

	mu      sync.Mutex
	queue   []dgram
	dropped uint64
	err     error
	closed  bool
	removed bool
	openState
	readable notify
	closeCh  chan struct{}
	rd       *deadline
}

type dgram struct {
	buf  *[]byte
	addr wire.Addr
}

var _ net.PacketConn = (*Association)(nil)

func newAssociation(s *session, id uint32, proto wire.Proto, dst wire.Addr) *Association {
	return &Association{
		s:         s,
		sid:       id,
		proto:     proto,
		dst:       dst,
		openState: openState{opened: make(chan struct{})},
		readable:  newNotify(),
		closeCh:   make(chan struct{}),
		rd:        newDeadline(),
	}
}

func (a *Association) id() uint32 { return a.sid }

// ID returns the association's id within its session.
func (a *Association) ID() uint32 { return a.sid }

// Proto returns wire.ProtoUDP or wire.ProtoICMP.
func (a *Association) Proto() wire.Proto { return a.proto }

// Destination returns the first destination given when the association was opened.
func (a *Association) Destination() wire.Addr { return a.dst }

// maxQueued is how many received datagrams may wait for ReadFrom.
func (a *Association) maxQueued() int { return max(16, a.s.cfg.DgramQueue/1024) }

func (a *Association) onDgram(from wire.Addr, data []byte) {
	a.mu.Lock()
	if a.closed || a.err != nil || len(a.queue) >= a.maxQueued() {
		a.dropped++
		a.mu.Unlock()
		a.s.dgramsDropped.Add(1)
		return
	}
	buf := getBuf(len(data))
	copy(*buf, data)
	a.queue = append(a.queue, dgram{buf: buf, addr: from})
	a.mu.Unlock()
	a.readable.signal()
}

func (a *Association) onReply(r wire.Reply) {
	a.mu.Lock()
	dup, err := a.settle(r)
	if err != nil {
		a.err = err
	}
	a.mu.Unlock()
	if dup {
		a.s.shutdown(protoErrorf("second REPLY on association %d", a.sid))
	} else if err != nil {
		a.removeFromTable()
	}
}

func (a *Association) onWindow(uint32) {
	a.s.shutdown(protoErrorf("WINDOW on datagram association %d", a.sid))
}

func (a *Association) onReset(r wire.Reset) {
	a.fail(&StreamError{Code: r.Code, Reason: r.Reason, Remote: true})
	a.removeFromTable()
}

func (a *Association) fail(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.failOpen(err)
	a.mu.Unlock()
	a.readable.signal()
}

func (a *Association) removeFromTable() {
	a.mu.Lock()
	if a.removed {
		a.mu.Unlock()
		return
	}
	a.removed = true
	a.mu.Unlock()
	a.s.remove(a, 0)
}

// ReadFromAddr reads one datagram into p and returns its size and its source. A
// datagram larger than p is truncated, as with a UDP socket.
func (a *Association) ReadFromAddr(p []byte) (int, wire.Addr, error) {
	for {
		a.mu.Lock()
		if len(a.queue) > 0 {
			d := a.queue[0]
			a.queue[0] = dgram{}
			a.queue = a.queue[1:]
			if len(a.queue) == 0 {
				a.queue = nil
			} else {
				a.readable.signal()
			}
			a.mu.Unlock()
			n := copy(p, *d.buf)
			putBuf(d.buf)
			return n, d.addr, nil
		}
		if a.closed {
			a.mu.Unlock()
			return 0, wire.Addr{}, net.ErrClosed
		}
		if a.err != nil {
			err := a.err
			a.mu.Unlock()
			return 0, wire.Addr{}, err
		}
		a.mu.Unlock()
		select {
		case <-a.readable:
		case <-a.rd.wait():
			return 0, wire.Addr{}, ErrTimeout
		case <-a.closeCh:
			return 0, wire.Addr{}, net.ErrClosed
		}
	}
}

// takeQueued moves up to len(dst) waiting datagrams into dst without blocking and
// returns how many it moved; the caller gives each one's buffer back with putBuf.
func (a *Association) takeQueued(dst []dgram) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := copy(dst, a.queue)
	clear(a.queue[:n])
	a.queue = a.queue[n:]
	if len(a.queue) == 0 {
		a.queue = nil
	}
	return n
}

// WaitRead blocks until a datagram can be read without blocking, or until reading
// would fail (closed, reset, deadline); it returns nil in the first case. A reader can
// so wait with no buffer and take one only when a datagram is there.
func (a *Association) WaitRead() error {
	for {
		a.mu.Lock()
		switch {
		case len(a.queue) > 0:
			a.mu.Unlock()
			return nil
		case a.closed:
			a.mu.Unlock()
			return net.ErrClosed
		case a.err != nil:
			err := a.err
			a.mu.Unlock()
			return err
		}
		a.mu.Unlock()
		select {
		case <-a.readable: // the queue is checked again first
		case <-a.rd.wait():
			return ErrTimeout
		case <-a.closeCh:
			return net.ErrClosed
		}
	}
}

// WriteToAddr sends p as one datagram to addr (from addr, on the server side). It does
// not block; a datagram that does not fit in the queue is dropped and counted, and
// WriteToAddr still returns nil, as a UDP socket would.
func (a *Association) WriteToAddr(p []byte, addr wire.Addr) error {
	a.mu.Lock()
	err := a.err
	if a.closed {
		err = net.ErrClosed
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	return a.s.queueDgram(a.sid, addr, p)
}

// ReadFrom implements net.PacketConn; the address is a *net.UDPAddr, or a net.Addr
// whose String is "name:port" for a source given as a host name.
func (a *Association) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := a.ReadFromAddr(p)
	if err != nil {
		return 0, nil, err
	}
	if from.IP.IsValid() {
		return n, net.UDPAddrFromAddrPort(from.AddrPort()), nil
	}
	return n, streamAddr{from}, nil
}

// WriteTo implements net.PacketConn. addr may be a *net.UDPAddr or any net.Addr whose
// String is "host:port" (a host name is resolved by the peer).
func (a *Association) WriteTo(p []byte, addr net.Addr) (int, error) {
	var to wire.Addr
	switch v := addr.(type) {
	case *net.UDPAddr:
		to = wire.AddrFromAddrPort(v.AddrPort())
	default:
		var err error
		if to, err = ParseAddr(addr.String()); err != nil {
			return 0, err
		}
	}
	if err := a.WriteToAddr(p, to); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Dropped returns how many received datagrams this association dropped because its
// queue was full.
func (a *Association) Dropped() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}

// Close ends the association on both sides.
func (a *Association) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	close(a.closeCh)
	for _, d := range a.queue {
		putBuf(d.buf)
	}
	a.queue = nil
	alive := a.err == nil && !a.removed
	a.mu.Unlock()
	a.rd.stop()
	if alive {
		r := wire.Reset{Code: wire.CodeCanceled, Reason: "closed"}
		_ = a.s.queuePri(func(b []byte) []byte { return wire.AppendReset(b, a.sid, r) })
	}
	a.removeFromTable()
	return nil
}

// reset ends the association on both sides with code.
func (a *Association) reset(code wire.Code, reason string) {
	a.fail(&StreamError{Code: code, Reason: reason})
	r := wire.Reset{Code: code, Reason: reason}
	_ = a.s.queuePri(func(b []byte) []byte { return wire.AppendReset(b, a.sid, r) })
	a.removeFromTable()
}

// LocalAddr returns the address of the peer's socket when known, else the destination.
func (a *Association) LocalAddr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.local.IP.IsValid() {
		return net.UDPAddrFromAddrPort(a.local.AddrPort())
	}
	return streamAddr{a.dst}
}

// SetDeadline sets the read deadline; writes never block.
func (a *Association) SetDeadline(t time.Time) error { return a.SetReadDeadline(t) }

// SetReadDeadline sets the deadline for ReadFrom.
func (a *Association) SetReadDeadline(t time.Time) error { a.rd.set(t); return nil }

// SetWriteDeadline does nothing: writes never block.
func (a *Association) SetWriteDeadline(time.Time) error { return nil }

// ParseAddr parses "host:port", where host is an IP address or a host name. An IPv6
// address with a zone ("[fe80::1%eth0]:53") is refused: the zone names an interface of
// this machine, which the peer cannot use.
func ParseAddr(s string) (wire.Addr, error) {
	a, err := parseHostPort(s)
	if err != nil {
		return wire.Addr{}, err
	}
	if a.IP.Zone() != "" {
		return wire.Addr{}, fmt.Errorf("transport: address %q: %w", s, wire.ErrZone)
	}
	return a, nil
}

// parseHostPort is ParseAddr without the check of the zone.
func parseHostPort(s string) (wire.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return wire.AddrFromAddrPort(ap), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return wire.Addr{}, fmt.Errorf("transport: address %q: %w", s, err)
	}
	var p uint16
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || fmt.Sprint(p) != port {
		return wire.Addr{}, fmt.Errorf("transport: address %q: bad port", s)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return wire.Addr{IP: ip.Unmap(), Port: p}, nil
	}
	if !wire.ValidName(host) {
		return wire.Addr{}, fmt.Errorf("transport: address %q: malformed host name", s)
	}
	return wire.Addr{Name: host, Port: p}, nil
}
