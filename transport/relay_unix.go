//go:build unix

package transport

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherd/tetherd/internal/pump"
)

// pumpRelay relays a stream and a destination socket with two pumps (see
// internal/pump), so that neither direction holds a goroutine or a buffer while
// the flow is idle:
//
//   - stream → conn runs when the stream's OnReadable fires, and drains the stream
//     into the socket;
//   - conn → stream reads the socket without blocking (through its RawConn) into a
//     pooled buffer until it would block; it then gives the buffer back and waits
//     for more with Go's poller, and once the destination has been silent for
//     relayIdle it hands the socket to the server's idleWaiter (one epoll set for
//     all idle relays) and ends its goroutine. The watcher kicks it when the socket
//     becomes readable.
//
// The pump that finishes last closes both ends.
type pumpRelay struct {
	srv      *Server
	st       *Stream
	conn     net.Conn
	rc       syscall.RawConn
	up, down *pump.Pump

	// deadline is the socket's read deadline; the up pump moves it.
	deadline time.Time

	mu    sync.Mutex
	left  int   // directions not finished
	watch int32 // the idleWaiter token while parked, else 0
}

// newPumpRelay returns a pumpRelay for conn, or nil when conn has no raw socket.
func (srv *Server) newPumpRelay(st *Stream, conn net.Conn) *pumpRelay {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &pumpRelay{srv: srv, st: st, conn: conn, rc: rc, left: 2}
	r.up = pump.New(r.pumpUp, r.finishOne)
	r.down = pump.New(r.pumpDown, r.finishOne)
	return r
}

// start runs the relay; it returns at once. The relay counts in srv.wg until both
// directions finished.
func (r *pumpRelay) start() {
	r.srv.wg.Add(1)
	r.st.OnReadable(r.down.Kick)
	r.up.Kick()
	r.down.Kick() // data that arrived before the dial finished
}

func (r *pumpRelay) pumpDown() bool {
	if !drainToConn(r.st, r.conn) {
		return false
	}
	// An abort closed the socket: a parked conn → stream direction would never hear
	// of it from the watcher. Wake it to see the error.
	r.unpark()
	r.up.Kick()
	return true
}

// errWouldBlock is what readNow returns when the socket has nothing to read.
var errWouldBlock = errors.New("would block")

func (r *pumpRelay) pumpUp() bool {
	for {
		buf := r.srv.getRelayBuf(r.st.s)
		err := r.copyReady(*buf)
		r.srv.putRelayBuf(r.st.s, buf)
		if err == errWouldBlock {
			err = r.waitReadable()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if r.park() {
					return false // the watcher kicks us when the socket is readable
				}
				// No watcher: wait here, without a deadline.
				r.deadline = time.Time{}
				if err = r.conn.SetReadDeadline(r.deadline); err == nil {
					err = r.waitReadable()
				}
			}
			if err == nil {
				continue
			}
		}
		endToStream(r.st, err)
		return true
	}
}

// renewDeadline moves the read deadline relayIdle ahead when less than half of that
// is left.
func (r *pumpRelay) renewDeadline() error {
	now := time.Now()
	if r.deadline.Sub(now) >= relayIdle/2 {
		return nil
	}
	r.deadline = now.Add(relayIdle)
	return r.conn.SetReadDeadline(r.deadline)
}

// copyReady copies from the socket to the stream until the socket would block
// (errWouldBlock), ends (nil) or fails.
func (r *pumpRelay) copyReady(buf []byte) error {
	for {
		// The read deadline marks the end of a busy period (waitReadable), but even
		// a non-blocking read fails once it passed: keep it ahead while data flows.
		if err := r.renewDeadline(); err != nil {
			return err
		}
		n, err := r.readNow(buf)
		if n > 0 {
			if _, werr := r.st.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// readNow reads what the socket has, without waiting: errWouldBlock when nothing.
func (r *pumpRelay) readNow(buf []byte) (int, error) {
	var n int
	var rerr error
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), buf)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(rerr, unix.EAGAIN):
		return 0, errWouldBlock
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// waitReadable waits until the socket is readable, the read deadline passes
// (os.ErrDeadlineExceeded) or the connection is closed, holding no buffer
// meanwhile.
//
// RawConn.Read starts by clearing what Go's poller knows of the socket's
// readiness, and the poller is edge-triggered: data that arrived after the last
// read saw nothing (readNow's EAGAIN) and before this wait began would never wake
// it — the reply of a request/response flow, typically, left until the deadline.
// So the first call asks the kernel (poll with no timeout) before waiting.
func (r *pumpRelay) waitReadable() error { return waitRawReadable(r.rc) }

// canWaitRawReadable tells whether waitRawReadable works on this OS.
const canWaitRawReadable = true

// waitRawReadable is waitReadable for any socket: it waits until a read of rc would
// not block, or rc's read deadline passes, or rc is closed, holding no buffer.
func waitRawReadable(rc syscall.RawConn) error {
	first := true
	return rc.Read(func(fd uintptr) bool {
		if !first {
			return true // the poller saw the socket become readable
		}
		first = false
		return readableNow(fd)
	})
}

// readableNow tells whether a read of fd would not block: data, end of stream or
// an error (which the read then reports).
func readableNow(fd uintptr) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return true // let the read find out
		}
		return n > 0
	}
}

// park hands the socket to the server's idleWaiter; false when it cannot.
func (r *pumpRelay) park() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.left == 0 {
		return false
	}
	tok, err := r.srv.idle.watch(r.rc, r.up.Kick)
	if err != nil {
		return false
	}
	r.watch = tok
	return true
}

// unpark cancels the watch, if any.
func (r *pumpRelay) unpark() {
	r.mu.Lock()
	tok := r.watch
	r.watch = 0
	r.mu.Unlock()
	r.srv.idle.cancel(tok)
}

func (r *pumpRelay) finishOne() {
	r.mu.Lock()
	r.left--
	last := r.left == 0
	r.mu.Unlock()
	if !last {
		return
	}
	r.unpark()
	r.st.OnReadable(nil)
	_ = r.st.Close()
	_ = r.conn.Close()
	r.srv.wg.Done()
}
