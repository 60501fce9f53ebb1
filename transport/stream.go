package transport

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherd/tetherd/transport/wire"
)

// Stream is one TCP connection carried by a session. It is a net.Conn whose Read
// returns io.EOF only after the other side finished sending (FIN); a stream the other
// side reset, or that died with its session, returns a *StreamError or *SessionError
// instead, so a truncated transfer never looks complete.
//
// Stream also has CloseWrite (half-close: send FIN, keep reading) and Reset (abort both
// directions). Its methods are safe for concurrent use; concurrent Writes are
// serialized.
type Stream struct {
	s   *session
	sid uint32
	dst wire.Addr

	wmu sync.Mutex // serializes Write, CloseWrite and the FIN of Close

	mu sync.Mutex
	// receive side
	recvq      []*[]byte // received chunks, oldest first; recvq[0] is read from roff
	roff       int
	buffered   int
	recvWindow int       // current window size
	recvCredit int       // bytes the other side may still send
	unacked    int       // consumed bytes not yet returned as credit
	extra      int64     // window beyond the initial one, charged to the session budget
	lastUpdate time.Time // when credit was last returned
	settled    time.Time // a round trip after the window last changed size
	finRecv    bool
	// send side
	sendCredit int64
	finSent    bool
	// both
	err       error // why the stream ended (reset or session death); nil if it did not
	resetSent bool
	resetRecv bool
	closed    bool
	removed   bool
	openState

	readable notify
	writable notify
	closeCh  chan struct{}
	rd, wd   *deadline
	// hook is the OnReadable callback, nil when none.
	hook atomic.Pointer[func()]
}

var _ net.Conn = (*Stream)(nil)

func newStream(s *session, id uint32, dst wire.Addr) *Stream {
	return &Stream{
		s:          s,
		sid:        id,
		dst:        dst,
		recvWindow: s.cfg.InitialWindow,
		recvCredit: s.cfg.InitialWindow,
		lastUpdate: time.Now(),
		sendCredit: int64(s.peerWindow),
		openState:  openState{opened: make(chan struct{})},
		readable:   newNotify(),
		writable:   newNotify(),
		closeCh:    make(chan struct{}),
		rd:         newDeadline(),
		wd:         newDeadline(),
	}
}

func (st *Stream) id() uint32 { return st.sid }

// ID returns the stream's id within its session.
func (st *Stream) ID() uint32 { return st.sid }

// Destination returns the address the client asked for.
func (st *Stream) Destination() wire.Addr { return st.dst }

// ---- events from the session reader ----

func (st *Stream) onData(buf *[]byte, fin bool) {
	n := 0
	if buf != nil {
		n = len(*buf)
	}
	st.mu.Lock()
	switch {
	case st.closed || st.resetSent || st.resetRecv || st.err != nil:
		// Closed locally or dead: in flight, drop.
		st.mu.Unlock()
		if buf != nil {
			putBuf(buf)
		}
		return
	case st.finRecv:
		st.mu.Unlock()
		if buf != nil {
			putBuf(buf)
		}
		st.Reset(wire.CodeProtocol, "DATA after FIN")
		return
	case n > st.recvCredit:
		credit := st.recvCredit
		st.mu.Unlock()
		putBuf(buf)
		st.Reset(wire.CodeProtocol, "flow-control window exceeded: "+strconv.Itoa(n)+" bytes with "+strconv.Itoa(credit)+" credit")
		return
	}
	st.recvCredit -= n
	if buf != nil {
		st.recvq = append(st.recvq, buf)
		st.buffered += n
	}
	if fin {
		st.finRecv = true
	}
	done := st.finRecv && st.finSent
	st.mu.Unlock()
	st.signalReadable()
	if done {
		st.removeFromTable()
	}
}

func (st *Stream) onReply(r wire.Reply) {
	st.mu.Lock()
	dup, err := st.settle(r)
	if err != nil {
		st.err = err
	}
	st.mu.Unlock()
	if dup {
		st.s.shutdown(protoErrorf("second REPLY on stream %d", st.sid))
	} else if err != nil {
		st.removeFromTable()
	}
}

func (st *Stream) onWindow(inc uint32) {
	st.mu.Lock()
	st.sendCredit += int64(inc)
	over := st.sendCredit > wire.MaxWindow
	st.mu.Unlock()
	if over {
		st.Reset(wire.CodeProtocol, "WINDOW takes credit above 2^31-1")
		return
	}
	st.writable.signal()
}

func (st *Stream) onReset(r wire.Reset) {
	st.mu.Lock()
	if st.resetRecv || st.resetSent {
		st.mu.Unlock()
		return
	}
	st.resetRecv = true
	if st.err == nil {
		st.err = &StreamError{Code: r.Code, Reason: r.Reason, Remote: true}
	}
	st.failOpen(&StreamError{Code: r.Code, Reason: r.Reason, Remote: true, Open: true})
	st.mu.Unlock()
	st.signalReadable()
	st.writable.signal()
	st.removeFromTable()
}

func (st *Stream) fail(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.failOpen(err)
	st.removed = true
	st.mu.Unlock()
	st.signalReadable()
	st.writable.signal()
}

func (st *Stream) removeFromTable() {
	st.mu.Lock()
	if st.removed {
		st.mu.Unlock()
		return
	}
	st.removed = true
	extra := st.extra
	st.extra = 0
	st.mu.Unlock()
	st.s.remove(st, extra)
}

// ---- reading ----

// Read reads data the other side sent. It returns io.EOF once the other side finished
// sending and everything was read; after a reset it returns the buffered data and then
// a *StreamError.
func (st *Stream) Read(p []byte) (int, error) {
	for {
		st.mu.Lock()
		if st.buffered > 0 {
			n := 0
			for n < len(p) && len(st.recvq) > 0 {
				c := (*st.recvq[0])[st.roff:]
				k := copy(p[n:], c)
				n += k
				st.roff += k
				if k == len(c) {
					putBuf(st.recvq[0])
					st.recvq[0] = nil
					st.recvq = st.recvq[1:]
					st.roff = 0
				}
			}
			st.buffered -= n
			if st.buffered > 0 {
				st.readable.signal() // leave the wake-up for a concurrent reader
			}
			inc, update := st.consumedLocked(n)
			st.mu.Unlock()
			st.sendWindow(inc, update)
			return n, nil
		}
		if err := st.readErrLocked(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		st.mu.Unlock()
		if err := st.waitReadable(); err != nil {
			return 0, err
		}
	}
}

// signalReadable wakes a blocked Read or WriteTo and calls the OnReadable callback.
func (st *Stream) signalReadable() {
	st.readable.signal()
	if f := st.hook.Load(); f != nil {
		(*f)()
	}
}

// OnReadable sets f to be called whenever DrainTo may make progress: data or a FIN
// arrived, the stream was reset or closed, or its session ended. f is called without
// the stream's locks held, from the session's reader among others, so it must not
// block; typically it kicks a goroutine that calls DrainTo (see internal/pump). A
// nil f removes the callback. With it, a relay needs no goroutine parked in Read
// while the stream is idle.
func (st *Stream) OnReadable(f func()) {
	if f == nil {
		st.hook.Store(nil)
		return
	}
	st.hook.Store(&f)
}

// DrainTo writes what has been received so far to w, straight from the receive
// buffers, without waiting for more. It returns a nil error when it wrote everything
// buffered and the stream is still open (wait for OnReadable, then call it again),
// io.EOF once the other side finished sending and everything was written, and
// otherwise the error that ended the stream or the error of w.
func (st *Stream) DrainTo(w io.Writer) (int64, error) {
	return st.writeTo(w, false)
}

// WriteTo writes everything the other side sends to w, straight from the receive
// buffers (no intermediate copy), until EOF or an error. io.Copy uses it.
func (st *Stream) WriteTo(w io.Writer) (int64, error) {
	n, err := st.writeTo(w, true)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// writeTo is WriteTo when wait is set, and DrainTo when not.
func (st *Stream) writeTo(w io.Writer, wait bool) (int64, error) {
	var total int64
	for {
		st.mu.Lock()
		if len(st.recvq) > 0 {
			buf := st.recvq[0]
			data := (*buf)[st.roff:]
			st.recvq[0] = nil
			st.recvq = st.recvq[1:]
			st.roff = 0
			st.buffered -= len(data)
			st.mu.Unlock()
			n, err := w.Write(data)
			putBuf(buf)
			total += int64(n)
			st.mu.Lock()
			inc, update := st.consumedLocked(len(data))
			st.mu.Unlock()
			st.sendWindow(inc, update)
			if err != nil {
				return total, err
			}
			if n < len(data) {
				return total, io.ErrShortWrite
			}
			continue
		}
		if err := st.readErrLocked(); err != nil {
			st.mu.Unlock()
			return total, err
		}
		st.mu.Unlock()
		if !wait {
			return total, nil
		}
		if err := st.waitReadable(); err != nil {
			return total, err
		}
	}
}

// readErrLocked is what a read returns when nothing is buffered: EOF after FIN (even if
// the stream was reset later: everything before the FIN was delivered), else the error
// that ended the stream, else nil (wait).
func (st *Stream) readErrLocked() error {
	switch {
	case st.closed:
		return net.ErrClosed
	case st.finRecv:
		return io.EOF
	case st.err != nil:
		return st.err
	}
	return nil
}

func (st *Stream) waitReadable() error {
	select {
	case <-st.readable:
		return nil
	case <-st.rd.wait():
		return ErrTimeout
	case <-st.closeCh:
		return net.ErrClosed
	}
}

// consumedLocked accounts for n bytes the application consumed. Once half the window
// is consumed it is an update: the window is resized (windowChange) — doubled while
// it, not the application, may limit the stream and the session's queue is short,
// halved while the queue is long — and the credit to send back is returned. A smaller
// window is not taken back from the other side (credit once granted stays granted):
// the credit returned from then on is less, until what the other side holds fits the
// new window.
func (st *Stream) consumedLocked(n int) (inc uint32, update bool) {
	st.unacked += n
	if st.finRecv || st.err != nil || st.unacked < st.recvWindow/2 {
		return 0, false
	}
	now := time.Now()
	cfg := &st.s.cfg
	base, queue, samples := st.s.rtt.queueSince(st.settled, now)
	if samples == 0 && now.Sub(st.settled) >= recentMaxAge {
		samples = 1 // nothing measured lately (no answer): nothing holds the window back
	}
	// Half a window consumed within a few round trips: the window may be what limits
	// this stream. The round trip is the path's base RTT, not one inflated by queues
	// this growth would itself create.
	fast := now.Sub(st.lastUpdate) < 4*base
	if change := windowChange(st.recvWindow, cfg.InitialWindow, cfg.MaxWindow, fast, queue, samples, queueTarget(base)); change != 0 {
		st.resize(change, now.Add(base+queue))
	}
	st.lastUpdate = now
	if st.unacked <= 0 {
		return 0, true
	}
	inc = uint32(st.unacked)
	st.recvCredit += st.unacked
	st.unacked = 0
	return inc, true
}

// resize changes the window by change bytes (< 0: shrinks it) and charges the change
// to the session budget; growth beyond the budget does not happen. A shrink is paid
// from the credit to be returned: unacked may go below zero. The change shows in the
// PINGs sent a round trip later (the credit reaches the other side, its data
// arrives): settled is then.
func (st *Stream) resize(change int, settled time.Time) {
	if change > 0 && st.s.windowBudget.Add(int64(change)) > int64(st.s.cfg.SessionWindow) {
		st.s.windowBudget.Add(-int64(change))
		return
	}
	if change < 0 {
		st.s.windowBudget.Add(int64(change))
	}
	st.recvWindow += change
	st.extra += int64(change)
	st.unacked += change
	st.settled = settled
}

// sendWindow sends inc bytes of credit (if any) after an update, and probes the
// session's queueing delay: data is flowing to this side.
func (st *Stream) sendWindow(inc uint32, update bool) {
	if inc > 0 {
		_ = st.s.queuePri(func(b []byte) []byte { return wire.AppendWindow(b, st.sid, inc) })
	}
	if update {
		st.s.probe(time.Now())
	}
}

// ---- writing ----

// Write sends p, waiting for flow-control credit. It fails after CloseWrite, Close or a
// reset, and when the write deadline passes.
func (st *Stream) Write(p []byte) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		st.mu.Lock()
		for st.sendCredit <= 0 {
			if err := st.writeErrLocked(); err != nil {
				st.mu.Unlock()
				return written, err
			}
			st.mu.Unlock()
			select {
			case <-st.writable:
			case <-st.wd.wait():
				return written, ErrTimeout
			case <-st.closeCh:
				return written, net.ErrClosed
			}
			st.mu.Lock()
		}
		if err := st.writeErrLocked(); err != nil {
			st.mu.Unlock()
			return written, err
		}
		n := int(min(int64(len(p)), st.sendCredit, int64(st.s.peerMaxFrame)))
		st.sendCredit -= int64(n)
		st.mu.Unlock()
		if err := st.s.queueData(st.sid, p[:n], false, nil, st.closeCh, st.wd.wait(), true); err != nil {
			st.mu.Lock()
			st.sendCredit += int64(n)
			st.mu.Unlock()
			if errors.Is(err, ErrSessionClosed) {
				st.mu.Lock()
				if st.err != nil {
					err = st.err
				}
				st.mu.Unlock()
			}
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func (st *Stream) writeErrLocked() error {
	switch {
	case st.closed:
		return net.ErrClosed
	case st.err != nil:
		return st.err
	case st.finSent:
		return errWriteAfterFIN
	}
	return nil
}

var errWriteAfterFIN = errors.New("transport: write after CloseWrite")

// CloseWrite sends FIN after all data written so far: the other side reads EOF, and
// this side can keep reading.
func (st *Stream) CloseWrite() error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	st.mu.Lock()
	if err := st.writeErrLocked(); err != nil {
		st.mu.Unlock()
		if err == errWriteAfterFIN {
			return nil
		}
		return err
	}
	st.finSent = true
	done := st.finRecv
	st.mu.Unlock()
	err := st.s.queueData(st.sid, nil, true, nil, st.closeCh, nil, false)
	if done {
		st.removeFromTable()
	}
	return err
}

// Reset aborts the stream in both directions with code and reason: buffered data is
// discarded, the other side's reads fail with a *StreamError, never EOF.
func (st *Stream) Reset(code wire.Code, reason string) {
	st.mu.Lock()
	if st.resetSent || st.resetRecv || st.removed {
		st.mu.Unlock()
		return
	}
	st.resetSent = true
	if st.err == nil {
		st.err = &StreamError{Code: code, Reason: reason}
	}
	st.discardLocked()
	st.mu.Unlock()
	r := wire.Reset{Code: code, Reason: reason}
	_ = st.s.queuePri(func(b []byte) []byte { return wire.AppendReset(b, st.sid, r) })
	st.signalReadable()
	st.writable.signal()
	st.removeFromTable()
}

func (st *Stream) discardLocked() {
	for i, b := range st.recvq {
		putBuf(b)
		st.recvq[i] = nil
	}
	st.recvq = nil
	st.buffered = 0
	st.roff = 0
}

// Close closes the stream: FIN is sent after everything written so far, and if the other
// side has not finished sending, a RESET (CANCELED) follows the FIN so that its writes
// fail rather than pile up. Blocked Reads and Writes return net.ErrClosed.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	close(st.closeCh)
	st.discardLocked()
	alive := st.err == nil && !st.resetSent && !st.resetRecv && !st.removed
	needFIN := alive && !st.finSent
	needReset := alive && !st.finRecv
	st.finSent = true
	if needReset {
		st.resetSent = true
	}
	st.mu.Unlock()
	st.rd.stop()
	st.wd.stop()
	st.signalReadable() // DrainTo now fails with net.ErrClosed
	if needFIN || needReset {
		var r *wire.Reset
		if needReset {
			r = &wire.Reset{Code: wire.CodeCanceled, Reason: "closed by application"}
		}
		st.wmu.Lock() // after a Write in progress has queued its last chunk
		_ = st.s.queueData(st.sid, nil, needFIN, r, nil, nil, false)
		st.wmu.Unlock()
	}
	st.removeFromTable()
	return nil
}

// LocalAddr returns the address the peer connected to on the client side (after a
// name was resolved), or the requested destination.
func (st *Stream) LocalAddr() net.Addr {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.local.IP.IsValid() || st.local.Name != "" {
		return streamAddr{st.local}
	}
	return streamAddr{st.dst}
}

// RemoteAddr returns the destination the client asked for.
func (st *Stream) RemoteAddr() net.Addr { return streamAddr{st.dst} }

// SetDeadline sets the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.rd.set(t)
	st.wd.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read and WriteTo.
func (st *Stream) SetReadDeadline(t time.Time) error { st.rd.set(t); return nil }

// SetWriteDeadline sets the deadline for Write.
func (st *Stream) SetWriteDeadline(t time.Time) error { st.wd.set(t); return nil }

// openState is the client's view of an OPEN waiting for its REPLY. It is guarded by
// the mutex of the stream or association that embeds it.
type openState struct {
	opened  chan struct{} // closed when the REPLY arrived or the open failed
	openErr error
	local   wire.Addr // the address the peer connected to, from REPLY OK
}

// settle records a REPLY. dup reports a second REPLY (a protocol error); err is the
// error the entry ends with when the peer refused the open.
func (o *openState) settle(r wire.Reply) (dup bool, err error) {
	if isClosed(o.opened) {
		return true, nil
	}
	if r.Code != wire.CodeOK {
		o.openErr = &StreamError{Code: r.Code, Reason: r.Reason, Remote: true, Open: true}
		err = o.openErr
	} else {
		o.local = r.Addr
	}
	close(o.opened)
	return false, err
}

// failOpen ends a pending open with err; it does nothing once the open settled.
func (o *openState) failOpen(err error) {
	if !isClosed(o.opened) {
		o.openErr = err
		close(o.opened)
	}
}

// streamAddr is a wire.Addr as a net.Addr.
type streamAddr struct{ a wire.Addr }

func (a streamAddr) Network() string { return "tether" }
func (a streamAddr) String() string  { return a.a.String() }
