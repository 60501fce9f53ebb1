package daemon

import (
	"context"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// ProcsGovernor runs Go code on one thread (GOMAXPROCS 1) while the process is lightly
// loaded and on all of them under load.
//
// With several threads, the Go scheduler hands a goroutine that becomes runnable to
// an idle thread and wakes it: a futex wake-up and a context switch, tens of
// microseconds on a virtual machine and energy on a phone. A round trip through the
// tunnel makes goroutines runnable about sixteen times across the two daemons; on
// one thread they simply run one after the other (docs/performance-changes.md, change 13).
// A bulk transfer needs more than one thread. The governor gives it all of them as
// soon as one is saturated: goroutines wait for it (the runtime's scheduling
// latencies), or the process uses most of a core; and goes back to one after the
// load stayed light for a while.
//
// GOMAXPROCS is the whole process's setting: a program that embeds tetherd decides
// whether to run a governor; `tetherd up`, `serve` and `proxy` run one unless the
// GOMAXPROCS environment variable is set.
type ProcsGovernor struct {
	// Max is GOMAXPROCS under load. Default: GOMAXPROCS when Run starts.
	Max int
	// Interval is how often the load is sampled. Default 200 ms.
	Interval time.Duration
	// IdleInterval is how often it is sampled while the process is idle: each idle
	// sample in a row (one thread, under idleLoad) doubles the interval, up to this
	// (Pacer). Default 2 s; never less than Interval. Sampling five times a second
	// was most of an idle daemon's wake-ups (energy on a phone or a laptop); the
	// price is up to IdleInterval more before a transfer that starts after a quiet
	// moment gets the second thread (one carries as much here; latency under the
	// load is what the second one is for).
	IdleInterval time.Duration
	// Log gets a debug line at every change; nil logs nothing.
	Log *zap.Logger

	// read and set are replaced by tests.
	read func() (procsSample, error)
	set  func(int)
}

// procsSample is what the governor reads: cumulative counts since the process
// started.
type procsSample struct {
	cpu time.Duration // user and system CPU time of the process
	// runs counts the times goroutines were scheduled to run (the runtime samples
	// them), and waited those that had been runnable for waitedLong or more first.
	runs, waited uint64
}

const (
	// raiseLoad is the CPU load, in cores, at which one thread counts as saturated;
	// so does a sample in which at least raiseWaited of at least minRuns
	// scheduled goroutines waited waitedLong or more to run while the process used
	// waitedMinLoad or more (on a machine whose cores are busy with other processes
	// too, a saturated thread may get well under a core: a download on one thread
	// got 0.5-0.6 with 15-20% waiting). The governor then sets Max at once.
	//
	// Waits with less load than that are the machine's: other processes kept the
	// thread from running (a busy ping-pong beside two CPU hogs: 0.2-0.3 of a core),
	// and a second thread, which waits for the same cores, only adds hand-offs.
	raiseLoad     = 0.8
	raiseWaited   = 0.05
	minRuns       = 50
	waitedLong    = 100 * time.Microsecond
	waitedMinLoad = 0.4
	// lowerLoad is the load under which the process goes back to one thread, once
	// it stayed under it for lowerAfter samples (a pause in a transfer is not its
	// end). It is below raiseLoad (no flapping on a steady load) but well above what
	// an interactive flow costs on one thread: a busy request/response loop uses
	// about half a core, and more with two threads (futex wake-ups between them), so
	// with a lower bound it kept the second thread it did not need and the higher
	// latency that comes with it.
	lowerLoad  = 0.65
	lowerAfter = 10
	// A load that needs the threads after all (raised again within bounce samples
	// of going back to one) doubles the light samples the next return waits for,
	// up to maxLowerAfter (16 s: after a noisy moment the process is back on one
	// thread soon); a raise later than that is a new load and starts again from
	// lowerAfter. A load that sits near the bounds flaps once in a while, not every
	// two seconds.
	bounce        = 10
	maxLowerAfter = 8 * lowerAfter
	// idleLoad is the load under which a sample on one thread counts as idle: an
	// idle tunnel uses about 0.001 of a core, 100 Mbit/s about 0.05.
	idleLoad = 0.02
)

// Run governs GOMAXPROCS until ctx is done, then sets Max again. It returns at once
// when Max is 1 or the process's CPU time cannot be read.
func (g *ProcsGovernor) Run(ctx context.Context) {
	limit := g.Max
	if limit <= 0 {
		limit = runtime.GOMAXPROCS(0)
	}
	read, set := g.read, g.set
	if read == nil {
		read = newProcsReader()
	}
	if set == nil {
		set = func(n int) { runtime.GOMAXPROCS(n) }
	}
	interval := g.Interval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	idleInterval := g.IdleInterval
	if idleInterval <= 0 {
		idleInterval = 2 * time.Second
	}
	last, err := read()
	if limit <= 1 || err != nil {
		return
	}
	log := g.Log
	if log == nil {
		log = zap.NewNop()
	}
	st := procsState{procs: 1, limit: limit}
	set(1)
	defer set(limit)
	at := time.Now()
	pace := Pacer{Min: interval, Max: idleInterval}
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur, err := read()
			if err != nil || !now.After(at) {
				t.Reset(interval)
				continue
			}
			load := float64(cur.cpu-last.cpu) / float64(now.Sub(at))
			saturated := load >= raiseLoad
			if runs := cur.runs - last.runs; runs >= minRuns && load >= waitedMinLoad {
				saturated = saturated || float64(cur.waited-last.waited) >= raiseWaited*float64(runs)
			}
			last, at = cur, now
			from := st.procs
			if st.next(saturated, load) != from {
				log.Debug("GOMAXPROCS", zap.Int("from", from), zap.Int("to", st.procs), zap.Float64("load", load), zap.Int("lower_after", st.need))
				set(st.procs)
			}
			t.Reset(pace.Next(!st.quiet(saturated, load)))
		}
	}
}

// procsState is the governor's decision: GOMAXPROCS now, and what it remembers of
// the samples before. The zero value needs procs and limit set.
type procsState struct {
	procs, limit int
	low          int // light samples in a row (while procs > 1)
	need         int // light samples in a row that bring procs back to one; 0: lowerAfter
	watch        int // samples left in which a raise means the last return was wrong
}

// next takes one sample — whether the threads were saturated, and the CPU load in
// cores — and returns the new GOMAXPROCS.
func (s *procsState) next(saturated bool, load float64) int {
	if s.need == 0 {
		s.need = lowerAfter
	}
	switch {
	case s.procs < s.limit && saturated:
		if s.watch > 0 {
			s.need = min(2*s.need, maxLowerAfter) // it did need them
		} else {
			s.need = lowerAfter // a new load
		}
		s.procs, s.low, s.watch = s.limit, 0, 0
	case s.procs > 1 && load < lowerLoad:
		s.low++
		if s.low >= s.need {
			s.procs, s.low, s.watch = 1, 0, bounce
		}
	case s.procs > 1:
		s.low = 0
	case load < idleLoad:
		s.watch = 0 // the load ended: a raise after this is a new one
	default:
		s.watch = max(s.watch-1, 0)
	}
	return s.procs
}

// quiet tells whether a sample after next left nothing to watch closely: one thread,
// and the process idle. The governor then samples less often (Pacer).
func (s *procsState) quiet(saturated bool, load float64) bool {
	return s.procs == 1 && !saturated && load < idleLoad
}

// newProcsReader returns a function that reads the process's CPU time (getrusage)
// and the runtime's scheduling latencies (runtime/metrics).
func newProcsReader() func() (procsSample, error) {
	m := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	return func() (procsSample, error) {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return procsSample{}, err
		}
		s := procsSample{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
		metrics.Read(m)
		if m[0].Value.Kind() == metrics.KindFloat64Histogram {
			h := m[0].Value.Float64Histogram()
			for i, c := range h.Counts {
				s.runs += c
				if h.Buckets[i] >= waitedLong.Seconds() { // the bucket's lower bound
					s.waited += c
				}
			}
		}
		return s, nil
	}
}
