package netstack

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The virtio-net header of a Linux TUN, for the offload path in vnet_linux.go. The
// header is plain data; its encoding lives here, on every OS, so that it is tested
// everywhere.

// vnetHdrLen is the size of struct virtio_net_hdr, the header tun uses by default.
const vnetHdrLen = 10

// Fields of struct virtio_net_hdr (include/uapi/linux/virtio_net.h).
const (
	vnetFlagNeedsCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSONone       = 0    // VIRTIO_NET_HDR_GSO_NONE
	vnetGSOTCPv4      = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOTCPv6      = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	vnetGSOECN        = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

// errShortRead is a read shorter than its virtio-net header.
var errShortRead = errors.New("tun read shorter than its virtio-net header")

// inboundOK tells whether a packet read with header hdr can go to gVisor as it is:
// a packet without segmentation, or a TCP super-packet. Anything else (a UDP GSO
// packet, which the offloads set in newVnetIO rule out) is dropped.
func inboundOK(hdr *[vnetHdrLen]byte) bool {
	switch hdr[1] &^ vnetGSOECN {
	case vnetGSONone, vnetGSOTCPv4, vnetGSOTCPv6:
		return true
	}
	return false
}

// putVnetHdr writes the virtio-net header of an outbound packet into h: none for a
// packet with complete checksums; a partial checksum, and the segmentation of a TCP
// segment longer than its MSS, for packets of gVisor's host GSO.
func putVnetHdr(h *[vnetHdrLen]byte, pkt *stack.PacketBuffer) {
	*h = [vnetHdrLen]byte{}
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone || !gso.NeedsCsum {
		return
	}
	l3 := len(pkt.NetworkHeader().Slice())
	h[0] = vnetFlagNeedsCsum
	ne := binary.NativeEndian // the tun device's byte order unless told otherwise
	ne.PutUint16(h[2:], uint16(pkt.HeaderSize()))
	ne.PutUint16(h[6:], uint16(l3))
	ne.PutUint16(h[8:], gso.CsumOffset)
	if pkt.Data().Size() > int(gso.MSS) {
		switch gso.Type {
		case stack.GSOTCPv4:
			h[1] = vnetGSOTCPv4
		case stack.GSOTCPv6:
			h[1] = vnetGSOTCPv6
		}
		ne.PutUint16(h[4:], gso.MSS)
	}
}
