package netstack

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The link benchmarks measure linkEndpoint alone: reading batches of consecutive TCP
// segments from a device into gVisor packet buffers, through GRO (a counting
// dispatcher stands in for gVisor), and queueing gVisor's packet lists for the
// device and writing them in batches (the device discards them, so the syscalls
// the batching saves are not in these figures: see bench/run.sh for those). cpu-ns/KiB is CPU time per KiB of IP packets moved:
//
//	go test -run '^$' -bench Link -benchmem ./netstack/

// benchDev is a tun.Device whose Read returns copies of one packet, batch at a time,
// until left packets were read, then os.ErrClosed (readOnly) or blocks until Close.
// Write counts and discards; done is closed once want packets were written.
type benchDev struct {
	pkt      []byte
	batch    int
	left     int
	mtu      int
	readOnly bool
	seq      uint32

	closed    chan struct{}
	closeOnce sync.Once
	written   int // only Write (one goroutine: writeLoop) touches it
	want      int
	done      chan struct{}
}

func newBenchDev(pkt []byte, mtu, left int, readOnly bool, want int) *benchDev {
	return &benchDev{pkt: pkt, batch: 128, left: left, mtu: mtu, readOnly: readOnly, want: want,
		closed: make(chan struct{}), done: make(chan struct{})}
}

func (d *benchDev) File() *os.File           { return nil }
func (d *benchDev) MTU() (int, error)        { return d.mtu, nil }
func (d *benchDev) Name() (string, error)    { return "bench0", nil }
func (d *benchDev) Events() <-chan tun.Event { return nil }
func (d *benchDev) BatchSize() int           { return d.batch }
func (d *benchDev) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

func (d *benchDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.left <= 0 {
		if !d.readOnly {
			<-d.closed
		}
		return 0, os.ErrClosed
	}
	n := min(len(bufs), d.left)
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], d.pkt)
		// Consecutive segments of one flow, as a bulk transfer sends them.
		binary.BigEndian.PutUint32(bufs[i][offset+24:], d.seq)
		d.seq += uint32(len(d.pkt) - 40)
	}
	d.left -= n
	return n, nil
}

func (d *benchDev) Write(bufs [][]byte, offset int) (int, error) {
	d.written += len(bufs)
	if d.written >= d.want && d.want > 0 {
		d.want = 0
		close(d.done)
	}
	return len(bufs), nil
}

// countDispatcher counts the packets and bytes it is handed.
type countDispatcher struct {
	mu           sync.Mutex
	pkts, nbytes int
}

func (c *countDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.mu.Lock()
	c.pkts++
	c.nbytes += pkt.Size()
	c.mu.Unlock()
}

func (c *countDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// benchPacket is an IPv4/TCP packet of size bytes (headers valid, payload zero).
func benchPacket(size int) []byte {
	p := make([]byte, size)
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(size), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 7, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{198, 51, 100, 10}),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 5201)
	p[32] = 5 << 4 // data offset
	return p
}

// cpuPerKiB starts measuring the process's CPU time; the function it returns stops
// and reports it per KiB of total bytes as cpu-ns/KiB (user + system time of the
// whole process, from getrusage: every goroutine, not only the benchmark's).
func cpuPerKiB(b *testing.B) func(total int64) {
	start := cpuTime()
	return func(total int64) {
		if used := cpuTime() - start; total > 0 {
			b.ReportMetric(float64(used.Nanoseconds())/(float64(total)/1024), "cpu-ns/KiB")
		}
	}
}

// cpuTime is the user + system time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkLinkRead(b *testing.B) {
	for _, size := range []int{1500, 65000} {
		b.Run(fmt.Sprintf("pkt%d", size), func(b *testing.B) {
			dev := newBenchDev(benchPacket(size), size, b.N, true, 0)
			ep := newLinkEndpoint(dev, uint32(size), zap.NewNop(), nil)
			var d countDispatcher
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			stop := cpuPerKiB(b)
			ep.Attach(&d)
			ep.Wait()
			b.StopTimer()
			stop(int64(d.nbytes))
			if d.nbytes != b.N*(size-40)+d.pkts*40 {
				b.Fatalf("delivered %d bytes in %d packets, want %d bytes of payload", d.nbytes, d.pkts, b.N*(size-40))
			}
			b.ReportMetric(float64(b.N)/float64(d.pkts), "merged/pkt")
		})
	}
}

func BenchmarkLinkWrite(b *testing.B) {
	for _, size := range []int{1500, 65000} {
		b.Run(fmt.Sprintf("pkt%d", size), func(b *testing.B) {
			dev := newBenchDev(nil, size, 0, false, b.N)
			ep := newLinkEndpoint(dev, uint32(size), zap.NewNop(), nil)
			ep.Attach(&countDispatcher{})
			defer func() { dev.Close(); ep.Wait() }()
			pkt := benchPacket(size)
			const per = 16 // packets per WritePackets call
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			stop := cpuPerKiB(b)
			for done := 0; done < b.N; done += per {
				var list stack.PacketBufferList
				for range min(per, b.N-done) {
					list.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)}))
				}
				if _, err := ep.WritePackets(list); err != nil {
					b.Fatal(err)
				}
				list.DecRef()
			}
			<-dev.done
			b.StopTimer()
			stop(int64(b.N) * int64(size))
		})
	}
}
