package transport

import (
	"crypto/rand"
	"sync"
	"time"
)

// The session's round-trip measurements, and what the stream windows are sized by.
//
// Every PONG is a sample: the keepalive PINGs (every KeepAlive), Ping calls, and the
// probes a receiving side sends while stream data flows to it (session.probe). The
// other side answers behind the stream data it has queued (queuePong), so a sample
// also waits behind that data, the WebSocket's socket buffers and the link: its RTT
// minus the path's base RTT is the queueing delay every stream's frames see behind
// the bulk transfers (queueSince). The stream windows decide how much of that queue
// there is (Stream.consumedLocked, windowChange).

const (
	// minRTTWindow is how long a smallest RTT is remembered: the base RTT is the
	// smallest sample of the current and the previous window, so it spans the busy
	// periods of a bulk transfer, follows a slower path within two windows, and an
	// expiring minimum is replaced by the best recent sample rather than by whatever
	// one sample a queue inflated.
	minRTTWindow = 30 * time.Second
	// probeGap is the least time between two probes, and probeLost how long a probe
	// may go unanswered before another is sent.
	probeGap  = 2 * time.Millisecond
	probeLost = time.Second
	// recentSamples is how many of the last samples are kept for queueSince, and
	// recentMaxAge how old they may be.
	recentSamples = 4
	recentMaxAge  = time.Second
	// minQueueTarget is the least queueing delay the windows aim for (see
	// queueTarget).
	minQueueTarget = 2 * time.Millisecond
)

// rttStats holds the session's RTT samples and the state of its probe. The zero
// value is ready; it is safe for concurrent use.
type rttStats struct {
	mu       sync.Mutex
	smoothed time.Duration // EWMA (1/8) of all samples, 0 before the first
	// windowed minimum: the smallest sample since curStart, and the smallest of the
	// window before it (0: none)
	curMin, prevMin time.Duration
	curStart        time.Time
	// the last samples and when their PINGs left, a ring
	recent     [recentSamples]time.Duration
	recentSent [recentSamples]time.Time
	next       int
	probing    bool // a probe is unanswered
	probeKey   [8]byte
	probeSent  time.Time
}

// add records the RTT of a PING sent at sent and answered at now.
func (r *rttStats) add(sent, now time.Time) {
	rtt := now.Sub(sent)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.smoothed == 0 {
		r.smoothed = rtt
	} else {
		r.smoothed += (rtt - r.smoothed) / 8
	}
	if r.curStart.IsZero() {
		r.curStart = now
	}
	if gap := now.Sub(r.curStart); gap >= minRTTWindow {
		r.prevMin, r.curMin, r.curStart = r.curMin, 0, now
		if gap >= 2*minRTTWindow { // no sample in the whole previous window
			r.prevMin = 0
		}
	}
	if r.curMin == 0 || rtt < r.curMin {
		r.curMin = rtt
	}
	r.recent[r.next], r.recentSent[r.next] = rtt, sent
	r.next = (r.next + 1) % recentSamples
}

// smoothedRTT returns the smoothed RTT, 0 before the first sample.
func (r *rttStats) smoothedRTT() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.smoothed
}

// base returns the path's RTT without the queueing of the session's own traffic: the
// windowed minimum, or 1 ms before the first sample.
func (r *rttStats) base() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.baseLocked()
}

func (r *rttStats) baseLocked() time.Duration {
	m := r.curMin
	if r.prevMin > 0 && (m == 0 || r.prevMin < m) {
		m = r.prevMin
	}
	if m == 0 {
		return time.Millisecond
	}
	return m
}

// queueSince returns the base RTT and the queueing delay measured by the n PINGs sent
// since t and answered (n is 0 when there is none yet): the smallest of their RTTs
// (one may have waited for a busy CPU rather than behind a queue) minus the base RTT.
func (r *rttStats) queueSince(t, now time.Time) (base, queue time.Duration, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	base = r.baseLocked()
	var least time.Duration
	for i, s := range r.recent {
		sent := r.recentSent[i]
		if s > 0 && !sent.Before(t) && now.Sub(sent) < recentMaxAge {
			n++
			if least == 0 || s < least {
				least = s
			}
		}
	}
	if n == 0 {
		return base, 0, 0
	}
	return base, max(least-base, 0), n
}

// startProbe reports whether a probe should be sent now, and if so returns its key
// and counts it as unanswered: when none is unanswered (or the last was lost) and the
// last left at least probeGap ago.
func (r *rttStats) startProbe(now time.Time) (key [8]byte, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := now.Sub(r.probeSent)
	if (r.probing && since < probeLost) || since < probeGap {
		return key, false
	}
	_, _ = rand.Read(key[:])
	r.probing, r.probeKey, r.probeSent = true, key, now
	return key, true
}

// pong notes that the PING with key was answered.
func (r *rttStats) pong(key [8]byte) {
	r.mu.Lock()
	if r.probing && key == r.probeKey {
		r.probing = false
	}
	r.mu.Unlock()
}

// queueTarget is the queueing delay the stream windows aim for on a path with base
// RTT base: half the path's own RTT (a window then covers the bandwidth-delay product
// with half of it to spare, which keeps a bulk transfer at full speed), but at least
// minQueueTarget, so that the scheduling noise of a busy machine on a
// sub-millisecond link is not taken for a queue.
func queueTarget(base time.Duration) time.Duration {
	return max(base/2, minQueueTarget)
}

// windowChange decides how a stream's receive window changes when credit is about to
// be returned: win is the window, limit its largest allowed size, floor the initial
// window; fast tells that half the window was consumed within a few base RTTs (the
// window, not the application, may limit the stream); queue is the session's queueing
// delay measured by n PINGs sent a round trip after the window last changed, and
// target what it aims for. It returns how many bytes the window grows by (> 0),
// shrinks by (< 0), or 0.
//
// While the window may limit the stream, it doubles while the queue is within the
// target and grows by a quarter up to three times the target (small steps, so that
// one step does not overshoot much). Beyond four times the target it shrinks by a
// quarter, by half beyond eight times; in between it holds. The band is wide because
// not every delay is a queue the window makes: on a lossy link a PING often waits
// about one RTT (twice the target) for a retransmission ahead of it, and a window
// that stopped growing or shrank then would only slow the transfer down (measured:
// a download through 20 ms and 0.5% loss lost a quarter of its speed with a
// narrower band). A shrink takes two samples, so that one PING delayed by a busy CPU
// does not cost a bulk transfer its window.
func windowChange(win, floor, limit int, fast bool, queue time.Duration, n int, target time.Duration) int {
	switch {
	case n == 0:
		return 0
	case queue > 4*target && win > floor && n >= 2:
		next := win - win/4
		if queue > 8*target {
			next = win / 2
		}
		return max(next, floor) - win
	case queue <= 3*target && fast && win < limit:
		step := win
		if queue > target {
			step = win / 4
		}
		return min(step, limit-win)
	}
	return 0
}
