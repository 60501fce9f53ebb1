package netstack

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Pinger is implemented by a Handler that can carry ICMP echo. DialPing opens an echo
// association from src to dst: WriteTo sends an echo body (identifier u16, sequence
// u16, data) and ReadFrom returns the body of each echo reply with its source.
type Pinger interface {
	DialPing(ctx context.Context, src, dst netip.Addr) (PacketConn, error)
}

// pingIdle ends an echo association without traffic for this long.
const pingIdle = 30 * time.Second

// divert takes ICMP echo requests out of the inbound path. gVisor, in promiscuous mode,
// would answer every echo request itself — inventing replies for hosts that may not
// exist — so they never reach it. With a Pinger handler they are forwarded, and the
// real replies written back to the TUN; without one they are counted as unanswered
// and dropped, so ping reports loss, never a lie.
func (s *Stack) divert(pkt []byte) bool {
	e, ok := parseEcho(pkt)
	if !ok {
		return false
	}
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
		reply := buildEchoReply(from.Addr(), a.key.src, a.key.id, seq, buf[4:n])
		if reply == nil {
			continue
		}
		if err := s.link.writeRaw(reply); err != nil {
			return
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

// parseEcho recognises an ICMPv4 or ICMPv6 echo request.
func parseEcho(pkt []byte) (echo, bool) {
	if len(pkt) == 0 {
		return echo{}, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize {
			return echo{}, false
		}
		ip := header.IPv4(pkt)
		hl := int(ip.HeaderLength())
		if hl < header.IPv4MinimumSize || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ip.FragmentOffset() != 0 || ip.More() ||
			int(ip.TotalLength()) > len(pkt) || int(ip.TotalLength()) < hl+header.ICMPv4MinimumSize {
			return echo{}, false
		}
		ic := header.ICMPv4(pkt[hl:ip.TotalLength()])
		if ic.Type() != header.ICMPv4Echo {
			return echo{}, false
		}
		return echo{src: addrFrom(ip.SourceAddress()), dst: addrFrom(ip.DestinationAddress()), id: ic.Ident(), seq: ic.Sequence(), data: append([]byte(nil), ic.Payload()...)}, true
	case 6:
		if len(pkt) < header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize {
			return echo{}, false
		}
		ip := header.IPv6(pkt)
		end := header.IPv6MinimumSize + int(ip.PayloadLength())
		if ip.TransportProtocol() != header.ICMPv6ProtocolNumber || end > len(pkt) || end < header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize {
			return echo{}, false // extension headers before ICMPv6: let gVisor have it
		}
		ic := header.ICMPv6(pkt[header.IPv6MinimumSize:end])
		if ic.Type() != header.ICMPv6EchoRequest {
			return echo{}, false
		}
		return echo{src: addrFrom(ip.SourceAddress()), dst: addrFrom(ip.DestinationAddress()), id: ic.Ident(), seq: ic.Sequence(), data: append([]byte(nil), ic.Payload()...)}, true
	}
	return echo{}, false
}

// isEchoRequest reports whether pkt is an ICMPv4 or ICMPv6 echo request.
func isEchoRequest(pkt []byte) bool {
	_, ok := parseEcho(pkt)
	return ok
}

// buildEchoReply returns an IP packet carrying an echo reply from → to.
func buildEchoReply(from, to netip.Addr, id, seq uint16, data []byte) []byte {
	from = from.Unmap()
	if from.Is4() != to.Is4() {
		return nil
	}
	if to.Is4() {
		total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + len(data)
		if total > 0xffff {
			return nil
		}
		b := make([]byte, total)
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber), SrcAddr: tcpipAddr(from), DstAddr: tcpipAddr(to)})
		ip.SetChecksum(^ip.CalculateChecksum())
		ic := header.ICMPv4(b[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4EchoReply)
		ic.SetIdent(id)
		ic.SetSequence(seq)
		copy(ic.Payload(), data)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
		return b
	}
	plen := header.ICMPv6EchoMinimumSize + len(data)
	if plen > 0xffff {
		return nil
	}
	b := make([]byte, header.IPv6MinimumSize+plen)
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(plen), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64, SrcAddr: tcpipAddr(from), DstAddr: tcpipAddr(to)})
	ic := header.ICMPv6(b[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6EchoReply)
	ic.SetIdent(id)
	ic.SetSequence(seq)
	copy(ic.Payload(), data)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: tcpipAddr(from), Dst: tcpipAddr(to)}))
	return b
}
