//go:build linux

package netstack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// BenchmarkTUNUDPWrite measures what the kernel spends to take UDP datagrams written
// to a TUN and deliver them to a local socket (an application without UDP GRO, as
// iperf3): one writev a datagram, as the link writes them now, against UDP GSO
// super-packets (VIRTIO_NET_HDR_GSO_UDP_L4) of several datagrams, which the kernel
// splits. 1400-byte datagrams, IPv4; the writer stays at most 64 datagrams (or two
// super-packets) ahead of the reader, so that none is lost. cpu-ns/dgram is the
// whole process's CPU, the receiving socket's work (a recvfrom each) included. A
// measurement for a change not made yet (docs/performance-changes.md, change 27):
// the link writes one datagram a writev today.
//
//	sudo go test -run '^$' -bench TUNUDPWrite -count 3 ./netstack/
func BenchmarkTUNUDPWrite(b *testing.B) {
	for _, per := range []int{1, 4, 16, 32} {
		b.Run(fmt.Sprintf("dgrams-per-write-%d", per), func(b *testing.B) { benchTUNUDPWrite(b, per) })
	}
}

func benchTUNUDPWrite(b *testing.B, per int) {
	const payload = 1400
	ns := newTestNetns(b)
	dev := ns.createTUN(b, "tvnet0", 1500)
	defer dev.Close()
	ns.ip(b, "link", "set", "tvnet0", "up")
	ns.ip(b, "addr", "add", "10.77.0.1/24", "dev", "tvnet0")
	if per > 1 {
		var err error
		ctl, cerr := dev.File().SyscallConn()
		if cerr != nil {
			b.Fatal(cerr)
		}
		ctl.Control(func(fd uintptr) {
			err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6|unix.TUN_F_USO4|unix.TUN_F_USO6)
		})
		if err != nil {
			b.Skipf("no UDP segmentation offload on this TUN: %v", err)
		}
	}
	var pc *net.UDPConn
	var err error
	ns.in(b, func() { pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1), Port: 9999}) })
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	pc.SetReadBuffer(8 << 20)
	got := make(chan int, 1)
	total := b.N
	// The writer keeps at most window datagrams ahead of the reader (the socket's
	// buffer holds about 90), blocking, not spinning, for the rest.
	window := max(64, 2*per)
	tokens := make(chan struct{}, window)
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for n < total {
			pc.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := pc.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if k != payload {
				break
			}
			n++
			<-tokens
		}
		got <- n
	}()

	// One super-packet: IPv4 + UDP header for per datagrams, then the payloads.
	src, dst := [4]byte{10, 77, 0, 2}, [4]byte{10, 77, 0, 1}
	pkt := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+per*payload)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpipAddr4(src), DstAddr: tcpipAddr4(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	udpLen := uint16(len(pkt) - header.IPv4MinimumSize)
	u := header.UDP(pkt[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 5000, DstPort: 9999, Length: udpLen})
	var hdr [vnetHdrLen]byte
	if per == 1 {
		xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpipAddr4(src), tcpipAddr4(dst), udpLen)
		xsum = checksum.Checksum(pkt[header.IPv4MinimumSize+header.UDPMinimumSize:], xsum)
		u.SetChecksum(^u.CalculateChecksum(xsum))
	} else {
		// A partial checksum: the pseudo-header's sum, which the kernel adjusts for
		// every segment's length and completes.
		u.SetChecksum(header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpipAddr4(src), tcpipAddr4(dst), udpLen))
		hdr[0] = vnetFlagNeedsCsum
		hdr[1] = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
		ne := binary.NativeEndian
		ne.PutUint16(hdr[2:], header.IPv4MinimumSize+header.UDPMinimumSize)
		ne.PutUint16(hdr[4:], payload)
		ne.PutUint16(hdr[6:], header.IPv4MinimumSize)
		ne.PutUint16(hdr[8:], 6)
	}
	iov := []unix.Iovec{{Base: &hdr[0]}, {Base: &pkt[0]}}
	iov[0].SetLen(len(hdr))
	iov[1].SetLen(len(pkt))
	fd := dev.File().Fd()

	b.ResetTimer()
	start := cpuTime()
	sent := 0
	for sent < total {
		for range per {
			tokens <- struct{}{}
		}
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e == unix.EAGAIN {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		if e != 0 {
			b.Fatalf("writev: %v", e)
		}
		sent += per
	}
	n := <-got
	used := cpuTime() - start
	b.StopTimer()
	if n != total {
		b.Fatalf("%d of %d datagrams arrived whole", n, total)
	}
	b.ReportMetric(float64(used.Nanoseconds())/float64(n), "cpu-ns/dgram")
}

func tcpipAddr4(a [4]byte) tcpip.Address { return tcpip.AddrFrom4(a) }

// TestUDPSuperPacketsRealTUN sends bursts of datagrams from a destination through the
// Stack to a kernel socket behind a real TUN, over IPv4 and IPv6: every datagram
// must arrive whole, once and in order, and the link must have written runs of them
// as UDP GSO super-packets (the kernel splits them; a wrong header or length would
// lose or garble datagrams).
func TestUDPSuperPacketsRealTUN(t *testing.T) {
	ns := newTestNetns(t)
	dev := ns.createTUN(t, "tvnet0", 1500)
	ns.ip(t, "link", "set", "tvnet0", "up")
	ns.ip(t, "addr", "add", "10.77.0.1/24", "dev", "tvnet0")
	ns.ip(t, "-6", "addr", "add", "fd77::1/64", "dev", "tvnet0", "nodad")

	// The destination: each request "N SIZE" is answered by N datagrams of SIZE
	// bytes, numbered, as fast as it can send them.
	burst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 100)
		for {
			n, from, err := burst.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var count, size int
			fmt.Sscanf(string(buf[:n]), "%d %d", &count, &size)
			for i := range count {
				burst.WriteToUDP(burstDatagram(i, size), from)
			}
		}
	}()
	defer func() { burst.Close(); <-done }()

	st, err := New(dev, &fakeHandler{udpTarget: burst.LocalAddr().String()}, Options{MTU: 1500, Logger: zaptest.NewLogger(t), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v := st.link.vnet
	if v == nil {
		t.Fatal("a wireguard-go TUN on Linux did not take the offload path")
	}
	const count, size = 48, 1000 // under the socket's default receive buffer
	for _, dst := range []string{"10.77.0.2:53", "[fd77::2]:53"} {
		t.Run(dst, func(t *testing.T) {
			var c net.Conn
			ns.in(t, func() { c, err = net.Dial("udp", dst) })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := v.udpSuperOut.Load()
			buf := make([]byte, 2048)
			for b := 0; b < 20 && v.udpSuperOut.Load() == before; b++ {
				c.Write([]byte(fmt.Sprintf("%d %d", count, size)))
				for i := range count {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("burst %d: datagram %d: %v", b, i, err)
					}
					if want := burstDatagram(i, size); !bytes.Equal(buf[:n], want) {
						t.Fatalf("burst %d: datagram %d: %d bytes starting %q, want %d starting %q", b, i, n, buf[:min(n, 8)], len(want), want[:8])
					}
				}
			}
			if v.udpSuperOut.Load() == before {
				t.Fatal("20 bursts and not one UDP super-packet written")
			}
			t.Logf("UDP super-packets written: %d", v.udpSuperOut.Load()-before)
		})
	}
}

// burstDatagram is the i-th datagram of a burst: its number, then a pattern.
func burstDatagram(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i + j)
	}
	copy(b, fmt.Sprintf("%06d", i))
	return b
}
