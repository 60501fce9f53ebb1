package transport

import (
	"sync"
	"time"
)

// Receive buffers come from size-classed pools, so an idle stream holds no buffer and a
// busy one reuses the same few. The pools are the only package-level state: they hold no
// behaviour, only free memory, and are safe to share between sessions.
var bufClasses = [...]int{2 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns a buffer of length n (n ≤ 1 MiB).
func getBuf(n int) *[]byte {
	for i, c := range bufClasses {
		if n <= c {
			if p, ok := bufPools[i].Get().(*[]byte); ok {
				*p = (*p)[:n]
				return p
			}
			b := make([]byte, n, c)
			return &b
		}
	}
	b := make([]byte, n)
	return &b
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(p *[]byte) {
	c := cap(*p)
	for i, size := range bufClasses {
		if c == size {
			*p = (*p)[:0]
			bufPools[i].Put(p)
			return
		}
	}
}

// deadline is a settable point in time that closes a channel when it passes, so that
// blocked calls can select on it. It follows the contract of net.Conn deadlines: a new
// deadline replaces the old one, a zero time means none, and a time in the past wakes
// every waiter at once.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expired chan struct{}
}

func newDeadline() *deadline { return &deadline{expired: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expired // the timer fired: wait until its callback closed the channel
	}
	d.timer = nil
	closed := isClosed(d.expired)
	if t.IsZero() {
		if closed {
			d.expired = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.expired = make(chan struct{})
		}
		ch := d.expired
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.expired)
	}
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// notify is a level-triggered wake-up for one waiter: signal never blocks and never
// loses a wake-up that arrives before the waiter sleeps.
type notify chan struct{}

func newNotify() notify { return make(notify, 1) }

func (n notify) signal() {
	select {
	case n <- struct{}{}:
	default:
	}
}
