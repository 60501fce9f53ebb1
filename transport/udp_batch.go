package transport

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// recvBatch is the most datagrams a batchReader takes from the kernel in one call.
const recvBatch = 16

// maxDatagram is the size of a batchReader's buffers: any UDP payload fits.
const maxDatagram = 64 << 10

// batchReader reads datagrams from a UDP socket several at a time (recvmmsg on
// Linux; one at a time elsewhere, through the same call), the mirror of
// Server.sendBatches. Its measured gain is memory, not CPU: a reader that keeps up
// finds one datagram per wake-up, and at a flood the batches saved system calls but
// not CPU per datagram (docs/performance-changes.md, change 26).
//
// It holds no buffer while the socket is idle: read first waits for the socket to
// become readable, then takes pooled buffers for one batch and gives them back. The
// batch is sized by the traffic: it doubles while batches come back full, and
// shrinks to twice what the last one held, so a socket with a datagram now and then
// takes one or two buffers, not recvBatch.
type batchReader struct {
	rc syscall.RawConn
	br interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error)
	}
	size int
	msgs [recvBatch]ipv4.Message
	bufs [recvBatch][1][]byte
	held [recvBatch]*[]byte
	// calls counts ReadBatch calls, for tests.
	calls int
}

// newBatchReader returns a batchReader for uc, an IPv4 socket when v4 (else IPv6,
// dual-stack or not). It fails where a socket's readiness cannot be awaited without
// a read (outside Unix); the caller then reads one datagram at a time.
func newBatchReader(uc *net.UDPConn, v4 bool) (*batchReader, error) {
	if !canWaitRawReadable {
		return nil, errors.ErrUnsupported
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{rc: rc, size: 2}
	if v4 {
		r.br = ipv4.NewPacketConn(uc)
	} else {
		r.br = ipv6.NewPacketConn(uc) // ipv6.Message is the same type as ipv4.Message
	}
	return r, nil
}

// read waits until the socket is readable (or its read deadline passes, or it is
// closed: that error is returned), reads the datagrams waiting, up to the batch
// size, and calls fn with each in order of arrival. fn must not keep p. An error
// from fn ends the batch and is returned.
func (r *batchReader) read(fn func(p []byte, from *net.UDPAddr) error) error {
	if err := waitRawReadable(r.rc); err != nil {
		return err
	}
	size := r.size
	for i := range size {
		r.held[i] = getBuf(maxDatagram)
		r.bufs[i][0] = *r.held[i]
		r.msgs[i] = ipv4.Message{Buffers: r.bufs[i][:]}
	}
	defer func() {
		for i := range size {
			putBuf(r.held[i])
			r.held[i], r.bufs[i][0], r.msgs[i] = nil, nil, ipv4.Message{}
		}
	}()
	r.calls++
	n, err := r.br.ReadBatch(r.msgs[:size], 0)
	if err != nil {
		return err
	}
	switch {
	case n == size:
		r.size = min(2*size, recvBatch)
	default:
		r.size = max(2, min(2*n, recvBatch))
	}
	for i := range n {
		m := &r.msgs[i]
		from, _ := m.Addr.(*net.UDPAddr)
		if from == nil {
			continue // not from a UDP peer: nothing to reply to
		}
		if err := fn(r.bufs[i][0][:m.N], from); err != nil {
			return err
		}
	}
	return nil
}
