package netstack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// synPacket is an IPv4 or IPv6 TCP packet from 10.7.0.2 / fd00::2 port 40000 to
// 198.51.100.10 / fd00::10 port 443 with the given flags and sequence number, and
// opts bytes of IPv4 options.
func synPacket(v6 bool, flags header.TCPFlags, seq uint32, opts int) []byte {
	tcp := make([]byte, header.TCPMinimumSize)
	header.TCP(tcp).Encode(&header.TCPFields{
		SrcPort: 40000, DstPort: 443, SeqNum: seq, Flags: flags,
		DataOffset: header.TCPMinimumSize, WindowSize: 65535,
	})
	if v6 {
		p := make([]byte, header.IPv6MinimumSize, header.IPv6MinimumSize+len(tcp))
		header.IPv6(p).Encode(&header.IPv6Fields{
			PayloadLength: uint16(len(tcp)), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64,
			SrcAddr: tcpip.AddrFrom16([16]byte{0: 0xfd, 15: 2}), DstAddr: tcpip.AddrFrom16([16]byte{0: 0xfd, 15: 0x10}),
		})
		return append(p, tcp...)
	}
	hl := header.IPv4MinimumSize + opts
	p := make([]byte, hl, hl+len(tcp))
	header.IPv4(p).Encode(&header.IPv4Fields{
		TotalLength: uint16(hl + len(tcp)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 7, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{198, 51, 100, 10}),
	})
	p[0] = 4<<4 | byte(hl/4)
	return append(p, tcp...)
}

// specSYN decodes a SYN by the byte offsets of RFC 791, 8200 and 9293, independently
// of gVisor's header accessors: parseSYN must agree with it on every input.
func specSYN(pkt []byte) (flowKey, uint32, bool) {
	if len(pkt) == 0 {
		return flowKey{}, 0, false
	}
	var src, dst netip.Addr
	var tcp []byte
	switch pkt[0] >> 4 {
	case 4:
		hl := int(pkt[0]&0x0f) * 4
		if len(pkt) < 20 || hl < 20 || len(pkt) < hl+20 || pkt[9] != 6 || binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return flowKey{}, 0, false
		}
		src, dst, tcp = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), pkt[hl:]
	case 6:
		if len(pkt) < 60 || pkt[6] != 6 {
			return flowKey{}, 0, false
		}
		src, dst, tcp = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), pkt[40:]
	default:
		return flowKey{}, 0, false
	}
	const syn, ack = 0x02, 0x10
	if tcp[13]&(syn|ack) != syn {
		return flowKey{}, 0, false
	}
	sport, dport := binary.BigEndian.Uint16(tcp), binary.BigEndian.Uint16(tcp[2:])
	return flowKey{netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)}, binary.BigEndian.Uint32(tcp[4:]), true
}

// FuzzParseSYN: parseSYN reads packets any local program can write into the TUN. On
// any bytes it returns without a panic and agrees with a decoding by byte offsets:
// the same SYNs recognised, the same flow and sequence number.
func FuzzParseSYN(f *testing.F) {
	f.Add(synPacket(false, header.TCPFlagSyn, 1, 0))
	f.Add(synPacket(false, header.TCPFlagSyn, 0xfffffff0, 8))
	f.Add(synPacket(false, header.TCPFlagSyn|header.TCPFlagAck, 1, 0))
	f.Add(synPacket(true, header.TCPFlagSyn, 7, 0))
	f.Add(synPacket(true, header.TCPFlagAck, 7, 0))
	frag := synPacket(false, header.TCPFlagSyn, 1, 0)
	frag[7] = 1 // fragment offset 8
	f.Add(frag)
	f.Add([]byte{0x4f})
	f.Add([]byte{0x60})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		k, seq, ok := parseSYN(pkt)
		wk, wseq, wok := specSYN(pkt)
		if ok != wok || k != wk || seq != wseq {
			t.Fatalf("parseSYN(%x) = %v %d %v, want %v %d %v", pkt, k, seq, ok, wk, wseq, wok)
		}
	})
}

// TestParseSYN: the seeds decode to what they were built from.
func TestParseSYN(t *testing.T) {
	k, seq, ok := parseSYN(synPacket(false, header.TCPFlagSyn, 0xfffffff0, 8))
	want := flowKey{netip.MustParseAddrPort("10.7.0.2:40000"), netip.MustParseAddrPort("198.51.100.10:443")}
	if !ok || k != want || seq != 0xfffffff0 {
		t.Errorf("IPv4 SYN with options: %v %d %v", k, seq, ok)
	}
	k, seq, ok = parseSYN(synPacket(true, header.TCPFlagSyn, 7, 0))
	want = flowKey{netip.MustParseAddrPort("[fd00::2]:40000"), netip.MustParseAddrPort("[fd00::10]:443")}
	if !ok || k != want || seq != 7 {
		t.Errorf("IPv6 SYN: %v %d %v", k, seq, ok)
	}
	if _, _, ok := parseSYN(synPacket(false, header.TCPFlagSyn|header.TCPFlagAck, 1, 0)); ok {
		t.Error("a SYN-ACK parsed as a SYN")
	}
}

// FuzzParseEcho: an echo request is recognised exactly when its type says so, its
// identifier, sequence and data are the message's, and the data is a copy (the
// packet's buffer goes back to gVisor while the ping is still in flight).
func FuzzParseEcho(f *testing.F) {
	f.Add([]byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'h', 'i'}, false)
	f.Add([]byte{128, 0, 0, 0, 0x12, 0x34, 0, 1}, true)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, false)
	f.Add([]byte{8, 0, 0}, false)
	f.Fuzz(func(t *testing.T, m []byte, v6 bool) {
		e, ok := parseEcho(m, v6)
		want := byte(8)
		if v6 {
			want = 128
		}
		if wok := len(m) >= 8 && m[0] == want; ok != wok {
			t.Fatalf("parseEcho(%x, v6=%v) ok = %v, want %v", m, v6, ok, wok)
		}
		if !ok {
			return
		}
		if e.id != binary.BigEndian.Uint16(m[4:]) || e.seq != binary.BigEndian.Uint16(m[6:]) || !bytes.Equal(e.data, m[8:]) {
			t.Fatalf("parseEcho(%x) = %+v", m, e)
		}
		if len(e.data) > 0 {
			m[8] ^= 0xff
			if e.data[0] == m[8] {
				t.Fatal("the echo's data shares the packet's buffer")
			}
		}
	})
}
