package netstack

import (
	"errors"
	"os"
	"slices"
	"sync"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// The link between the TUN device and gVisor. Per-packet work dominates the cost of
// a userspace stack at MTU 1500 (docs/performance.md), so both directions move
// packets in batches and merge TCP segments into large ones where they can. On a
// Linux TUN with virtio-net headers the link reads and writes the device itself and
// TCP segments are never split (the offload path, vnet_linux.go); on any other
// device (below) it goes through the device's Read and Write:
//
//   - Inbound, one goroutine (readLoop) reads a batch from the device (wireguard-go
//     splits the kernel's GSO super-packets into MTU-sized segments) and passes it
//     through gVisor's GRO, which merges consecutive segments of a TCP flow into one
//     packet of up to 64 KiB before gVisor's TCP sees them. gVisor runs inline on
//     that goroutine: when it is slow, the device is simply read more slowly and
//     the kernel's TUN queue, then the application's TCP, push back. Nothing is
//     dropped in between.
//   - Outbound, gVisor's goroutines queue packets (WritePackets) and one goroutine
//     (writeLoop) writes what has accumulated as one batch: wireguard-go coalesces
//     the TCP segments of a batch into GSO super-packets (GRO on write), one write
//     call each, which the kernel delivers to the application as one. The queue is
//     bounded, in packets and in bytes; a full queue blocks the writer in gVisor
//     (the TCP sender) until the device caught up: backpressure, not drops. A lone
//     small packet on an idle link skips the queue and is written by gVisor's
//     goroutine itself (latency). A small packet of a flow that has nothing queued
//     (an interactive reply, an ACK, a DNS answer) goes ahead of the bulk flows'
//     packets (sparse flows first, as fq_codel does): a full queue is about 2 ms of
//     a download here, and an interactive exchange would otherwise wait that long at
//     every turn. Packets of one flow never overtake each other.

// tunOffset is the headroom every buffer handed to the tun.Device has: Linux needs room
// for the virtio-net header when offloads are on, macOS for the 4-byte family header.
const tunOffset = 16

const (
	// maxWriteQueue bounds the packets waiting for writeLoop, and maxWriteQueueBytes
	// their bytes: on the offload path a packet is up to 64 KiB, and 512 of them would
	// be 32 MiB of queue ahead of an interactive flow's packets.
	maxWriteQueue      = 512
	maxWriteQueueBytes = 1 << 20
	// maxWriteBatch bounds the packets of one dev.Write.
	maxWriteBatch = 64
	// sparseMax is the largest packet that may go ahead of the queue, and
	// maxSparse how many may be ahead at once (beyond it they queue in order; a
	// lone sparse packet may then also exceed the queue's bounds by that many).
	sparseMax = 1500
	maxSparse = 64
	// flowBuckets is the size of the table that counts queued packets by flow
	// (stack.PacketBuffer.Hash: random per TCP connection, 0 for other packets).
	// Flows that share a bucket only lose the right to go first.
	flowBuckets = 256
	// coalesceCap is the capacity of a write buffer: room for wireguard-go to merge
	// segments into a packet of up to 64 KiB.
	coalesceCap = tunOffset + 1<<16
)

// linkEndpoint moves packets between a tun.Device and gVisor.
type linkEndpoint struct {
	dev   tun.Device
	mtu   uint32
	log   *zap.Logger
	batch int // packets per dev.Read
	// tap sees every inbound packet before gVisor does (it records SYNs).
	tap func(pkt []byte)
	// vnet is the offload path of a Linux TUN with virtio-net headers
	// (vnet_linux.go), or nil: the device is then read and written through its
	// Read and Write.
	vnet *vnetIO

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher
	started    bool
	onClose    func()

	wg sync.WaitGroup // readLoop and writeLoop

	// The outbound queue, guarded by qmu. queue holds packets gVisor handed over
	// (each with a reference of ours).
	qmu    sync.Mutex
	queue  []*stack.PacketBuffer
	qbytes int // the bytes of the packets in queue
	// nsparse is how many packets at the front of queue went ahead of the others;
	// flows counts by flow bucket the packets in queue and those taken by the
	// writer and not yet written.
	nsparse int
	flows   [flowBuckets]uint16
	spare   []*stack.PacketBuffer // the slice writeLoop hands back, reused (writeLoop's only)
	qclosed bool
	// writing is set while a batch is being written: by writeLoop, or by
	// WritePackets itself for a lone small packet that finds the queue empty (see
	// there). The holder owns one, the buffer slice for that lone packet.
	writing bool
	one     [][]byte
	work    *sync.Cond // writeLoop waits for packets
	space   *sync.Cond // WritePackets waits for room

	bufPool sync.Pool // *[]byte of cap coalesceCap, for writeLoop
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(dev tun.Device, mtu uint32, log *zap.Logger, tap func([]byte)) *linkEndpoint {
	e := &linkEndpoint{dev: dev, mtu: mtu, log: log, batch: readBatch(dev.BatchSize(), int(mtu)), tap: tap,
		vnet: newVnetIO(dev)}
	e.work = sync.NewCond(&e.qmu)
	e.space = sync.NewCond(&e.qmu)
	size := max(coalesceCap, tunOffset+int(mtu))
	e.bufPool.New = func() any { b := make([]byte, size); return &b }
	return e
}

// readBatch is how many buffers one dev.Read gets. On Linux with offloads
// wireguard-go returns the segments of one GSO packet (at most 64 KiB) per Read, so
// more than 64 KiB / MSS buffers are never filled: with a large MTU a few suffice.
func readBatch(devBatch, mtu int) int {
	need := 1<<16/max(mtu-100, 500) + 2
	return max(1, min(devBatch, need))
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

// SupportedGSO tells gVisor whether it may hand over TCP segments larger than the
// MTU, for the device to segment (host GSO): on the offload path, where the kernel
// takes them as they are.
func (e *linkEndpoint) SupportedGSO() stack.SupportedGSO {
	if e.vnet != nil {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// GSOMaxSize is the largest segment gVisor hands over with host GSO: an IP packet's
// limit (gVisor subtracts room for headers).
func (e *linkEndpoint) GSOMaxSize() uint32 {
	if e.vnet != nil {
		return 1 << 16
	}
	return 0
}

// Attach starts the read and write loops the first time a dispatcher is attached.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
	if d != nil && !e.started {
		e.started = true
		e.wg.Add(2)
		go e.readLoop()
		go e.writeLoop()
	}
}

func (e *linkEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait waits for the read and write loops, which end when the device is closed.
func (e *linkEndpoint) Wait() { e.wg.Wait() }

func (e *linkEndpoint) Close() {
	e.closeQueue()
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

// closeQueue ends writeLoop and fails later writes; queued packets are dropped.
func (e *linkEndpoint) closeQueue() {
	e.qmu.Lock()
	e.qclosed = true
	e.qmu.Unlock()
	e.work.Broadcast()
	e.space.Broadcast()
}

func (e *linkEndpoint) readLoop() {
	defer e.wg.Done()
	// The device is closed (or broken): nothing more can be written either.
	defer e.closeQueue()
	if e.vnet != nil {
		e.readVnet()
		return
	}
	// The device reads straight into gVisor views: a large packet's view becomes
	// its packet buffer as it is (and a new view takes its place), so the bulk of
	// the bytes is not copied on the way in. Small packets are copied into a
	// buffer of their own size instead, so that an ACK does not pin a whole view
	// in gVisor's queues.
	size := tunOffset + int(e.mtu) + 64
	zeroCopy := size <= buffer.MaxChunkSize
	views := make([]*buffer.View, e.batch)
	bufs := make([][]byte, e.batch)
	for i := range bufs {
		if zeroCopy {
			views[i] = buffer.NewViewSize(size)
			bufs[i] = views[i].AsSlice()
		} else {
			bufs[i] = make([]byte, size)
		}
	}
	defer func() {
		for _, v := range views {
			if v != nil {
				v.Release()
			}
		}
	}()
	sizes := make([]int, e.batch)
	var g gro.GRO
	g.Init(true)
	for {
		n, err := e.dev.Read(bufs, sizes, tunOffset)
		if n > 0 {
			e.mu.Lock()
			g.Dispatcher = e.dispatcher
			e.mu.Unlock()
			for i := range n {
				pkt := bufs[i][tunOffset : tunOffset+sizes[i]]
				if g.Dispatcher == nil || !e.accept(pkt) {
					continue
				}
				var pb *stack.PacketBuffer
				if zeroCopy && sizes[i] >= zeroCopyMin {
					v := views[i]
					v.TrimFront(tunOffset)
					v.CapLength(sizes[i])
					// Packets of a usual MTU keep their headers: GRO merges them,
					// and the one clone of the merged packet's first chunk by the
					// IP input (see zeroCopyBuffer) costs less than a header copy
					// per packet. A large TUN MTU gets the split.
					var b buffer.Buffer
					if sizes[i] >= headerSplitMin {
						b = zeroCopyBuffer(v, pkt)
					} else {
						b = buffer.MakeWithView(v)
					}
					pb = newPacketBuffer(b, pkt[0])
					views[i] = buffer.NewViewSize(size)
					bufs[i] = views[i].AsSlice()
				} else {
					pb = newPacketBuffer(buffer.MakeWithData(pkt), pkt[0])
				}
				g.Enqueue(pb) // delivered now, or merged and delivered at Flush
				pb.DecRef()
			}
			g.Flush()
		}
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				continue // that batch lost some segments; TCP retransmits them
			}
			if !errors.Is(err, os.ErrClosed) {
				e.log.Debug("tun read", zap.Error(err))
			}
			return
		}
	}
}

// readVnet is readLoop on the offload path: one packet per read, a TCP super-packet
// of up to 64 KiB as it is, read straight into a gVisor view that becomes its packet
// buffer. Packets of less than zeroCopyMaxWaste of a view are copied into a buffer
// of their own size instead, so that they do not pin a 64 KiB view in gVisor's
// queues.
func (e *linkEndpoint) readVnet() {
	var hdr [vnetHdrLen]byte
	view := buffer.NewViewSize(buffer.MaxChunkSize)
	defer func() { view.Release() }()
	for {
		n, err := e.vnet.read(&hdr, view.AsSlice())
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			e.log.Debug("tun read", zap.Error(err))
			if errors.Is(err, errShortRead) {
				continue
			}
			return
		}
		pkt := view.AsSlice()[:n]
		if !inboundOK(&hdr) {
			e.log.Debug("tun read: packet with an unexpected GSO type dropped", zap.Uint8("gso", hdr[1]))
			continue
		}
		e.mu.Lock()
		d := e.dispatcher
		e.mu.Unlock()
		if d == nil || !e.accept(pkt) {
			continue
		}
		var pb *stack.PacketBuffer
		if n >= buffer.MaxChunkSize/zeroCopyMaxWaste {
			view.CapLength(n)
			pb = newPacketBuffer(zeroCopyBuffer(view, pkt), pkt[0])
			view = buffer.NewViewSize(buffer.MaxChunkSize)
		} else {
			pb = newPacketBuffer(buffer.MakeWithData(pkt), pkt[0])
		}
		d.DeliverNetworkPacket(pb.NetworkProtocolNumber, pb)
		pb.DecRef()
	}
}

// zeroCopyMaxWaste bounds the part of a 64 KiB view a packet read on the offload path
// may leave unused when the view becomes its buffer: 1/zeroCopyMaxWaste of it at
// least must be the packet.
const zeroCopyMaxWaste = 4

// zeroCopyMin is the smallest packet readLoop hands to gVisor in the view it was read
// into; smaller ones are copied.
const zeroCopyMin = 1024

// deliver hands one packet straight to gVisor, without GRO.
func (e *linkEndpoint) deliver(pkt []byte) {
	e.mu.Lock()
	d := e.dispatcher
	e.mu.Unlock()
	if d == nil || !e.accept(pkt) {
		return
	}
	pb := newPacketBuffer(buffer.MakeWithData(pkt), pkt[0])
	d.DeliverNetworkPacket(pb.NetworkProtocolNumber, pb)
	pb.DecRef()
}

// accept shows an inbound packet to the tap and tells whether it is an IP packet.
func (e *linkEndpoint) accept(pkt []byte) bool {
	if len(pkt) == 0 {
		return false
	}
	if e.tap != nil {
		e.tap(pkt)
	}
	v := pkt[0] >> 4
	return v == 4 || v == 6
}

// newPacketBuffer makes the packet buffer of an inbound IP packet whose first byte
// is first.
func newPacketBuffer(payload buffer.Buffer, first byte) *stack.PacketBuffer {
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	pb.NetworkProtocolNumber = ipv4.ProtocolNumber
	if first>>4 == 6 {
		pb.NetworkProtocolNumber = ipv6.ProtocolNumber
	}
	// The packets come from the local kernel: checksums are not verified again
	// (CapabilityRXChecksumOffload), and GRO must not verify them either.
	pb.RXChecksumValidated = true
	return pb
}

// inlineWriteMax is the largest packet WritePackets writes to the device itself.
const inlineWriteMax = 512

// WritePackets queues gVisor's outbound packets for writeLoop. It blocks while the
// queue is full, and fails once the device is closed.
//
// A lone small packet that finds nothing queued and nothing being written (an
// interactive reply, an ACK) is written at once by the caller: handing it to
// writeLoop would cost a goroutine wake-up, a large part of a round trip's latency
// (docs/performance.md). Bulk transfers come in lists and keep being batched.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	e.qmu.Lock()
	for (len(e.queue) >= maxWriteQueue || e.qbytes >= maxWriteQueueBytes) && !e.qclosed &&
		!(len(list) == 1 && e.sparseLocked(list[0])) {
		e.space.Wait()
	}
	if e.qclosed {
		e.qmu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	if len(list) == 1 && len(e.queue) == 0 && !e.writing && list[0].Size() <= inlineWriteMax {
		e.writing = true
		e.qmu.Unlock()
		e.writeInline(list[0])
		return 1, nil
	}
	wasEmpty := len(e.queue) == 0
	for _, pkt := range list {
		if e.sparseLocked(pkt) {
			e.queue = slices.Insert(e.queue, e.nsparse, pkt.IncRef())
			e.nsparse++
		} else {
			e.queue = append(e.queue, pkt.IncRef())
		}
		e.flows[pkt.Hash%flowBuckets]++
		e.qbytes += pkt.Size()
	}
	e.qmu.Unlock()
	if wasEmpty {
		e.work.Signal()
	}
	return len(list), nil
}

// sparseLocked tells whether pkt may go ahead of the queue: a small packet, not a
// GSO segment, of a flow with nothing queued or being written. qmu is held.
func (e *linkEndpoint) sparseLocked(pkt *stack.PacketBuffer) bool {
	return e.nsparse < maxSparse && pkt.Size() <= sparseMax &&
		pkt.GSOOptions.Type == stack.GSONone && e.flows[pkt.Hash%flowBuckets] == 0
}

// writeInline writes pkt to the device; the caller set writing.
func (e *linkEndpoint) writeInline(pkt *stack.PacketBuffer) {
	var err error
	if e.vnet != nil {
		err = e.vnet.write(pkt)
	} else {
		bp, b := e.copyOut(pkt)
		e.one = append(e.one[:0], b)
		_, err = e.dev.Write(e.one, tunOffset)
		e.one[0] = nil
		e.bufPool.Put(bp)
	}
	e.qmu.Lock()
	e.writing = false
	more := len(e.queue) > 0
	e.qmu.Unlock()
	if more {
		e.work.Signal()
	}
	e.writeFailed(err)
}

// copyOut copies pkt into a pooled buffer, after tunOffset bytes of headroom, and
// returns the buffer (for the pool) and the bytes to write.
func (e *linkEndpoint) copyOut(pkt *stack.PacketBuffer) (*[]byte, []byte) {
	bp := e.bufPool.Get().(*[]byte)
	b := (*bp)[:tunOffset]
	for _, s := range pkt.AsSlices() {
		b = append(b, s...)
	}
	return bp, b
}

// writeFailed handles the error of a device write, if any: a closed device closes the
// queue (writeLoop then drops what is queued and returns), anything else is logged.
func (e *linkEndpoint) writeFailed(err error) {
	switch {
	case err == nil:
	case errors.Is(err, os.ErrClosed):
		e.closeQueue()
	default:
		e.log.Debug("tun write", zap.Error(err))
	}
}

// writeLoop writes the queued packets to the device, up to maxWriteBatch per call.
func (e *linkEndpoint) writeLoop() {
	defer e.wg.Done()
	var (
		bufs  [][]byte
		held  []*[]byte
		batch []*stack.PacketBuffer
	)
	for {
		e.qmu.Lock()
		for (len(e.queue) == 0 || e.writing) && !e.qclosed {
			e.work.Wait()
		}
		if e.qclosed {
			q := e.queue
			e.queue, e.qbytes, e.nsparse, e.flows = nil, 0, 0, [flowBuckets]uint16{}
			e.qmu.Unlock()
			for _, pkt := range q {
				pkt.DecRef()
			}
			return
		}
		// On the offload path packets are written one by one (a writev each); it
		// takes at most 64 KiB at a time, so that a sparse packet queued meanwhile
		// waits for no more than that.
		limit := min(len(e.queue), maxWriteBatch)
		if e.vnet != nil {
			n, size := 1, e.queue[0].Size()
			for n < limit && size+e.queue[n].Size() <= 1<<16 {
				size += e.queue[n].Size()
				n++
			}
			limit = n
		}
		if len(e.queue) <= limit {
			batch, e.queue = e.queue, e.spare[:0]
		} else {
			batch = append(e.spare[:0], e.queue[:limit]...)
			n := copy(e.queue, e.queue[limit:])
			clear(e.queue[n:])
			e.queue = e.queue[:n]
		}
		e.nsparse -= min(e.nsparse, len(batch))
		for _, pkt := range batch {
			e.qbytes -= pkt.Size()
		}
		e.spare = nil
		e.writing = true
		e.qmu.Unlock()
		e.space.Broadcast()

		if e.vnet != nil {
			e.writeBatchVnet(batch)
			continue
		}
		bufs, held = bufs[:0], held[:0]
		for _, pkt := range batch {
			bp, b := e.copyOut(pkt)
			held = append(held, bp)
			bufs = append(bufs, b)
		}
		_, err := e.dev.Write(bufs, tunOffset)
		e.doneWriting(batch)
		for _, bp := range held {
			e.bufPool.Put(bp)
		}
		clear(held)
		e.writeFailed(err)
	}
}

// writeBatchVnet is writeLoop's write of a batch on the offload path: one writev per
// packet, each a GSO super-packet or a packet of its own (gVisor's TCP hands over
// segments of up to 64 KiB already), except runs of datagrams of one UDP flow, which
// go as one UDP GSO super-packet (udpgso.go). It releases the batch and writing.
func (e *linkEndpoint) writeBatchVnet(batch []*stack.PacketBuffer) {
	var err error
	for i := 0; i < len(batch) && (err == nil || !errors.Is(err, os.ErrClosed)); {
		n, werr := 1, error(nil)
		if run := udpRun(batch[i:]); run > 1 {
			n, werr = e.vnet.writeUDPRun(batch[i : i+run])
		} else {
			werr = e.vnet.write(batch[i])
		}
		if werr != nil {
			err = werr
		}
		i += n
	}
	e.doneWriting(batch)
	e.writeFailed(err)
}

// doneWriting ends writeLoop's write of batch: its packets no longer count for their
// flows, the device is free, and the packets are released.
func (e *linkEndpoint) doneWriting(batch []*stack.PacketBuffer) {
	e.qmu.Lock()
	for _, pkt := range batch {
		e.flows[pkt.Hash%flowBuckets]--
	}
	e.writing = false
	e.qmu.Unlock()
	for _, pkt := range batch {
		pkt.DecRef()
	}
	clear(batch)
	e.spare = batch[:0] // only writeLoop uses spare
}

// zeroCopyBuffer makes the payload of an inbound super-packet read into v, which holds
// exactly pkt, without copying its bytes: the IP and transport headers are copied
// into a small view of their own and the rest stays in v.
//
// The split is not cosmetic. gVisor's IPv4 and IPv6 input paths hold a reference to
// the network header's view while they look at the header again, and a header that
// lies in a shared chunk makes the buffer clone the whole chunk first
// (buffer.Buffer.PullUp): a 64 KiB copy, and as much zeroing, per super-packet, 4% of
// the client's CPU during an upload (docs/performance-changes.md, change 15). With the
// headers in their own chunk, that clone copies a few dozen bytes.
func zeroCopyBuffer(v *buffer.View, pkt []byte) buffer.Buffer {
	h := headerLen(pkt)
	if h == 0 || h >= len(pkt) {
		return buffer.MakeWithView(v)
	}
	b := buffer.MakeWithView(buffer.NewViewWithData(pkt[:h]))
	v.TrimFront(h)
	b.Append(v)
	return b
}

// headerSplitMin is the smallest packet read into a view whose headers readLoop
// copies out (zeroCopyBuffer); below it the IP input's clone of the view is cheaper.
const headerSplitMin = buffer.MaxChunkSize / zeroCopyMaxWaste

// headerLen is the length of the IP header and, for TCP and UDP, the transport header
// that begin pkt; 0 when pkt is too short or malformed to tell (gVisor's parsers then
// see the packet as it came and drop it).
func headerLen(pkt []byte) int {
	if len(pkt) == 0 {
		return 0
	}
	var h int
	var proto byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize {
			return 0
		}
		h, proto = int(pkt[0]&0xf)*4, pkt[9]
		if h < header.IPv4MinimumSize {
			return 0
		}
	case 6:
		if len(pkt) < header.IPv6MinimumSize {
			return 0
		}
		h, proto = header.IPv6MinimumSize, pkt[6]
	default:
		return 0
	}
	switch proto {
	case byte(header.TCPProtocolNumber):
		if len(pkt) < h+header.TCPMinimumSize {
			return h
		}
		return h + int(pkt[h+12]>>4)*4
	case byte(header.UDPProtocolNumber):
		return h + header.UDPMinimumSize
	}
	return h
}
