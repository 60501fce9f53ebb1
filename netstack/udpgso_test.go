package netstack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// udpTestPacket builds an outbound datagram as gVisor hands it to the link: IP and
// UDP headers pushed in front of the payload, checksums complete.
func udpTestPacket(t testing.TB, src, dst netip.AddrPort, payload []byte, mod func(nh []byte)) *stack.PacketBuffer {
	t.Helper()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.IPv6MinimumSize + header.UDPMinimumSize,
		Payload:            buffer.MakeWithData(payload),
	})
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	udpLen := uint16(header.UDPMinimumSize + len(payload))
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: udpLen})
	s, d := tcpipAddr(src.Addr()), tcpipAddr(dst.Addr())
	xsum := checksum.Checksum(payload, header.PseudoHeaderChecksum(header.UDPProtocolNumber, s, d, udpLen))
	u.SetChecksum(^u.CalculateChecksum(xsum))
	if src.Addr().Is4() {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{TotalLength: header.IPv4MinimumSize + udpLen, ID: uint16(len(payload)), TTL: 64,
			Protocol: uint8(header.UDPProtocolNumber), SrcAddr: s, DstAddr: d})
		if mod != nil {
			mod(ip)
		}
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	} else {
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{PayloadLength: udpLen, TransportProtocol: header.UDPProtocolNumber, HopLimit: 64, SrcAddr: s, DstAddr: d})
		if mod != nil {
			mod(ip)
		}
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	}
	return pkt
}

func TestUDPRun(t *testing.T) {
	a4, b4 := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:53")
	a6, b6 := netip.MustParseAddrPort("[fd00::1]:5000"), netip.MustParseAddrPort("[fd00::2]:53")
	c4 := netip.MustParseAddrPort("10.0.0.1:5001")
	p := func(src, dst netip.AddrPort, size int) *stack.PacketBuffer {
		return udpTestPacket(t, src, dst, make([]byte, size), nil)
	}
	withIP := func(src, dst netip.AddrPort, size int, mod func([]byte)) *stack.PacketBuffer {
		return udpTestPacket(t, src, dst, make([]byte, size), mod)
	}
	many := func(n, size int) []*stack.PacketBuffer {
		var ps []*stack.PacketBuffer
		for range n {
			ps = append(ps, p(a4, b4, size))
		}
		return ps
	}
	for _, tc := range []struct {
		name string
		pkts []*stack.PacketBuffer
		want int
	}{
		{"one", many(1, 1400), 1},
		{"equal sizes", many(5, 1400), 5},
		{"IPv6", []*stack.PacketBuffer{p(a6, b6, 1200), p(a6, b6, 1200), p(a6, b6, 1200)}, 3},
		{"a shorter one ends the run", []*stack.PacketBuffer{p(a4, b4, 1400), p(a4, b4, 1400), p(a4, b4, 700), p(a4, b4, 1400)}, 3},
		{"a longer one is not merged", []*stack.PacketBuffer{p(a4, b4, 1000), p(a4, b4, 1400)}, 1},
		{"another source port", []*stack.PacketBuffer{p(a4, b4, 1400), p(a4, b4, 1400), p(c4, b4, 1400)}, 2},
		{"another family", []*stack.PacketBuffer{p(a4, b4, 1200), p(a6, b6, 1200)}, 1},
		{"another TTL", []*stack.PacketBuffer{p(a4, b4, 1400), withIP(a4, b4, 1400, func(nh []byte) { nh[8] = 3 })}, 1},
		{"another IPv6 flow label", []*stack.PacketBuffer{p(a6, b6, 1400), withIP(a6, b6, 1400, func(nh []byte) { nh[3] = 7 })}, 1},
		{"a fragment", []*stack.PacketBuffer{withIP(a4, b4, 1400, func(nh []byte) { nh[6] |= 0x20 }), p(a4, b4, 1400)}, 1},
		{"empty payloads", many(3, 0), 1},
		{"64 KiB at most", many(60, 1400), (0xffff - 28) / 1400},
		{"maxUDPSegs at most", many(maxUDPSegs+10, 100), maxUDPSegs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				for _, pk := range tc.pkts {
					pk.DecRef()
				}
			}()
			if got := udpRun(tc.pkts); got != tc.want {
				t.Fatalf("udpRun = %d, want %d", got, tc.want)
			}
		})
	}
	tcp := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 60, Payload: buffer.MakeWithData(make([]byte, 100))})
	defer tcp.DecRef()
	tcp.TransportProtocolNumber = header.TCPProtocolNumber
	if got := udpRun([]*stack.PacketBuffer{tcp, tcp}); got != 1 {
		t.Fatalf("udpRun of TCP packets = %d, want 1", got)
	}
}

// TestPutUDPSuper builds super-packets and splits them as the kernel does
// (__udp_gso_segment: each segment's length, its checksum adjusted by the length's
// difference, then completed over the segment like a device would): every datagram
// must come out as it went in, with a valid checksum.
func TestPutUDPSuper(t *testing.T) {
	for _, fam := range []struct{ src, dst string }{
		{"10.0.0.1:5000", "10.0.0.2:53"},
		{"[fd00::1]:5000", "[fd00::2]:443"},
	} {
		for _, sizes := range [][]int{{1400, 1400}, {1200, 1200, 1200, 77}, {1, 1, 1}} {
			t.Run(fmt.Sprintf("%s/%v", fam.src, sizes), func(t *testing.T) {
				src, dst := netip.MustParseAddrPort(fam.src), netip.MustParseAddrPort(fam.dst)
				var run []*stack.PacketBuffer
				var payloads [][]byte
				for i, n := range sizes {
					b := make([]byte, n)
					for j := range b {
						b[j] = byte(i*31 + j)
					}
					payloads = append(payloads, b)
					run = append(run, udpTestPacket(t, src, dst, b, nil))
				}
				defer func() {
					for _, p := range run {
						p.DecRef()
					}
				}()
				if got := udpRun(run); got != len(run) {
					t.Fatalf("udpRun = %d, want %d", got, len(run))
				}
				var hdr [udpSuperHdrMax]byte
				var vh [vnetHdrLen]byte
				h := putUDPSuper(&hdr, &vh, run)
				var super []byte
				super = append(super, h...)
				for _, p := range run {
					for _, s := range payloadSlices(nil, p) {
						super = append(super, s...)
					}
				}
				ne := binary.NativeEndian
				l3 := int(ne.Uint16(vh[6:]))
				seg := int(ne.Uint16(vh[4:]))
				if vh[0] != vnetFlagNeedsCsum || vh[1] != vnetGSOUDPL4 || int(ne.Uint16(vh[2:])) != len(h) ||
					ne.Uint16(vh[8:]) != udpCsumOffset || seg != sizes[0] {
					t.Fatalf("virtio-net header % x", vh)
				}
				if src.Addr().Is4() {
					ip := header.IPv4(super)
					if !ip.IsChecksumValid() || int(ip.TotalLength()) != len(super) {
						t.Fatalf("IPv4 header: checksum valid %v, total length %d of %d", ip.IsChecksumValid(), ip.TotalLength(), len(super))
					}
				} else if int(header.IPv6(super).PayloadLength()) != len(super)-l3 {
					t.Fatalf("IPv6 payload length %d, want %d", header.IPv6(super).PayloadLength(), len(super)-l3)
				}
				superUDP := header.UDP(super[l3:])
				if int(superUDP.Length()) != len(super)-l3 {
					t.Fatalf("UDP length %d, want %d", superUDP.Length(), len(super)-l3)
				}
				// The kernel's split.
				data := super[l3+header.UDPMinimumSize:]
				for i, want := range payloads {
					n := min(seg, len(data))
					segLen := uint16(header.UDPMinimumSize + n)
					u := make(header.UDP, header.UDPMinimumSize, int(segLen))
					copy(u, superUDP[:header.UDPMinimumSize])
					check := ^checksum.Combine(^superUDP.Checksum(), superUDP.Length()) // csum16_sub
					check = checksum.Combine(check, segLen)                             // csum16_add
					u.SetLength(segLen)
					u.SetChecksum(check)
					u = append(u, data[:n]...)
					data = data[n:]
					u.SetChecksum(^checksum.Checksum(u, 0)) // the device completes it
					if !bytes.Equal(u[header.UDPMinimumSize:], want) {
						t.Fatalf("segment %d: payload differs", i)
					}
					if !u.IsChecksumValid(tcpipAddr(src.Addr()), tcpipAddr(dst.Addr()), checksum.Checksum(u.Payload(), 0)) {
						t.Fatalf("segment %d: checksum %#04x invalid", i, u.Checksum())
					}
				}
				if len(data) != 0 {
					t.Fatalf("%d bytes left after the last segment", len(data))
				}
			})
		}
	}
}
