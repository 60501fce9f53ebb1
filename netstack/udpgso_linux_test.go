//go:build linux

package netstack

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// BenchmarkTUNUDPWrite measures what it costs to write UDP datagrams to a TUN and
// have the kernel deliver them to a local socket (an application without UDP GRO,
// as iperf3): through the offload path's own writes, one writev a datagram
// (vnetIO.write, 1) against UDP GSO super-packets of several (vnetIO.writeUDPRun),
// which the kernel splits. 1400-byte datagrams, IPv4; the writer stays at most 64
// datagrams (or two super-packets) ahead of the reader, so that none is lost.
// cpu-ns/dgram is the whole process's CPU, the receiving socket's work (a recvfrom
// each) included (docs/performance-changes.md, change 27):
//
//	sudo go test -run '^$' -bench TUNUDPWrite -benchtime 200000x -count 3 ./netstack/
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
	v := newVnetIO(dev)
	if v == nil {
		b.Fatal("no offload path on a wireguard-go TUN")
	}
	var pc *net.UDPConn
	var err error
	ns.in(b, func() { pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1), Port: 9999}) })
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
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
			if err != nil || k != payload {
				break
			}
			n++
			<-tokens
		}
		got <- n
	}()

	// One run of per datagrams from 10.77.0.2:5000, as gVisor would queue them,
	// written again and again.
	src, dst := netip.MustParseAddrPort("10.77.0.2:5000"), netip.MustParseAddrPort("10.77.0.1:9999")
	run := make([]*stack.PacketBuffer, per)
	for i := range run {
		run[i] = udpTestPacket(b, src, dst, make([]byte, payload), nil)
	}
	defer func() {
		for _, p := range run {
			p.DecRef()
		}
	}()

	b.ResetTimer()
	start := cpuTime()
	for sent := 0; sent < total; sent += per {
		for range per {
			tokens <- struct{}{}
		}
		if per == 1 {
			err = v.write(run[0])
		} else {
			var k int
			k, err = v.writeUDPRun(run)
			if err == nil && k != per {
				b.Fatalf("wrote %d datagrams of a run of %d", k, per)
			}
		}
		if err != nil {
			b.Fatalf("write: %v", err)
		}
	}
	n := <-got
	used := cpuTime() - start
	b.StopTimer()
	if n != total {
		b.Fatalf("%d of %d datagrams arrived whole", n, total)
	}
	b.ReportMetric(float64(used.Nanoseconds())/float64(n), "cpu-ns/dgram")
}

// TestUDPSuperPacketsRealTUN sends bursts of datagrams from a destination through the
// Stack to a kernel socket behind a real TUN, over IPv4 and IPv6: every datagram
// must arrive whole, once and in order, and the link must have written runs of them
// as UDP GSO super-packets (the kernel splits them; a wrong header or length would
// lose or garble datagrams).
func TestUDPSuperPacketsRealTUN(t *testing.T) {
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

	ns, v := newOffloadStack(t, &fakeHandler{udpTarget: burst.LocalAddr().String()})
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
