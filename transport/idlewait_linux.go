//go:build linux

package transport

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tetherd/tetherd/internal/shrink"
)

// idleWaiter watches the destination connections of idle relays with one epoll set
// and one goroutine for all of them, so that an idle relay holds no goroutine (a
// goroutine parked in a read keeps a stack of 4-8 KiB: most of the peer's memory
// for 10,000 idle flows). Each watch is one-shot: when the connection becomes
// readable, hangs up or fails, the watcher calls the relay's kick once and forgets
// it. The goroutine and the epoll set exist only while something is watched.
type idleWaiter struct {
	mu      sync.Mutex
	epfd    int // -1 when not running
	evfd    int // eventfd that wakes the loop to check whether it should end
	next    int32
	watches map[int32]func()
	peak    shrink.Peak // of watches
}

func (w *idleWaiter) init() {
	w.epfd, w.evfd = -1, -1
	w.watches = make(map[int32]func())
}

// watch calls kick once rc's socket is readable (data, EOF, reset) and returns a
// token for cancel. It fails when the socket cannot be watched; the relay then
// waits in its goroutine.
func (w *idleWaiter) watch(rc syscall.RawConn, kick func()) (int32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.epfd < 0 {
		if err := w.startLocked(); err != nil {
			return 0, err
		}
	}
	w.next++
	if w.next <= 0 { // wrapped; 0 is the eventfd's
		w.next = 1
	}
	tok := w.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: tok}
	var err error
	cerr := rc.Control(func(fd uintptr) {
		// A socket watched before stays in the set, disabled by the one-shot.
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(err, unix.ENOENT) {
			err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		w.wakeIfEmptyLocked()
		return 0, err
	}
	w.watches[tok] = kick
	w.peak.Grew(len(w.watches))
	return tok, nil
}

// cancel forgets a watch (its connection is being closed: closing the socket takes
// it out of the epoll set, but not out of the map).
func (w *idleWaiter) cancel(tok int32) {
	if tok == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.watches, tok)
	w.watches = shrink.Map(&w.peak, w.watches)
	w.wakeIfEmptyLocked()
}

// wakeIfEmptyLocked wakes the loop when nothing is watched, so that it ends.
func (w *idleWaiter) wakeIfEmptyLocked() {
	if len(w.watches) == 0 && w.evfd >= 0 {
		var one = [8]byte{1}
		_, _ = unix.Write(w.evfd, one[:])
	}
}

func (w *idleWaiter) startLocked() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return err
	}
	w.epfd, w.evfd = epfd, evfd
	go w.loop(epfd, evfd)
	return nil
}

// loop delivers the events until nothing is watched any more.
func (w *idleWaiter) loop(epfd, evfd int) {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			n = 0 // cannot happen with a valid set; treat as a check below
		}
		var kicks []func()
		w.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == 0 {
				var b [8]byte
				_, _ = unix.Read(evfd, b[:])
				continue
			}
			if kick, ok := w.watches[ev.Fd]; ok {
				delete(w.watches, ev.Fd)
				kicks = append(kicks, kick)
			}
		}
		w.watches = shrink.Map(&w.peak, w.watches)
		end := len(w.watches) == 0 || (err != nil && !errors.Is(err, unix.EINTR))
		if end {
			w.epfd, w.evfd = -1, -1
			unix.Close(evfd)
			unix.Close(epfd)
			// What is still watched (only after an epoll failure) is kicked: the
			// relays then wait in their goroutines.
			for tok, kick := range w.watches {
				delete(w.watches, tok)
				kicks = append(kicks, kick)
			}
		}
		w.mu.Unlock()
		for _, kick := range kicks {
			kick()
		}
		if end {
			return
		}
	}
}
