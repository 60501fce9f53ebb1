//go:build linux

package netstack

import (
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The offload path of a Linux TUN. wireguard-go opens the device with IFF_VNET_HDR:
// every packet read or written carries a 10-byte virtio-net header that can describe
// a TCP super-packet of up to 64 KiB (TSO/GSO) with a checksum left to compute. Its
// Read splits such packets into MTU-sized segments (and computes their checksums),
// its Write merges segments again; with gVisor in between, that meant splitting, then
// gVisor's GRO merging, and on the way out gVisor's TCP cutting MSS-sized segments,
// checksumming each, and wireguard-go merging them again. Per-packet work dominates a
// userspace stack's cost (docs/performance.md), so on such a device the link does
// its own I/O on the device's file instead:
//
//   - Inbound, a TCP super-packet goes to gVisor as it is, one packet (its TCP
//     checksum is partial: the kernel did not compute it; gVisor does not verify
//     checksums of packets from the local kernel).
//   - Outbound, the link tells gVisor it supports host GSO: gVisor's TCP then hands
//     over segments of up to 64 KiB with a partial checksum, and the link writes each
//     with one writev (header + gVisor's own buffers, no copy); the kernel's TCP
//     takes it as the GSO packet it is.
//
//   - Outbound, runs of one UDP flow's datagrams queued together go as one UDP GSO
//     super-packet (udpgso.go), which the kernel splits.
//
// The device's offloads are set to TCP only (TSO4, TSO6, checksum), so the kernel
// never hands over UDP GSO packets, which gVisor could not take as they are; they
// say nothing about what the kernel takes from us.

// vnetMaxIovs bounds the buffers of one writev (the kernel's UIO_MAXIOV is 1024); a
// packet in more pieces is copied into one buffer first.
const vnetMaxIovs = 64

// vnetIO does the device I/O of a Linux TUN with virtio-net headers. Reads come from
// one goroutine (readLoop); writes from one at a time (the writing flag of the link).
type vnetIO struct {
	rc syscall.RawConn
	// rdIov and wrIov are the iovec arrays of the reader and the writer.
	rdIov [2]unix.Iovec
	wrIov [vnetMaxIovs + 1]unix.Iovec
	wrHdr [vnetHdrLen]byte
	// scratch holds a packet in too many pieces for one writev, made when needed.
	scratch []byte

	// udpHdr holds the IP and UDP headers of a UDP super-packet being written, and
	// pieces the slices of its payloads.
	udpHdr [udpSuperHdrMax]byte
	pieces [][]byte

	// superIn and superOut count TCP super-packets read and written (a packet with
	// a GSO type in its header), udpSuperOut UDP super-packets written, for tests.
	superIn, superOut, udpSuperOut atomic.Uint64
}

// newVnetIO returns the offload path for dev when it is a Linux TUN with virtio-net
// headers of the default size, or nil (the device is then used through its Read and
// Write: a TUN handed over as a file descriptor, a test device, another OS).
func newVnetIO(dev tun.Device) *vnetIO {
	f := dev.File()
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	ok := false
	err = rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return
		}
		if err := unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); err != nil {
			return // not a TUN
		}
		if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
			return
		}
		if sz, err := unix.IoctlGetInt(int(fd), unix.TUNGETVNETHDRSZ); err != nil || sz != vnetHdrLen {
			return
		}
		// TCP segmentation and checksum offload, and nothing else: no UDP GSO.
		const offloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		ok = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, offloads) == nil
	})
	if err != nil || !ok {
		return nil
	}
	return &vnetIO{rc: rc}
}

// read reads one packet: its virtio-net header into hdr, the packet into pkt. It
// returns the packet's length; os.ErrClosed once the device is closed.
func (v *vnetIO) read(hdr *[vnetHdrLen]byte, pkt []byte) (int, error) {
	v.rdIov[0].Base = &hdr[0]
	v.rdIov[0].SetLen(vnetHdrLen)
	v.rdIov[1].Base = &pkt[0]
	v.rdIov[1].SetLen(len(pkt))
	var (
		n     int
		errno syscall.Errno
	)
	err := v.rc.Read(func(fd uintptr) bool {
		var ready bool
		n, errno, ready = iovecCall(unix.SYS_READV, fd, v.rdIov[:])
		return ready
	})
	switch {
	case err != nil:
		return 0, os.ErrClosed // the file is closed: RawConn says so, not as ErrClosed
	case errno == unix.EBADFD:
		return 0, os.ErrClosed // the device is gone
	case errno != 0:
		return 0, errno
	case n < vnetHdrLen:
		return 0, errShortRead
	}
	if hdr[1] != vnetGSONone {
		v.superIn.Add(1)
	}
	return n - vnetHdrLen, nil
}

// write writes one packet with its virtio-net header, from gVisor's buffers if they
// are few enough, else copied into one. It returns os.ErrClosed once the device is
// closed.
func (v *vnetIO) write(pkt *stack.PacketBuffer) error {
	putVnetHdr(&v.wrHdr, pkt)
	iov := v.wrIov[:1]
	iov[0].Base = &v.wrHdr[0]
	iov[0].SetLen(vnetHdrLen)
	slices := pkt.AsSlices()
	if len(slices) > vnetMaxIovs {
		b := v.scratch[:0]
		for _, s := range slices {
			b = append(b, s...)
		}
		v.scratch = b
		slices = [][]byte{b}
	}
	iov = appendIovecs(iov, slices)
	err := v.writev(iov)
	clear(iov[1:]) // do not keep gVisor's buffers alive
	if err == nil && v.wrHdr[1] != vnetGSONone {
		v.superOut.Add(1)
	}
	return err
}

// appendIovecs appends an iovec for each non-empty slice of slices to iov.
func appendIovecs(iov []unix.Iovec, slices [][]byte) []unix.Iovec {
	for _, s := range slices {
		if len(s) == 0 {
			continue
		}
		var vec unix.Iovec
		vec.Base = &s[0]
		vec.SetLen(len(s))
		iov = append(iov, vec)
	}
	return iov
}

// writev writes iov, one packet, to the device; os.ErrClosed once it is closed.
func (v *vnetIO) writev(iov []unix.Iovec) error {
	var errno syscall.Errno
	err := v.rc.Write(func(fd uintptr) bool {
		var ready bool
		_, errno, ready = iovecCall(unix.SYS_WRITEV, fd, iov)
		return ready
	})
	switch {
	case err != nil, errno == unix.EBADFD:
		return os.ErrClosed
	case errno != 0:
		return errno
	}
	return nil
}

// writeUDPRun writes the first datagrams of run (a run udpRun accepted) as one UDP
// GSO super-packet, as many as fit in one writev (all of them but for payloads in
// unusually many pieces), and returns how many it wrote; 1 and the first alone
// when even two do not fit. It returns os.ErrClosed once the device is closed.
func (v *vnetIO) writeUDPRun(run []*stack.PacketBuffer) (int, error) {
	pieces := v.pieces[:0]
	n := 0
	for _, p := range run {
		before := len(pieces)
		pieces = payloadSlices(pieces, p)
		if len(pieces) > vnetMaxIovs-1 {
			pieces = pieces[:before]
			break
		}
		n++
	}
	defer func() {
		clear(pieces) // do not keep gVisor's buffers alive
		v.pieces = pieces[:0]
	}()
	if n < 2 {
		return 1, v.write(run[0])
	}
	hdr := putUDPSuper(&v.udpHdr, &v.wrHdr, run[:n])
	iov := v.wrIov[:2]
	iov[0].Base = &v.wrHdr[0]
	iov[0].SetLen(vnetHdrLen)
	iov[1].Base = &hdr[0]
	iov[1].SetLen(len(hdr))
	iov = appendIovecs(iov, pieces)
	err := v.writev(iov)
	clear(iov[2:])
	if err == nil {
		v.udpSuperOut.Add(1)
	}
	return n, err
}

// iovecCall runs readv or writev (trap) on fd with iov, again after EINTR. It tells a
// RawConn callback whether the descriptor was ready: false on EAGAIN (the poller then
// waits), else true with the result and errno.
func iovecCall(trap, fd uintptr, iov []unix.Iovec) (n int, errno syscall.Errno, ready bool) {
	for {
		r, _, e := unix.Syscall(trap, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, 0, false
		}
		return int(r), e, true
	}
}
