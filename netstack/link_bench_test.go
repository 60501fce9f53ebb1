package netstack

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"testing"

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
// the batching saves are not in these figures: see bench/run.sh for those). ns/KiB is CPU per KiB of IP packets moved:
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

// reportPerKiB adds the ns/KiB metric: CPU time per KiB moved.
func reportPerKiB(b *testing.B, totalBytes int64) {
	if totalBytes > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(totalBytes)/1024), "ns/KiB")
	}
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
			ep.Attach(&d)
			ep.Wait()
			b.StopTimer()
			if d.pkts != b.N {
				b.Fatalf("delivered %d packets, want %d", d.pkts, b.N)
			}
			reportPerKiB(b, int64(d.nbytes))
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
			reportPerKiB(b, int64(b.N)*int64(size))
		})
	}
}
