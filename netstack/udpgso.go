package netstack

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// UDP GSO on the TUN's write side. A datagram written to a TUN costs the kernel a
// system call and a trip through its input path; a UDP GSO super-packet
// (VIRTIO_NET_HDR_GSO_UDP_L4: one IP and UDP header, then payloads of one size, the
// last possibly shorter) costs one of each for all of them, the kernel splitting it
// into datagrams (docs/performance-changes.md, change 27: about 6 µs a datagram on
// the writing side alone, 1 µs in batches of 16). The offload path writes runs of
// consecutive queued datagrams of one flow that way. The device's offloads need not
// include UDP: they say what the kernel hands to user space, not what it takes.

const (
	vnetGSOUDPL4 = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
	// maxUDPSegs bounds the datagrams of one super-packet (the kernel's limit,
	// UDP_MAX_SEGMENTS, is 128).
	maxUDPSegs = 64
	// udpSuperHdrMax is the largest header of a super-packet: IPv6 and UDP.
	udpSuperHdrMax = header.IPv6MinimumSize + header.UDPMinimumSize
	// udpCsumOffset is where the checksum lies in a UDP header.
	udpCsumOffset = 6
)

// udpRun tells how many packets at the start of pkts can go to the TUN as one UDP
// GSO super-packet: 0 or 1 when the first cannot be merged with the next. A run is
// datagrams of one flow (addresses, ports, and for IPv4 the TOS, TTL and DF bit;
// for IPv6 the traffic class, flow label and hop limit) without IP options,
// extension headers or fragmentation, whose payloads all have the first one's size
// but the last, which may be shorter and ends the run; at most maxUDPSegs of them,
// at most 64 KiB in all.
func udpRun(pkts []*stack.PacketBuffer) int {
	if len(pkts) < 2 {
		return len(pkts)
	}
	first := pkts[0]
	seg := udpSegSize(first)
	if seg <= 0 {
		return 1
	}
	l3 := len(first.NetworkHeader().Slice())
	total := l3 + header.UDPMinimumSize + seg
	n := 1
	for n < len(pkts) && n < maxUDPSegs {
		p := pkts[n]
		size := udpSegSize(p)
		if size <= 0 || size > seg || !sameUDPFlow(first, p) {
			break
		}
		if total+size > 0xffff {
			break
		}
		total += size
		n++
		if size < seg {
			break // a shorter datagram ends a run
		}
	}
	return n
}

// udpSegSize is the payload size of pkt when it is a datagram udpRun may merge: a
// plain UDP packet with no IP options, extension headers or fragmentation; else -1.
func udpSegSize(pkt *stack.PacketBuffer) int {
	if pkt.GSOOptions.Type != stack.GSONone || pkt.TransportProtocolNumber != header.UDPProtocolNumber ||
		len(pkt.TransportHeader().Slice()) != header.UDPMinimumSize {
		return -1
	}
	nh := pkt.NetworkHeader().Slice()
	switch {
	case len(nh) == header.IPv4MinimumSize && header.IPVersion(nh) == header.IPv4Version:
		ip := header.IPv4(nh)
		if ip.Protocol() != uint8(header.UDPProtocolNumber) || ip.More() || ip.FragmentOffset() != 0 {
			return -1
		}
	case len(nh) == header.IPv6MinimumSize && header.IPVersion(nh) == header.IPv6Version:
		if header.IPv6(nh).NextHeader() != uint8(header.UDPProtocolNumber) {
			return -1
		}
	default:
		return -1
	}
	if n := pkt.Data().Size(); n > 0 {
		return n
	}
	return -1
}

// sameUDPFlow tells whether b's headers are a's but for the lengths, the IPv4
// identification and checksums: b may be a segment of a's super-packet.
func sameUDPFlow(a, b *stack.PacketBuffer) bool {
	an, bn := a.NetworkHeader().Slice(), b.NetworkHeader().Slice()
	if len(an) != len(bn) {
		return false
	}
	if len(an) == header.IPv4MinimumSize {
		// Version..TOS (0:2), flags and TTL, protocol (6, 8:10), addresses (12:20);
		// not the total length (2:4), identification (4:6), fragment offset (6:8,
		// zero in both: udpSegSize) or checksum (10:12).
		if !bytes.Equal(an[0:2], bn[0:2]) || an[6]&0xe0 != bn[6]&0xe0 || !bytes.Equal(an[8:10], bn[8:10]) || !bytes.Equal(an[12:20], bn[12:20]) {
			return false
		}
	} else {
		// Version, class, flow label (0:4), next header and hop limit (6:8),
		// addresses (8:40); not the payload length (4:6).
		if !bytes.Equal(an[0:4], bn[0:4]) || !bytes.Equal(an[6:40], bn[6:40]) {
			return false
		}
	}
	at, bt := a.TransportHeader().Slice(), b.TransportHeader().Slice()
	return bytes.Equal(at[0:4], bt[0:4]) // the ports
}

// payloadSlices appends to dst the slices that hold pkt's payload (after its IP and
// UDP headers), without copying them.
func payloadSlices(dst [][]byte, pkt *stack.PacketBuffer) [][]byte {
	skip := len(pkt.NetworkHeader().Slice()) + len(pkt.TransportHeader().Slice())
	for _, s := range pkt.AsSlices() {
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		dst = append(dst, s[skip:])
		skip = 0
	}
	return dst
}

// putUDPSuper writes into hdr the IP and UDP headers of the super-packet of run (a
// run udpRun accepted, of more than one datagram) and into vh its virtio-net
// header, and returns the headers' bytes. The UDP checksum is partial (the
// pseudo-header's sum over the whole length), the kernel completing each segment's.
func putUDPSuper(hdr *[udpSuperHdrMax]byte, vh *[vnetHdrLen]byte, run []*stack.PacketBuffer) []byte {
	first := run[0]
	nh := first.NetworkHeader().Slice()
	l3 := len(nh)
	b := hdr[:l3+header.UDPMinimumSize]
	copy(b, nh)
	copy(b[l3:], first.TransportHeader().Slice())
	payload := 0
	for _, p := range run {
		payload += p.Data().Size()
	}
	udpLen := uint16(header.UDPMinimumSize + payload)
	var xsum uint16
	if l3 == header.IPv4MinimumSize {
		ip := header.IPv4(b)
		ip.SetTotalLength(uint16(l3) + udpLen)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		xsum = header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), udpLen)
	} else {
		ip := header.IPv6(b)
		ip.SetPayloadLength(udpLen)
		xsum = header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), udpLen)
	}
	u := header.UDP(b[l3:])
	u.SetLength(udpLen)
	u.SetChecksum(xsum)

	*vh = [vnetHdrLen]byte{}
	vh[0] = vnetFlagNeedsCsum
	vh[1] = vnetGSOUDPL4
	ne := binary.NativeEndian
	ne.PutUint16(vh[2:], uint16(len(b)))
	ne.PutUint16(vh[4:], uint16(first.Data().Size()))
	ne.PutUint16(vh[6:], uint16(l3))
	ne.PutUint16(vh[8:], udpCsumOffset)
	return b
}
