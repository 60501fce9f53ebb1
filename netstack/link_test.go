package netstack

import (
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
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
