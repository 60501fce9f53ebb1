package main

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"time"
)

// Params are the impairments of one direction of the link. The zero value passes
// every packet at once.
type Params struct {
	// Delay is added to every packet.
	Delay time.Duration
	// Jitter: each packet's delay varies uniformly in [Delay-Jitter, Delay+Jitter]
	// (never below zero). Jitter alone never reorders: a packet is never released
	// before the one that arrived ahead of it (unless that one was held back by
	// Reorder).
	Jitter time.Duration
	// Loss is the percentage of packets dropped at random.
	Loss float64
	// Reorder is the percentage of packets held back by ReorderHold beyond their
	// delay, so that the packets behind them overtake them.
	Reorder float64
	// ReorderHold is how long a reordered packet is held back; 0 means
	// DefaultReorderHold.
	ReorderHold time.Duration
	// Dup is the percentage of packets sent twice.
	Dup float64
	// Rate limits the link to this many bits per second; 0 means unlimited. A
	// packet occupies the link for len*8/Rate, and waits while the link is busy.
	Rate int64
	// RateQueue: a packet that would wait longer than this for the rate limiter is
	// dropped (counted as overflow); 0 means DefaultRateQueue.
	RateQueue time.Duration
	// Limit is the most packets the direction holds at once (in its delay line,
	// held back or waiting for the rate limiter); beyond it packets are dropped and
	// counted as overflow. 0 means DefaultLimit.
	Limit int
	// Blackhole drops every packet (counted apart from Loss).
	Blackhole bool
}

// Defaults of the zero fields of Params.
const (
	DefaultReorderHold = 10 * time.Millisecond
	DefaultRateQueue   = 50 * time.Millisecond
	DefaultLimit       = 10000
)

// Validate reports a parameter out of range.
func (p Params) Validate() error {
	switch {
	case p.Delay < 0 || p.Jitter < 0 || p.ReorderHold < 0 || p.RateQueue < 0:
		return fmt.Errorf("negative duration in %v", p)
	case p.Loss < 0 || p.Loss > 100 || p.Reorder < 0 || p.Reorder > 100 || p.Dup < 0 || p.Dup > 100:
		return fmt.Errorf("percentage out of 0..100 in %v", p)
	case p.Rate < 0 || p.Limit < 0:
		return fmt.Errorf("negative rate or limit in %v", p)
	}
	return nil
}

// String formats p in the key=value syntax that ParseParams reads.
func (p Params) String() string {
	return fmt.Sprintf("delay=%v jitter=%v loss=%g reorder=%g reorder_hold=%v dup=%g rate=%d rate_queue=%v limit=%d blackhole=%t",
		p.Delay, p.Jitter, p.Loss, p.Reorder, p.hold(), p.Dup, p.Rate, p.rateQueue(), p.limit(), p.Blackhole)
}

func (p Params) hold() time.Duration {
	if p.ReorderHold == 0 {
		return DefaultReorderHold
	}
	return p.ReorderHold
}

func (p Params) rateQueue() time.Duration {
	if p.RateQueue == 0 {
		return DefaultRateQueue
	}
	return p.RateQueue
}

func (p Params) limit() int {
	if p.Limit == 0 {
		return DefaultLimit
	}
	return p.Limit
}

// Stats counts what a Pipe did. Out counts packets released, duplicates included.
type Stats struct {
	In, InBytes   uint64
	Out, OutBytes uint64
	Lost          uint64 // dropped by Loss
	Blackholed    uint64 // dropped by Blackhole
	Overflow      uint64 // dropped beyond Limit or RateQueue
	Duplicated    uint64 // extra copies made by Dup
	Reordered     uint64 // packets held back by Reorder
}

// String is the one-line form printed by the relay.
func (s Stats) String() string {
	return fmt.Sprintf("in %d pkts %d bytes, out %d pkts %d bytes, lost %d, blackholed %d, overflow %d, duplicated %d, reordered %d",
		s.In, s.InBytes, s.Out, s.OutBytes, s.Lost, s.Blackholed, s.Overflow, s.Duplicated, s.Reordered)
}

// Pipe is one direction of the impaired link: packets go in with Push and come out
// with Pop once their release time has come. It is deterministic for a given seed
// and sequence of (packet, time) pairs, and does not read the clock: callers pass
// the time. It is not safe for concurrent use.
type Pipe struct {
	p     Params
	rng   *rand.Rand
	q     pktHeap
	seq   uint64
	floor time.Time // release time of the last in-order packet: jitter never reorders
	busy  time.Time // when the rate-limited link is free again
	stats Stats
}

// NewPipe returns a Pipe applying p, with its random choices drawn from seed.
func NewPipe(p Params, seed uint64) *Pipe {
	return &Pipe{p: p, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// SetParams changes the impairments from now on; packets already queued keep their
// release times.
func (q *Pipe) SetParams(p Params) { q.p = p }

// Params returns the current impairments.
func (q *Pipe) Params() Params { return q.p }

// Stats returns the counters so far.
func (q *Pipe) Stats() Stats { return q.stats }

// Len is the number of packets waiting.
func (q *Pipe) Len() int { return len(q.q) }

// percent draws true with probability pct/100.
func (q *Pipe) percent(pct float64) bool {
	return pct > 0 && q.rng.Float64()*100 < pct
}

// Push takes pkt (and keeps it: the caller must not reuse it), arriving at now,
// and queues it for release or drops it.
func (q *Pipe) Push(pkt []byte, now time.Time) {
	p := q.p
	q.stats.In++
	q.stats.InBytes += uint64(len(pkt))
	if p.Blackhole {
		q.stats.Blackholed++
		return
	}
	if q.percent(p.Loss) {
		q.stats.Lost++
		return
	}
	if len(q.q) >= p.limit() {
		q.stats.Overflow++
		return
	}
	start := now
	if p.Rate > 0 {
		if q.busy.After(now) {
			if q.busy.Sub(now) > p.rateQueue() {
				q.stats.Overflow++
				return
			}
			start = q.busy
		}
		tx := time.Duration(int64(len(pkt)) * 8 * int64(time.Second) / p.Rate)
		start = start.Add(tx)
		q.busy = start
	}
	d := p.Delay
	if p.Jitter > 0 {
		d += time.Duration(q.rng.Int64N(2*int64(p.Jitter)+1)) - p.Jitter
		d = max(d, 0)
	}
	release := start.Add(d)
	if q.percent(p.Reorder) {
		// Held back: the packets behind it overtake it. It does not move the floor.
		q.stats.Reordered++
		release = release.Add(p.hold())
	} else {
		if release.Before(q.floor) {
			release = q.floor
		}
		q.floor = release
	}
	q.push(pkt, release)
	if q.percent(p.Dup) && len(q.q) < p.limit() {
		q.stats.Duplicated++
		q.push(append([]byte(nil), pkt...), release)
	}
}

func (q *Pipe) push(pkt []byte, release time.Time) {
	q.seq++
	heap.Push(&q.q, queued{pkt: pkt, release: release, seq: q.seq})
}

// Next returns the release time of the next packet, and false when none waits.
func (q *Pipe) Next() (time.Time, bool) {
	if len(q.q) == 0 {
		return time.Time{}, false
	}
	return q.q[0].release, true
}

// Pop returns the next packet due at now, or false when none is.
func (q *Pipe) Pop(now time.Time) ([]byte, bool) {
	if len(q.q) == 0 || q.q[0].release.After(now) {
		return nil, false
	}
	it := heap.Pop(&q.q).(queued)
	q.stats.Out++
	q.stats.OutBytes += uint64(len(it.pkt))
	return it.pkt, true
}

// queued is a packet waiting for its release time; seq keeps equal release times in
// arrival order.
type queued struct {
	pkt     []byte
	release time.Time
	seq     uint64
}

type pktHeap []queued

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if c := h[i].release.Compare(h[j].release); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(queued)) }
func (h *pktHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = queued{}
	*h = old[:n-1]
	return it
}
