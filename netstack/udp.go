package netstack

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/internal/shrink"
)

// A UDP association is keyed by the application's source endpoint alone: every
// destination it sends to goes through the same association (and so the same socket on
// the peer), and replies from any remote are delivered back with that remote as their
// source. That is endpoint-independent mapping, which QUIC, STUN, games and WebRTC
// need.

type udpAssoc struct {
	src      netip.AddrPort
	flow     *flowtab.Flow
	mu       sync.Mutex
	pc       PacketConn // nil while dialing
	pending  []pendingDgram
	failed   bool
	lastUsed time.Time
	idle     time.Duration
	timer    *time.Timer
	closed   bool
}

type pendingDgram struct {
	dst  netip.AddrPort
	data []byte
}

const maxPending = 16

type udpTable struct {
	mu   sync.Mutex
	m    map[netip.AddrPort]*udpAssoc
	peak shrink.Peak // of m
	// bufs holds the 64 KiB receive buffers: an association whose PacketConn is a
	// ReadWaiter takes one only while a datagram is waiting.
	bufs sync.Pool
}

func (t *udpTable) init() {
	t.m = make(map[netip.AddrPort]*udpAssoc)
	t.bufs.New = func() any { b := make([]byte, 64<<10); return &b }
}

func (t *udpTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

func (t *udpTable) closeAll() {
	t.mu.Lock()
	list := make([]*udpAssoc, 0, len(t.m))
	for _, a := range t.m {
		list = append(list, a)
	}
	t.m = make(map[netip.AddrPort]*udpAssoc)
	t.mu.Unlock()
	for _, a := range list {
		a.close()
	}
}

func (a *udpAssoc) close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	pc := a.pc
	a.pending = nil
	a.mu.Unlock()
	a.flow.Close()
	if pc != nil {
		_ = pc.Close()
	}
}

// handleUDP receives every UDP datagram gVisor has no endpoint for (all of them).
func (s *Stack) handleUDP(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	src := netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort)
	dst := netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort)
	if !src.IsValid() || !dst.IsValid() || dst.Addr().IsMulticast() || dst.Port() == 0 {
		return true // nothing to forward; swallow
	}
	data := pkt.Data().AsRange().ToSlice()

	s.udp.mu.Lock()
	a, ok := s.udp.m[src]
	if !ok {
		if len(s.udp.m) >= s.opts.MaxUDP {
			s.evictOldestLocked()
		}
		idle := s.opts.UDPIdle
		if dst.Port() == 53 {
			idle = s.opts.DNSIdle
		}
		a = &udpAssoc{src: src, flow: s.flows.Start("udp", src, dst), idle: idle, lastUsed: time.Now()}
		s.udp.m[src] = a
		s.udp.peak.Grew(len(s.udp.m))
		s.udp.mu.Unlock()
		s.udpTotal.Add(1)
		a.pending = append(a.pending, pendingDgram{dst, data})
		if !s.goFlow(func() { s.runUDP(a, dst) }) {
			s.removeUDP(a)
		}
		return true
	}
	s.udp.mu.Unlock()

	a.mu.Lock()
	a.lastUsed = time.Now()
	pc := a.pc
	switch {
	case a.closed || a.failed:
		a.mu.Unlock()
		s.udpDropped.Add(1)
		return true
	case pc == nil:
		if len(a.pending) < maxPending {
			a.pending = append(a.pending, pendingDgram{dst, data})
		} else {
			s.udpDropped.Add(1)
		}
		a.mu.Unlock()
		return true
	}
	a.mu.Unlock()
	if err := pc.WriteTo(data, dst); err != nil {
		s.udpDropped.Add(1)
	} else {
		a.flow.AddOut(len(data))
	}
	return true
}

// evictOldestLocked ends the association idle the longest.
func (s *Stack) evictOldestLocked() {
	var oldest *udpAssoc
	for _, a := range s.udp.m {
		a.mu.Lock()
		if oldest == nil || a.lastUsed.Before(oldest.lastUsed) {
			oldest = a
		}
		a.mu.Unlock()
	}
	if oldest != nil {
		delete(s.udp.m, oldest.src) // the table is full: nothing to shrink
		go oldest.close()           // not under the table lock: Close may talk to the peer
	}
}

func (s *Stack) removeUDP(a *udpAssoc) {
	s.udp.mu.Lock()
	if s.udp.m[a.src] == a {
		delete(s.udp.m, a.src)
		s.udp.m = shrink.Map(&s.udp.peak, s.udp.m)
	}
	s.udp.mu.Unlock()
	a.close()
}

// runUDP dials the association, flushes what queued meanwhile, and then delivers
// replies until the association is closed or idle.
func (s *Stack) runUDP(a *udpAssoc, first netip.AddrPort) {
	defer s.removeUDP(a)
	log := s.log.With(zap.Uint64("flow", a.flow.ID()))
	ctx, cancel := context.WithTimeout(flowtab.WithID(s.ctx, a.flow.ID()), s.opts.DialTimeout)
	pc, err := s.handler.DialUDP(ctx, a.src, first)
	cancel()
	a.mu.Lock()
	if err != nil || a.closed {
		dropped := len(a.pending)
		a.failed = true
		a.pending = nil
		a.mu.Unlock()
		s.udpDropped.Add(uint64(dropped))
		if pc != nil {
			_ = pc.Close()
		}
		if err != nil {
			log.Debug("udp association failed", zap.Stringer("src", a.src), zap.Stringer("dst", first), zap.Error(err))
		}
		return
	}
	a.flow.Open()
	log.Debug("udp flow open", zap.Stringer("src", a.src), zap.Stringer("dst", first))
	defer func() {
		out, in := a.flow.Bytes()
		log.Debug("udp flow closed", zap.Uint64("bytes_out", out), zap.Uint64("bytes_in", in), zap.Duration("age", a.flow.Age()))
	}()
	a.pc = pc
	pending := a.pending
	a.pending = nil
	a.timer = time.AfterFunc(a.idle, func() { s.expireUDP(a) })
	a.mu.Unlock()
	for _, d := range pending {
		if err := pc.WriteTo(d.data, d.dst); err != nil {
			s.udpDropped.Add(1)
		} else {
			a.flow.AddOut(len(d.data))
		}
	}
	waiter, _ := pc.(ReadWaiter)
	var buf *[]byte
	defer func() {
		if buf != nil {
			s.udp.bufs.Put(buf)
		}
	}()
	for {
		if waiter != nil {
			// No buffer is held while waiting.
			if buf != nil {
				s.udp.bufs.Put(buf)
				buf = nil
			}
			if err := waiter.WaitRead(); err != nil {
				return
			}
		}
		if buf == nil {
			buf = s.udp.bufs.Get().(*[]byte)
		}
		n, from, err := pc.ReadFrom(*buf)
		if err != nil {
			return
		}
		a.mu.Lock()
		a.lastUsed = time.Now()
		a.mu.Unlock()
		if err := s.writeUDP(from, a.src, (*buf)[:n]); err != nil {
			s.udpDropped.Add(1)
		} else {
			a.flow.AddIn(n)
		}
	}
}

// expireUDP closes the association if it has been idle for its whole timeout, or
// re-arms the timer for the rest.
func (s *Stack) expireUDP(a *udpAssoc) {
	a.mu.Lock()
	left := a.idle - time.Since(a.lastUsed)
	if left > 0 && !a.closed {
		a.timer.Reset(left)
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	s.removeUDP(a)
}

// writeUDP sends payload to the application at to, from the remote address from, through
// gVisor (which adds the IP header and fragments when needed).
func (s *Stack) writeUDP(from, to netip.AddrPort, payload []byte) error {
	fromAddr := from.Addr().Unmap()
	toAddr := to.Addr()
	if fromAddr.Is4() != toAddr.Is4() {
		if !toAddr.Is4In6() && !fromAddr.Is4() {
			return errFamily
		}
		fromAddr = netip.AddrFrom16(fromAddr.As16()) // IPv4 remote for an IPv6 socket: mapped
	}
	netProto := header.IPv4ProtocolNumber
	if toAddr.Is6() {
		netProto = header.IPv6ProtocolNumber
	}
	r, terr := s.ip.FindRoute(nicID, tcpipAddr(fromAddr), tcpipAddr(toAddr), netProto, false)
	if terr != nil {
		return tcpipError{terr}
	}
	defer r.Release()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.UDPMinimumSize + int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(payload),
	})
	defer pkt.DecRef()
	pkt.TransportProtocolNumber = udp.ProtocolNumber
	length := uint16(pkt.Size() + header.UDPMinimumSize)
	h := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	h.Encode(&header.UDPFields{SrcPort: from.Port(), DstPort: to.Port(), Length: length})
	xsum := r.PseudoHeaderChecksum(udp.ProtocolNumber, length)
	xsum = checksum.Combine(xsum, pkt.Data().Checksum())
	h.SetChecksum(^h.CalculateChecksum(xsum))
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: udp.ProtocolNumber, TTL: 64}, pkt); terr != nil {
		return tcpipError{terr}
	}
	return nil
}

type tcpipError struct{ e tcpip.Error }

func (e tcpipError) Error() string { return "netstack: " + e.e.String() }

type familyError struct{}

func (familyError) Error() string {
	return "netstack: reply from an IPv6 remote to an IPv4 application"
}

var errFamily error = familyError{}
