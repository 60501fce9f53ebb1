package netstack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"syscall"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// A failed dial is answered with a RST (ECONNREFUSED) by default. When the peer says
// the network or host is unreachable, or its policy forbids the destination, an ICMP
// destination unreachable tells the application exactly that (ENETUNREACH,
// EHOSTUNREACH) — and lets dual-stack applications fall back from IPv6 at once. A
// kernel accepts such an error for a connecting socket only if it quotes the SYN's
// sequence number, which gVisor's forwarder does not expose; the link endpoint
// records it as SYNs go by.

type flowKey struct{ src, dst netip.AddrPort }

// synTable remembers the initial sequence number of recent SYNs.
type synTable struct {
	mu sync.Mutex
	m  map[flowKey]uint32
}

const maxSYNs = 4096

func (t *synTable) record(pkt []byte) {
	k, seq, ok := parseSYN(pkt)
	if !ok {
		return
	}
	t.mu.Lock()
	if t.m == nil || len(t.m) >= maxSYNs {
		t.m = make(map[flowKey]uint32) // a burst of SYNs we never forwarded: start over
	}
	t.m[k] = seq
	t.mu.Unlock()
}

func (t *synTable) take(k flowKey) (uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq, ok := t.m[k]
	delete(t.m, k)
	return seq, ok
}

// parseSYN returns the flow and sequence number of a TCP SYN (without ACK).
func parseSYN(pkt []byte) (flowKey, uint32, bool) {
	var src, dst netip.Addr
	var tcp []byte
	switch {
	case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
		ip := header.IPv4(pkt)
		hl := int(ip.HeaderLength())
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.FragmentOffset() != 0 || hl < header.IPv4MinimumSize || len(pkt) < hl+header.TCPMinimumSize {
			return flowKey{}, 0, false
		}
		src, dst, tcp = addrFrom(ip.SourceAddress()), addrFrom(ip.DestinationAddress()), pkt[hl:]
	case len(pkt) >= header.IPv6MinimumSize+header.TCPMinimumSize && pkt[0]>>4 == 6:
		ip := header.IPv6(pkt)
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return flowKey{}, 0, false
		}
		src, dst, tcp = addrFrom(ip.SourceAddress()), addrFrom(ip.DestinationAddress()), pkt[header.IPv6MinimumSize:]
	default:
		return flowKey{}, 0, false
	}
	h := header.TCP(tcp)
	if h.Flags()&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn {
		return flowKey{}, 0, false
	}
	return flowKey{netip.AddrPortFrom(src, h.SourcePort()), netip.AddrPortFrom(dst, h.DestinationPort())}, h.SequenceNumber(), true
}

// unreachKind is the ICMP answer for a dial error, or 0 for a RST.
type unreachKind int

const (
	rst unreachKind = iota
	netUnreach
	hostUnreach
	prohibited
)

func kindOf(err error) unreachKind {
	switch {
	case errors.Is(err, syscall.ENETUNREACH):
		return netUnreach
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ETIMEDOUT):
		return hostUnreach
	case errors.Is(err, syscall.EACCES):
		return prohibited
	}
	return rst
}

// sendUnreachable sends the application at k.src an ICMP (or ICMPv6) destination
// unreachable about its SYN to k.dst with sequence number seq.
func (s *Stack) sendUnreachable(k flowKey, seq uint32, kind unreachKind) error {
	app, remote := k.src.Addr(), k.dst.Addr()
	// The quoted datagram: the SYN's IP header and the first 8 bytes of its TCP
	// header (ports and sequence number).
	var quote []byte
	var netProto = header.IPv4ProtocolNumber
	var transProto = header.ICMPv4ProtocolNumber
	var typ, code uint8 = uint8(header.ICMPv4DstUnreachable), 0
	if app.Is4() {
		quote = make([]byte, header.IPv4MinimumSize+8)
		ip := header.IPv4(quote)
		ip.Encode(&header.IPv4Fields{TotalLength: header.IPv4MinimumSize + header.TCPMinimumSize, TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: tcpipAddr(app), DstAddr: tcpipAddr(remote)})
		ip.SetChecksum(^ip.CalculateChecksum())
		code = map[unreachKind]uint8{netUnreach: 0, hostUnreach: 1, prohibited: 13}[kind]
	} else {
		quote = make([]byte, header.IPv6MinimumSize+8)
		header.IPv6(quote).Encode(&header.IPv6Fields{PayloadLength: header.TCPMinimumSize, TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: tcpipAddr(app), DstAddr: tcpipAddr(remote)})
		netProto, transProto, typ = header.IPv6ProtocolNumber, header.ICMPv6ProtocolNumber, uint8(header.ICMPv6DstUnreachable)
		code = map[unreachKind]uint8{netUnreach: 0, hostUnreach: 3, prohibited: 1}[kind]
	}
	tcp := quote[len(quote)-8:]
	binary.BigEndian.PutUint16(tcp, k.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], k.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)

	r, terr := s.ip.FindRoute(nicID, tcpipAddr(remote), tcpipAddr(app), netProto, false)
	if terr != nil {
		return tcpipError{terr}
	}
	defer r.Release()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: 8 + int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(quote),
	})
	defer pkt.DecRef()
	pkt.TransportProtocolNumber = transProto
	hdr := pkt.TransportHeader().Push(8)
	clear(hdr)
	hdr[0], hdr[1] = typ, code
	if app.Is4() {
		ic := header.ICMPv4(hdr)
		ic.SetChecksum(^checksum.Combine(checksum.Checksum(ic, 0), pkt.Data().Checksum()))
	} else {
		ic := header.ICMPv6(hdr)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: ic, Src: tcpipAddr(remote), Dst: tcpipAddr(app),
			PayloadCsum: pkt.Data().Checksum(), PayloadLen: pkt.Data().Size(),
		}))
	}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: transProto, TTL: 64}, pkt); terr != nil {
		return tcpipError{terr}
	}
	return nil
}
