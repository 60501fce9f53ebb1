package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// divert takes ICMP echo requests out of the inbound path. gVisor, in promiscuous mode,
// would answer every echo request itself — "inventing" replies for hosts that may not
// exist — so they never reach it. Forwarding them to the peer's unprivileged ICMP
// socket is the Handler's job once the transport carries ICMP associations; until then
// they are counted as unanswered and dropped, so ping reports loss, never a lie.
func (s *Stack) divert(pkt []byte) bool {
	if !isEchoRequest(pkt) {
		return false
	}
	s.echoReqs.Add(1)
	s.echoUnanswered.Add(1)
	return true
}

// isEchoRequest reports whether pkt is an ICMPv4 or ICMPv6 echo request.
func isEchoRequest(pkt []byte) bool {
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize {
			return false
		}
		ip := header.IPv4(pkt)
		hl := int(ip.HeaderLength())
		if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ip.FragmentOffset() != 0 || len(pkt) < hl+header.ICMPv4MinimumSize || hl < header.IPv4MinimumSize {
			return false
		}
		return header.ICMPv4(pkt[hl:]).Type() == header.ICMPv4Echo
	case 6:
		if len(pkt) < header.IPv6MinimumSize+header.ICMPv6MinimumSize {
			return false
		}
		ip := header.IPv6(pkt)
		if ip.TransportProtocol() != header.ICMPv6ProtocolNumber {
			return false // extension headers before ICMPv6: let gVisor have it
		}
		return header.ICMPv6(pkt[header.IPv6MinimumSize:]).Type() == header.ICMPv6EchoRequest
	}
	return false
}
