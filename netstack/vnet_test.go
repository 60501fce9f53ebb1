package netstack

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoPacket is an outbound TCP packet as gVisor's TCP builds it with host GSO: l3
// bytes of IP header, 20 of TCP header, data bytes of payload.
func gsoPacket(l3, data int, gso stack.GSO) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: 80,
		Payload:            buffer.MakeWithData(make([]byte, data)),
	})
	pkt.TransportHeader().Push(header.TCPMinimumSize)
	pkt.NetworkHeader().Push(l3)
	pkt.GSOOptions = gso
	return pkt
}

// TestPutVnetHdr: the virtio-net header of each kind of outbound packet, field by
// field (struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset).
func TestPutVnetHdr(t *testing.T) {
	ne := binary.NativeEndian
	tcp4 := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1460, L3HdrLen: 20}
	tcp6 := stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1440, L3HdrLen: 40}
	for _, tc := range []struct {
		name                                   string
		l3, data                               int
		gso                                    stack.GSO
		flags, gsoType                         byte
		hdrLen, gsoSize, csumStart, csumOffset uint16
	}{
		{name: "complete checksum", l3: 20, data: 100},
		{name: "IPv4 super-packet", l3: 20, data: 60000, gso: tcp4,
			flags: vnetFlagNeedsCsum, gsoType: vnetGSOTCPv4, hdrLen: 40, gsoSize: 1460, csumStart: 20, csumOffset: 16},
		{name: "IPv6 super-packet", l3: 40, data: 2881, gso: tcp6,
			flags: vnetFlagNeedsCsum, gsoType: vnetGSOTCPv6, hdrLen: 60, gsoSize: 1440, csumStart: 40, csumOffset: 16},
		{name: "one segment, partial checksum", l3: 20, data: 1460, gso: tcp4,
			flags: vnetFlagNeedsCsum, hdrLen: 40, csumStart: 20, csumOffset: 16},
		{name: "bare ACK, partial checksum", l3: 40, data: 0, gso: tcp6,
			flags: vnetFlagNeedsCsum, hdrLen: 60, csumStart: 40, csumOffset: 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := gsoPacket(tc.l3, tc.data, tc.gso)
			defer pkt.DecRef()
			h := [vnetHdrLen]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
			putVnetHdr(&h, pkt)
			got := []uint16{uint16(h[0]), uint16(h[1]), ne.Uint16(h[2:]), ne.Uint16(h[4:]), ne.Uint16(h[6:]), ne.Uint16(h[8:])}
			want := []uint16{uint16(tc.flags), uint16(tc.gsoType), tc.hdrLen, tc.gsoSize, tc.csumStart, tc.csumOffset}
			for i, name := range []string{"flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset"} {
				if got[i] != want[i] {
					t.Errorf("%s = %d, want %d", name, got[i], want[i])
				}
			}
		})
	}
}

// TestInboundOK: plain packets and TCP super-packets (with or without ECN) go to
// gVisor; UDP GSO and unknown types do not.
func TestInboundOK(t *testing.T) {
	for typ, want := range map[byte]bool{
		vnetGSONone: true, vnetGSOTCPv4: true, vnetGSOTCPv6: true,
		vnetGSOTCPv4 | vnetGSOECN: true, vnetGSOTCPv6 | vnetGSOECN: true,
		3 /* UDP (UFO) */ : false, 5 /* UDP_L4 */ : false, 0x7f: false,
	} {
		h := [vnetHdrLen]byte{1: typ}
		if got := inboundOK(&h); got != want {
			t.Errorf("gso_type %#x: inboundOK = %v, want %v", typ, got, want)
		}
	}
}
