package transport

import (
	"encoding/binary"
	"net"

	"github.com/coder/websocket"

	"github.com/tetherd/tetherd/transport/wire"
)

// The session's writing side: the priority and data queues and the one goroutine that
// writes frames to the WebSocket.

// lockOpen takes wmu, unless the session is over: then it returns false, unlocked.
func (s *session) lockOpen() bool {
	s.wmu.Lock()
	if isClosed(s.done) {
		s.wmu.Unlock()
		return false
	}
	return true
}

// queuePri appends control frames built by fn to the priority queue. It fails only when
// the session is over, or when the other side does not read and control frames pile up
// beyond any sane amount (then the session ends).
func (s *session) queuePri(fn func([]byte) []byte) error {
	if !s.lockOpen() {
		return ErrSessionClosed
	}
	s.pri = fn(s.pri)
	return s.queuedLocked(len(s.pri)-s.dgramBytes > 4<<20, "control frames")
}

// queuedLocked ends a step that queued frames under wmu: it unlocks, and wakes the
// writer, or ends the session when over says the other side lets frames of the kind
// what pile up without reading.
func (s *session) queuedLocked(over bool, what string) error {
	s.wmu.Unlock()
	if over {
		s.shutdown(&SessionError{Reason: "peer does not read: more than 4 MiB of " + what + " queued"})
		return ErrSessionClosed
	}
	s.wake.signal()
	return nil
}

// queuePong answers a PING with key behind the stream data already queued, not ahead
// of it like other control frames: the other side's RTT then measures the queue its
// streams' data waits in (rtt.go). It never blocks; a peer that sends PINGs and reads
// nothing ends the session once 4 MiB beyond the data queue's bound piled up.
func (s *session) queuePong(key [8]byte) error {
	if !s.lockOpen() {
		return ErrSessionClosed
	}
	s.data = wire.AppendPing(s.data, true, key)
	s.lastDataOK = false
	return s.queuedLocked(len(s.data) > s.cfg.WriteBuffer+4<<20, "PING answers")
}

// queueDgram appends a DGRAM frame unless the datagram queue is full, in which case the
// datagram is dropped and counted. It never blocks.
func (s *session) queueDgram(stream uint32, a wire.Addr, p []byte) error {
	if !s.lockOpen() {
		return ErrSessionClosed
	}
	size := wire.HeaderLen + a.AddrLen() + len(p)
	// peerMaxFrame was set by the other side's SETTINGS, which arrive before any
	// association exists.
	if s.dgramBytes+size > s.cfg.DgramQueue || size > int(s.peerMaxFrame)+wire.HeaderLen {
		s.wmu.Unlock()
		s.dgramsDropped.Add(1)
		return nil
	}
	var err error
	s.pri, err = wire.AppendDgram(s.pri, stream, a, p)
	if err == nil {
		s.dgramBytes += size
	}
	s.wmu.Unlock()
	if err != nil {
		return err
	}
	s.dgramsSent.Add(1)
	s.wake.signal()
	return nil
}

// queueData appends a DATA frame (and, with reset, a RESET after it) to the data queue,
// waiting while the queue is full. cancel and expired abort the wait.
//
// With mayWrite (the caller is a stream writer, which may block), a small frame that
// finds the writer idle and the queues empty is written by the caller itself: an
// interactive exchange then skips one goroutine hand-off per message on each side,
// which on a 2-core machine is most of a round trip's cost (docs/performance.md).
// Bulk writes keep going through writeLoop, which overlaps writing with reading.
func (s *session) queueData(stream uint32, p []byte, fin bool, reset *wire.Reset, cancel <-chan struct{}, expired <-chan struct{}, mayWrite bool) error {
	need := len(p) + wire.HeaderLen
	for {
		if !s.lockOpen() {
			return ErrSessionClosed
		}
		if len(s.data) == 0 || len(s.data)+need <= s.cfg.WriteBuffer {
			if s.canExtendLocked(stream, len(p), fin, reset) {
				s.data = append(s.data, p...)
				l := len(s.data) - s.lastDataAt - wire.HeaderLen
				binary.BigEndian.PutUint32(s.data[s.lastDataAt+6:], uint32(l))
			} else {
				s.lastDataOK = false
				if len(p) > 0 || fin {
					at := len(s.data)
					s.data = wire.AppendDataHeader(s.data, stream, len(p), fin)
					s.data = append(s.data, p...)
					s.lastDataOK, s.lastDataAt, s.lastDataStream = !fin, at, stream
				}
				if reset != nil {
					s.data = wire.AppendReset(s.data, stream, *reset)
					s.lastDataOK = false
				}
			}
			inline := mayWrite && len(p) <= inlineWriteMax && !s.writing &&
				len(s.pri) == 0 && len(s.data) <= need
			var pri, data []byte
			if inline {
				pri, data = s.takeLocked()
			}
			s.wmu.Unlock()
			s.bytesSent.Add(uint64(len(p)))
			if !inline {
				s.wake.signal()
				return nil
			}
			if err := s.writeRound(pri, data); err != nil {
				s.writeFailed(err)
				return ErrSessionClosed
			}
			s.release(pri, data)
			return nil
		}
		space := s.space
		s.wmu.Unlock()
		select {
		case <-space:
		case <-cancel:
			return net.ErrClosed
		case <-expired:
			return ErrTimeout
		case <-s.done:
			return ErrSessionClosed
		}
	}
}

// canExtendLocked tells whether p (len n) of stream can be appended to the last DATA
// frame queued: same stream, no FIN or RESET now or before, within the peer's frame
// size. wmu is held.
func (s *session) canExtendLocked(stream uint32, n int, fin bool, reset *wire.Reset) bool {
	if !s.lastDataOK || s.lastDataStream != stream || n == 0 || fin || reset != nil {
		return false
	}
	cur := len(s.data) - s.lastDataAt - wire.HeaderLen
	return cur >= 0 && cur+n <= int(s.peerMaxFrame) &&
		int(binary.BigEndian.Uint32(s.data[s.lastDataAt+6:])) == cur
}

// inlineWriteMax is the largest DATA payload a stream writer may write itself.
const inlineWriteMax = 4 << 10

// takeLocked makes the caller the writer and hands it the queued frames, leaving the
// spare buffers in their place. wmu is held and writing was false.
func (s *session) takeLocked() (pri, data []byte) {
	s.writing = true
	pri, s.pri = s.pri, s.sparePri[:0]
	data, s.data = s.data, s.spareData[:0]
	s.sparePri, s.spareData = nil, nil
	s.lastDataOK = false
	s.dgramBytes = 0
	close(s.space)
	s.space = make(chan struct{})
	return pri, data
}

// release ends a round: the buffers become the spares (unless one burst made them
// large: do not pin that for the session's lifetime), and writeLoop is woken when
// frames queued meanwhile or the session ended.
func (s *session) release(pri, data []byte) {
	if cap(pri) > 1<<20 {
		pri = nil
	}
	if cap(data) > 2*s.cfg.WriteBuffer {
		data = nil
	}
	s.wmu.Lock()
	s.writing = false
	s.sparePri, s.spareData = pri[:0], data[:0]
	more := len(s.pri) > 0 || len(s.data) > 0 || isClosed(s.done)
	s.wmu.Unlock()
	if more {
		s.wake.signal()
	}
}

// writeRound writes the control frames, then the data frames, as one corked round.
func (s *session) writeRound(pri, data []byte) error {
	if s.cork != nil {
		s.cork.Cork()
	}
	err := s.writeFrames(pri)
	if err == nil {
		err = s.writeFrames(data)
	}
	if s.cork != nil {
		if ferr := s.cork.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// writeFailed ends the session after a failed write. The writing flag stays set, so
// nothing else writes to the broken connection, and writeLoop ends with ctx.
func (s *session) writeFailed(err error) {
	s.shutdown(&SessionError{Reason: "write", Err: err})
	_ = s.conn.CloseNow()
	s.cancel()
}

func (s *session) writeLoop() {
	defer s.wg.Done()
	defer s.cancel()
	for {
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
		s.wmu.Lock()
		if s.writing {
			// A stream writer is writing a round itself; it wakes us when it is done
			// and there is more.
			s.wmu.Unlock()
			continue
		}
		pri, data := s.takeLocked()
		s.wmu.Unlock()
		ending := isClosed(s.done)
		if ending && s.err != nil {
			pri, data = pri[:0], data[:0] // an aborted session sends nothing more but the close
		}
		if err := s.writeRound(pri, data); err != nil {
			s.writeFailed(err)
			return
		}
		if ending {
			code, reason := s.closeStatus()
			_ = s.conn.Close(code, reason)
			return
		}
		s.release(pri, data)
	}
}

// writeFrames writes whole frames from b as messages of at most wire.MaxMessage bytes.
func (s *session) writeFrames(b []byte) error {
	for len(b) > 0 {
		n := len(b)
		if n > wire.MaxMessage {
			// Cut at the last frame boundary that fits.
			n = 0
			for n+wire.HeaderLen <= len(b) {
				l := wire.HeaderLen + int(binary.BigEndian.Uint32(b[n+6:]))
				if n+l > wire.MaxMessage {
					break
				}
				n += l
			}
		}
		if err := s.conn.Write(s.ctx, websocket.MessageBinary, b[:n]); err != nil {
			return err
		}
		s.wireSent.Add(uint64(n))
		b = b[n:]
	}
	return nil
}
