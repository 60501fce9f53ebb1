package netstack

import (
	"errors"
	"os"
	"sync"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunOffset is the headroom every buffer handed to the tun.Device has: Linux needs room
// for the virtio-net header when offloads are on, macOS for the 4-byte family header.
const tunOffset = 16

// linkEndpoint moves packets between a tun.Device and gVisor, in batches of
// dev.BatchSize(). One goroutine reads the device; gVisor's own goroutines write.
type linkEndpoint struct {
	dev   tun.Device
	mtu   uint32
	log   *zap.Logger
	batch int
	// tap sees every inbound packet before gVisor does (it records SYNs).
	tap func(pkt []byte)

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher
	started    bool
	onClose    func()

	wg sync.WaitGroup

	wmu   sync.Mutex
	wbufs [][]byte // reusable write buffers, one per packet slot
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(dev tun.Device, mtu uint32, log *zap.Logger, tap func([]byte)) *linkEndpoint {
	return &linkEndpoint{dev: dev, mtu: mtu, log: log, batch: max(1, dev.BatchSize()), tap: tap}
}

func (e *linkEndpoint) MTU() uint32                             { return e.mtu }
func (e *linkEndpoint) SetMTU(mtu uint32)                       { e.mtu = mtu }
func (e *linkEndpoint) MaxHeaderLength() uint16                 { return 0 }
func (e *linkEndpoint) LinkAddress() tcpip.LinkAddress          { return "" }
func (e *linkEndpoint) SetLinkAddress(tcpip.LinkAddress)        {}
func (e *linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (e *linkEndpoint) AddHeader(*stack.PacketBuffer)           {}
func (e *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (e *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Attach starts the read loop the first time a dispatcher is attached.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
	if d != nil && !e.started {
		e.started = true
		e.wg.Add(1)
		go e.readLoop()
	}
}

func (e *linkEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait waits for the read loop, which ends when the device is closed.
func (e *linkEndpoint) Wait() { e.wg.Wait() }

func (e *linkEndpoint) Close() {
	e.mu.Lock()
	f := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if f != nil {
		f()
	}
}

func (e *linkEndpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	e.onClose = f
	e.mu.Unlock()
}

func (e *linkEndpoint) readLoop() {
	defer e.wg.Done()
	bufs := make([][]byte, e.batch)
	for i := range bufs {
		bufs[i] = make([]byte, tunOffset+int(e.mtu)+64)
	}
	sizes := make([]int, e.batch)
	for {
		n, err := e.dev.Read(bufs, sizes, tunOffset)
		for i := 0; i < n; i++ {
			e.deliver(bufs[i][tunOffset : tunOffset+sizes[i]])
		}
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				continue // that batch lost some segments; TCP retransmits them
			}
			if errors.Is(err, os.ErrClosed) || errors.Is(err, tun.ErrTooManySegments) {
				return
			}
			e.log.Debug("tun read", zap.Error(err))
			return
		}
	}
}

func (e *linkEndpoint) deliver(pkt []byte) {
	if len(pkt) == 0 {
		return
	}
	if e.tap != nil {
		e.tap(pkt)
	}
	var proto tcpip.NetworkProtocolNumber
	switch pkt[0] >> 4 {
	case 4:
		proto = ipv4.ProtocolNumber
	case 6:
		proto = ipv6.ProtocolNumber
	default:
		return
	}
	e.mu.Lock()
	d := e.dispatcher
	e.mu.Unlock()
	if d == nil {
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	d.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
}

// WritePackets writes gVisor's outbound packets to the device as one batch.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	list := pkts.AsSlice()
	for len(e.wbufs) < len(list) {
		e.wbufs = append(e.wbufs, nil)
	}
	bufs := make([][]byte, 0, len(list))
	for i, pkt := range list {
		size := pkt.Size()
		b := e.wbufs[i]
		if cap(b) < tunOffset+size {
			b = make([]byte, tunOffset+size, tunOffset+max(size, int(e.mtu)))
			e.wbufs[i] = b
		}
		b = b[:tunOffset+size]
		pos := tunOffset
		for _, s := range pkt.AsSlices() {
			pos += copy(b[pos:], s)
		}
		bufs = append(bufs, b)
	}
	if _, err := e.dev.Write(bufs, tunOffset); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return 0, &tcpip.ErrClosedForSend{}
		}
		e.log.Debug("tun write", zap.Error(err))
		return 0, &tcpip.ErrAborted{}
	}
	return len(list), nil
}
