package netstack

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gateDev is a tun.Device whose Write blocks until open is closed.
type gateDev struct {
	open   chan struct{}
	closed chan struct{}
}

func (d *gateDev) File() *os.File           { return nil }
func (d *gateDev) MTU() (int, error)        { return 1500, nil }
func (d *gateDev) Name() (string, error)    { return "gate0", nil }
func (d *gateDev) Events() <-chan tun.Event { return nil }
func (d *gateDev) BatchSize() int           { return 1 }
func (d *gateDev) Close() error             { close(d.closed); return nil }
func (d *gateDev) Read([][]byte, []int, int) (int, error) {
	<-d.closed
	return 0, os.ErrClosed
}
func (d *gateDev) Write(bufs [][]byte, _ int) (int, error) {
	select {
	case <-d.open:
		return len(bufs), nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

// TestWriteQueueBoundedInBytes: with the device stalled, gVisor's writes of large
// packets (GSO segments on the offload path are up to 64 KiB) block once about
// maxWriteQueueBytes are queued — long before maxWriteQueue packets — and go on when
// the device takes them again.
func TestWriteQueueBoundedInBytes(t *testing.T) {
	dev := &gateDev{open: make(chan struct{}), closed: make(chan struct{})}
	e := newLinkEndpoint(dev, 1500, zap.NewNop(), nil)
	e.Attach(&countDispatcher{})
	defer func() { dev.Close(); e.Wait() }()

	const size, n = 60000, 100 // 100 × 60 kB: 6 MB, 100 packets
	sent := make(chan int, n)
	go func() {
		for i := range n {
			var l stack.PacketBufferList
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, size))})
			l.PushBack(pkt)
			if _, err := e.WritePackets(l); err != nil {
				pkt.DecRef()
				return
			}
			pkt.DecRef()
			sent <- i
		}
	}()
	// Wait until the writer stalls: no packet accepted for 200 ms.
	accepted := 0
	for stalled := false; !stalled; {
		select {
		case <-sent:
			accepted++
		case <-time.After(200 * time.Millisecond):
			stalled = true
		}
	}
	e.qmu.Lock()
	queued, qbytes := len(e.queue), e.qbytes
	e.qmu.Unlock()
	t.Logf("stalled after %d packets: %d queued, %d bytes", accepted, queued, qbytes)
	if accepted >= n || qbytes > maxWriteQueueBytes+size || qbytes < maxWriteQueueBytes {
		t.Fatalf("accepted %d of %d packets with the device stalled, %d bytes queued; want a stall at %d bytes",
			accepted, n, qbytes, maxWriteQueueBytes)
	}
	close(dev.open)
	for accepted < n {
		select {
		case <-sent:
			accepted++
		case <-time.After(5 * time.Second):
			t.Fatalf("writes did not go on once the device took packets again: %d of %d", accepted, n)
		}
	}
}

// recordDev is a tun.Device whose first Write blocks until release is closed, and
// which records the first byte of every packet written.
type recordDev struct {
	gateDev
	release chan struct{}
	mu      sync.Mutex
	calls   int
	written []byte
}

func (d *recordDev) Write(bufs [][]byte, off int) (int, error) {
	d.mu.Lock()
	d.calls++
	first := d.calls == 1
	d.mu.Unlock()
	if first {
		select {
		case <-d.release:
		case <-d.closed:
			return 0, os.ErrClosed
		}
	}
	d.mu.Lock()
	for _, b := range bufs {
		d.written = append(d.written, b[off])
	}
	d.mu.Unlock()
	return len(bufs), nil
}

// TestSparseFlowsFirst: while the device is busy, a small packet of a flow with
// nothing queued goes ahead of the queued bulk packets; packets of one flow keep
// their order (a small packet of a flow that has packets queued waits behind them).
func TestSparseFlowsFirst(t *testing.T) {
	dev := &recordDev{gateDev: gateDev{closed: make(chan struct{})}, release: make(chan struct{})}
	e := newLinkEndpoint(dev, 1500, zap.NewNop(), nil)
	e.Attach(&countDispatcher{})
	defer func() { dev.Close(); e.Wait() }()

	write := func(id byte, size int, flow uint32) {
		t.Helper()
		data := make([]byte, size)
		data[0] = id
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(data)})
		pkt.Hash = flow
		var l stack.PacketBufferList
		l.PushBack(pkt)
		if _, err := e.WritePackets(l); err != nil {
			t.Fatal(err)
		}
		pkt.DecRef()
	}
	write('a', 60000, 1) // taken by writeLoop, which then blocks in Write
	waitFor(t, "the first write", func() bool { dev.mu.Lock(); defer dev.mu.Unlock(); return dev.calls == 1 })
	write('b', 60000, 1)
	write('c', 60000, 1)
	write('d', 100, 1) // small, but flow 1 has packets queued: behind them
	write('e', 100, 2) // small, flow 2 has none: ahead of everything queued
	write('f', 100, 2) // flow 2 has 'e' queued: behind the queue, after 'e'
	write('g', 1400, 3)
	write('h', 60000, 4) // large: never ahead
	close(dev.release)
	waitFor(t, "every packet written", func() bool { dev.mu.Lock(); defer dev.mu.Unlock(); return len(dev.written) == 8 })
	if got, want := string(dev.written), "aegbcdfh"; got != want {
		t.Fatalf("written in the order %q, want %q", got, want)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestHeaderLen(t *testing.T) {
	tcp4 := benchPacket(200)
	tcp4opts := benchPacket(200)
	tcp4opts[32] = 8 << 4 // 12 bytes of TCP options
	udp6 := make([]byte, 100)
	udp6[0], udp6[6] = 6<<4, byte(header.UDPProtocolNumber)
	icmp4 := benchPacket(84)
	icmp4[9] = byte(header.ICMPv4ProtocolNumber)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want int
	}{
		{"ipv4 tcp", tcp4, 40},
		{"ipv4 tcp with options", tcp4opts, 52},
		{"ipv6 udp", udp6, 48},
		{"ipv4 icmp", icmp4, 20},
		{"ipv4 tcp cut in its header", tcp4[:30], 20},
		{"ipv4 too short", tcp4[:10], 0},
		{"ipv4 bad ihl", append([]byte{0x41}, tcp4[1:]...), 0},
		{"ipv6 too short", udp6[:39], 0},
		{"not ip", []byte{0x00, 1, 2}, 0},
		{"empty", nil, 0},
	} {
		if got := headerLen(tc.pkt); got != tc.want {
			t.Errorf("%s: headerLen = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestZeroCopyBufferKeepsPayload: gVisor's IPv4 input keeps a reference to the
// network header's view and then reads the header again; the payload of a packet read
// into a view must stay in that view (no copy of the chunk).
func TestZeroCopyBufferKeepsPayload(t *testing.T) {
	const size = 60000
	v := buffer.NewViewSize(size)
	pkt := v.AsSlice()
	copy(pkt, benchPacket(size))
	for i := 40; i < size; i++ {
		pkt[i] = byte(i)
	}
	pb := newPacketBuffer(zeroCopyBuffer(v, pkt), pkt[0])
	defer pb.DecRef()
	if _, ok := pb.NetworkHeader().Consume(header.IPv4MinimumSize); !ok {
		t.Fatal("Consume failed")
	}
	held := pb.NetworkHeader().View() // what ipv4's parseAndValidate returns
	defer held.Release()
	if got := header.IPv4(pb.NetworkHeader().Slice()).TotalLength(); got != size {
		t.Fatalf("header read again: total length %d, want %d", got, size)
	}
	var got []byte
	for _, s := range pb.AsSlices() {
		got = append(got, s...)
	}
	if !bytes.Equal(got, pkt) {
		t.Fatal("packet bytes changed")
	}
	slices := pb.AsSlices()
	last := slices[len(slices)-1]
	if &last[len(last)-1] != &pkt[size-1] {
		t.Fatal("the payload was copied out of the view it was read into")
	}
}

// FuzzHeaderLen: any bytes read from the TUN device give a header length without a
// panic, and the buffer zeroCopyBuffer makes of them holds exactly those bytes.
func FuzzHeaderLen(f *testing.F) {
	f.Add(benchPacket(200))
	f.Add(benchPacket(40))
	udp6 := make([]byte, 100)
	udp6[0], udp6[6] = 6<<4, byte(header.UDPProtocolNumber)
	f.Add(udp6)
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		h := headerLen(pkt)
		if h < 0 {
			t.Fatalf("headerLen = %d", h)
		}
		if len(pkt) == 0 {
			return
		}
		v := buffer.NewViewWithData(pkt)
		b := zeroCopyBuffer(v, v.AsSlice())
		defer b.Release()
		if got := b.Flatten(); !bytes.Equal(got, pkt) {
			t.Fatalf("zeroCopyBuffer changed the bytes: %x, want %x", got, pkt)
		}
	})
}
