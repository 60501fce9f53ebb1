package netstack

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Pinger is implemented by a Handler that can carry ICMP echo. DialPing opens an echo
// association from src to dst: WriteTo sends an echo body (identifier u16, sequence
// u16, data) and ReadFrom returns the body of each echo reply with its source.
type Pinger interface {
	DialPing(ctx context.Context, src, dst netip.Addr) (PacketConn, error)
}

// pingIdle ends an echo association without traffic for this long.
const pingIdle = 30 * time.Second

// handleICMP receives ICMP and ICMPv6 packets after gVisor reassembled them. Echo
// requests are consumed here — returning true stops gVisor from answering them itself,
// which in promiscuous mode would invent replies for hosts that may not exist. With a
// Pinger handler they are forwarded and the real replies written back; without one
// they stay unanswered, so ping reports loss, never a lie.
func (s *Stack) handleICMP(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	v := stack.PayloadSince(pkt.TransportHeader())
	defer v.Release()
	e, ok := parseEcho(v.AsSlice(), pkt.NetworkProtocolNumber == header.IPv6ProtocolNumber)
	if !ok {
		return false
	}
	e.src, e.dst = addrFrom(id.RemoteAddress), addrFrom(id.LocalAddress)
	s.echoReqs.Add(1)
	p, ok := s.handler.(Pinger)
	if !ok {
		s.echoUnanswered.Add(1)
		return true
	}
	key := pingKey{src: e.src, dst: e.dst, id: e.id}
	body := make([]byte, 4+len(e.data))
	binary.BigEndian.PutUint16(body, e.id)
	binary.BigEndian.PutUint16(body[2:], e.seq)
	copy(body[4:], e.data)

	s.pings.mu.Lock()
	a := s.pings.m[key]
	if a == nil {
		if len(s.pings.m) >= 1024 {
			s.pings.mu.Unlock()
			s.echoUnanswered.Add(1)
			return true
		}
		a = &pingAssoc{key: key, lastUsed: time.Now()}
		s.pings.m[key] = a
		a.pending = append(a.pending, body)
		s.pings.mu.Unlock()
		if !s.goFlow(func() { s.runPing(p, a) }) {
			s.removePing(a)
		}
		return true
	}
	s.pings.mu.Unlock()
	a.mu.Lock()
	a.lastUsed = time.Now()
	pc := a.pc
	if pc == nil {
		if !a.failed && len(a.pending) < maxPending {
			a.pending = append(a.pending, body)
		} else {
			s.echoUnanswered.Add(1)
		}
		a.mu.Unlock()
		return true
	}
	a.mu.Unlock()
	if pc.WriteTo(body, netip.AddrPortFrom(key.dst, 0)) != nil {
		s.echoUnanswered.Add(1)
	}
	return true
}

type pingKey struct {
	src, dst netip.Addr
	id       uint16
}

type pingAssoc struct {
	key      pingKey
	mu       sync.Mutex
	pc       PacketConn
	pending  [][]byte
	failed   bool
	lastUsed time.Time
	timer    *time.Timer
}

type pingTable struct {
	mu sync.Mutex
	m  map[pingKey]*pingAssoc
}

func (s *Stack) removePing(a *pingAssoc) {
	s.pings.mu.Lock()
	if s.pings.m[a.key] == a {
		delete(s.pings.m, a.key)
	}
	s.pings.mu.Unlock()
	a.mu.Lock()
	pc := a.pc
	a.failed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	a.mu.Unlock()
	if pc != nil {
		_ = pc.Close()
	}
}

func (s *Stack) closePings() {
	s.pings.mu.Lock()
	list := make([]*pingAssoc, 0, len(s.pings.m))
	for _, a := range s.pings.m {
		list = append(list, a)
	}
	s.pings.mu.Unlock()
	for _, a := range list {
		s.removePing(a)
	}
}

func (s *Stack) runPing(p Pinger, a *pingAssoc) {
	defer s.removePing(a)
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.DialTimeout)
	pc, err := p.DialPing(ctx, a.key.src, a.key.dst)
	cancel()
	a.mu.Lock()
	if err != nil || a.failed {
		s.echoUnanswered.Add(uint64(len(a.pending)))
		a.pending, a.failed = nil, true
		a.mu.Unlock()
		if pc != nil {
			_ = pc.Close()
		}
		if err != nil {
			s.log.Debug("ping not forwarded", zap.Stringer("dst", a.key.dst), zap.Error(err))
		}
		return
	}
	a.pc = pc
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	for _, b := range pending {
		if pc.WriteTo(b, netip.AddrPortFrom(a.key.dst, 0)) != nil {
			s.echoUnanswered.Add(1)
		}
	}
	a.mu.Lock()
	if !a.failed {
		a.timer = time.AfterFunc(pingIdle, func() { s.expirePing(a) })
	}
	a.mu.Unlock()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 4 {
			continue
		}
		a.mu.Lock()
		a.lastUsed = time.Now()
		a.mu.Unlock()
		seq := binary.BigEndian.Uint16(buf[2:])
		if err := s.writeEchoReply(from.Addr(), a.key.src, a.key.id, seq, buf[4:n]); err != nil {
			s.echoUnanswered.Add(1)
		}
	}
}

func (s *Stack) expirePing(a *pingAssoc) {
	a.mu.Lock()
	left := pingIdle - time.Since(a.lastUsed)
	if left > 0 && !a.failed {
		a.timer.Reset(left)
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	s.removePing(a)
}

type echo struct {
	src, dst netip.Addr
	id, seq  uint16
	data     []byte
}

// parseEcho recognises an ICMP (or, with v6, ICMPv6) echo request message.
func parseEcho(m []byte, v6 bool) (echo, bool) {
	if v6 {
		if len(m) < header.ICMPv6EchoMinimumSize {
			return echo{}, false
		}
		ic := header.ICMPv6(m)
		if ic.Type() != header.ICMPv6EchoRequest {
			return echo{}, false
		}
		return echo{id: ic.Ident(), seq: ic.Sequence(), data: append([]byte(nil), ic.Payload()...)}, true
	}
	if len(m) < header.ICMPv4MinimumSize {
		return echo{}, false
	}
	ic := header.ICMPv4(m)
	if ic.Type() != header.ICMPv4Echo {
		return echo{}, false
	}
	return echo{id: ic.Ident(), seq: ic.Sequence(), data: append([]byte(nil), ic.Payload()...)}, true
}

// writeEchoReply sends an echo reply from → to through gVisor, which adds the IP header
// and fragments a reply larger than the MTU.
func (s *Stack) writeEchoReply(from, to netip.Addr, id, seq uint16, data []byte) error {
	from = from.Unmap()
	if from.Is4() != to.Is4() {
		return errFamily
	}
	netProto, transProto, hlen := header.IPv4ProtocolNumber, header.ICMPv4ProtocolNumber, header.ICMPv4MinimumSize
	if to.Is6() {
		netProto, transProto, hlen = header.IPv6ProtocolNumber, header.ICMPv6ProtocolNumber, header.ICMPv6EchoMinimumSize
	}
	r, terr := s.ip.FindRoute(nicID, tcpipAddr(from), tcpipAddr(to), netProto, false)
	if terr != nil {
		return tcpipError{terr}
	}
	defer r.Release()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hlen + int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(data),
	})
	defer pkt.DecRef()
	pkt.TransportProtocolNumber = transProto
	hdr := pkt.TransportHeader().Push(hlen)
	if to.Is4() {
		ic := header.ICMPv4(hdr)
		ic.SetType(header.ICMPv4EchoReply)
		ic.SetCode(0)
		ic.SetIdent(id)
		ic.SetSequence(seq)
		ic.SetChecksum(0)
		ic.SetChecksum(^checksum.Combine(checksum.Checksum(ic, 0), pkt.Data().Checksum()))
	} else {
		ic := header.ICMPv6(hdr)
		ic.SetType(header.ICMPv6EchoReply)
		ic.SetCode(0)
		ic.SetIdent(id)
		ic.SetSequence(seq)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: ic, Src: tcpipAddr(from), Dst: tcpipAddr(to),
			PayloadCsum: pkt.Data().Checksum(), PayloadLen: pkt.Data().Size(),
		}))
	}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: transProto, TTL: 64}, pkt); terr != nil {
		return tcpipError{terr}
	}
	return nil
}
