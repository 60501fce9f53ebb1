package daemon

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestProcsStateSteps(t *testing.T) {
	for _, c := range []struct {
		name      string
		procs     int
		low       int
		saturated bool
		load      float64
		want      int
		wantLow   int
		wantQuiet bool // sampled less often after it (only idle on one thread)
	}{
		{"light on one thread", 1, 0, false, 0.05, 1, 0, false},
		{"idle on one thread", 1, 0, false, 0.001, 1, 0, true},
		{"saturated on one thread: all of them", 1, 0, true, 0.6, 4, 0, false},
		{"moderate on one thread: stays", 1, 0, false, 0.6, 1, 0, false},
		{"above lowerLoad on all: stays, count restarts", 4, 5, false, 0.7, 4, 0, false},
		{"light on all: counts", 4, 0, false, 0.1, 4, 1, false},
		{"idle on all: counts, watched closely", 4, 0, false, 0.001, 4, 1, false},
		{"half a core on all: counts (one thread would do)", 4, 0, false, 0.5, 4, 1, false},
		{"light long enough: one", 4, lowerAfter - 1, false, 0.1, 1, 0, false},
		{"busy on all: stays", 4, 0, true, 3.5, 4, 0, false},
	} {
		s := procsState{procs: c.procs, limit: 4, low: c.low}
		got := s.next(c.saturated, c.load)
		if got != c.want || s.low != c.wantLow {
			t.Errorf("%s: from %d (%d light), next(%v, %.2f) = %d (%d light); want %d (%d light)",
				c.name, c.procs, c.low, c.saturated, c.load, got, s.low, c.want, c.wantLow)
		}
		if q := s.quiet(c.saturated, c.load); q != c.wantQuiet {
			t.Errorf("%s: quiet = %v, want %v", c.name, q, c.wantQuiet)
		}
	}
}

// TestProcsStateBounce: a return to one thread that the load undoes at once makes
// the next return wait twice as long, up to maxLowerAfter; a load that comes back
// later starts again from lowerAfter.
func TestProcsStateBounce(t *testing.T) {
	s := procsState{procs: 1, limit: 2}
	// lightFor returns how many light samples it took to get back to one thread.
	lightFor := func() int {
		t.Helper()
		for n := 1; n <= 2*maxLowerAfter; n++ {
			if s.next(false, 0.5) == 1 {
				return n
			}
		}
		t.Fatalf("still %d threads after %d light samples", s.procs, 2*maxLowerAfter)
		return 0
	}
	if s.next(true, 0.9) != 2 {
		t.Fatal("a saturated sample did not raise")
	}
	if n := lightFor(); n != lowerAfter {
		t.Fatalf("first return after %d light samples, want %d", n, lowerAfter)
	}
	want := lowerAfter
	for range 8 {
		s.next(false, 0.6)          // one sample on one thread...
		if s.next(true, 0.9) != 2 { // ...and it needs both again
			t.Fatal("a saturated sample did not raise")
		}
		want = min(2*want, maxLowerAfter)
		if n := lightFor(); n != want {
			t.Fatalf("return after a bounce took %d light samples, want %d", n, want)
		}
	}
	// On one thread for longer than bounce samples: the next load is a new one.
	for range bounce + 1 {
		if s.next(false, 0.6) != 1 {
			t.Fatal("a moderate load on one thread raised")
		}
	}
	s.next(true, 0.9)
	if n := lightFor(); n != lowerAfter {
		t.Fatalf("return after a new load took %d light samples, want %d", n, lowerAfter)
	}
	// An idle sample ends the watch at once (idle samples may be seconds apart): a
	// load right after it is a new one too.
	s.next(true, 0.9)
	lightFor()
	s.next(false, 0.001)
	s.next(true, 0.9)
	if n := lightFor(); n != lowerAfter {
		t.Fatalf("return after a load that followed an idle sample took %d light samples, want %d", n, lowerAfter)
	}
}

// TestProcsGovernorIdle: an idle process is sampled about every IdleInterval, not
// every Interval, and a load that appears is still seen and raised.
func TestProcsGovernorIdle(t *testing.T) {
	f := &fakeProcs{since: time.Now()}
	g := &ProcsGovernor{Max: 2, Interval: 5 * time.Millisecond, IdleInterval: 100 * time.Millisecond, read: f.countedRead, set: f.set}
	defer runGovernor(g)()

	time.Sleep(300 * time.Millisecond) // backing off: 5, 10, 20, 40, 80, 100 ms
	r0 := f.readCount()
	time.Sleep(time.Second)
	// About 10 samples at 100 ms; at the base interval it would be about 200. (A busy
	// machine delays timers, which only makes fewer.)
	if n := f.readCount() - r0; n > 50 || n < 2 {
		t.Fatalf("%d samples in 1 s of idleness, want about 10 (IdleInterval 100 ms, Interval 5 ms)", n)
	}
	f.setLoad(1.5, 10, 0)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if n, _ := f.last(); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a load after idleness was not raised within 5 s")
		}
	}
}

// runGovernor runs g.Run in a goroutine; the function it returns ends it and waits.
func runGovernor(g *ProcsGovernor) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	return func() { cancel(); <-done }
}

// fakeProcs is a process whose CPU load and scheduling waits the test sets.
type fakeProcs struct {
	mu      sync.Mutex
	base    procsSample // the counts up to since
	since   time.Time
	load    float64 // cores used since since
	runs    float64 // goroutines scheduled per second since since
	waiting float64 // the fraction of them that waited long
	sets    []int
	reads   int
}

// countedRead is read, counted.
func (f *fakeProcs) countedRead() (procsSample, error) {
	f.mu.Lock()
	f.reads++
	f.mu.Unlock()
	return f.read()
}

func (f *fakeProcs) readCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.reads }

func (f *fakeProcs) read() (procsSample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nowLocked(), nil
}

func (f *fakeProcs) nowLocked() procsSample {
	d := time.Since(f.since)
	runs := uint64(f.runs * d.Seconds())
	return procsSample{
		cpu:    f.base.cpu + time.Duration(f.load*float64(d)),
		runs:   f.base.runs + runs,
		waited: f.base.waited + uint64(float64(runs)*f.waiting),
	}
}

func (f *fakeProcs) setLoad(load, runs, waiting float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.base, f.since = f.nowLocked(), time.Now()
	f.load, f.runs, f.waiting = load, runs, waiting
}

func (f *fakeProcs) set(n int) { f.mu.Lock(); f.sets = append(f.sets, n); f.mu.Unlock() }

// last returns the last value set and how many were.
func (f *fakeProcs) last() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sets) == 0 {
		return 0, 0
	}
	return f.sets[len(f.sets)-1], len(f.sets)
}

// TestProcsGovernor runs the governor against a fake process: one thread while idle,
// all of them as soon as a sample shows one saturated (by CPU load, or by goroutines
// waiting to run while the load is moderate), one again after lowerAfter samples
// under lowerLoad, and Max when it ends.
func TestProcsGovernor(t *testing.T) {
	f := &fakeProcs{since: time.Now()}
	g := &ProcsGovernor{Max: 2, Interval: 20 * time.Millisecond, IdleInterval: 40 * time.Millisecond, read: f.read, set: f.set}
	stop := runGovernor(g)

	waitSet := func(what string, want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if n, _ := f.last(); n == want {
				return
			}
			if time.Now().After(deadline) {
				_, k := f.last()
				t.Fatalf("%s: GOMAXPROCS not set to %d (%d sets so far)", what, want, k)
			}
		}
	}
	waitSet("at start", 1)
	// An interactive loop: many goroutines scheduled, none waits: one thread.
	f.setLoad(0.5, 10000, 0)
	time.Sleep(10 * g.Interval)
	if n, k := f.last(); n != 1 || k != 1 {
		t.Fatalf("a moderate load without waits changed GOMAXPROCS to %d", n)
	}
	// A transfer on a machine whose cores are shared: 0.6 cores, but 20% of the
	// goroutines wait for the thread.
	f.setLoad(0.6, 10000, 0.2)
	waitSet("goroutines waiting", 2)
	f.setLoad(0.05, 10000, 0.02)
	waitSet("idle again", 1)
	// A ping-pong on a machine busy with other work: goroutines wait because the
	// thread does not get a core, not because it is saturated: one thread.
	_, k0 := f.last()
	f.setLoad(0.25, 10000, 0.3)
	time.Sleep(10 * g.Interval)
	if n, k := f.last(); n != 1 || k != k0 {
		t.Fatalf("waits on a light load changed GOMAXPROCS to %d", n)
	}
	f.setLoad(1.5, 10, 0) // busy, few goroutines
	waitSet("under CPU load", 2)
	_, k := f.last()
	// The transfer ends and an interactive loop goes on: half a core, no waits.
	// One thread does; with the old bound (0.4) the second one stayed for good.
	f.setLoad(0.5, 10000, 0)
	waitSet("an interactive loop after the transfer", 1)
	f.mu.Lock()
	between := len(f.sets) - k
	f.mu.Unlock()
	if between != 1 {
		t.Fatalf("%d sets after the load ended, want one", between)
	}
	stop()
	if n, _ := f.last(); n != 2 {
		t.Fatalf("GOMAXPROCS %d after Run ended, want Max (2)", n)
	}
}

// TestProcsReader reads the real process: CPU time and scheduled goroutines grow.
func TestProcsReader(t *testing.T) {
	read := newProcsReader()
	a, err := read()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {})
		}
		wg.Wait()
	}
	b, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if b.cpu <= a.cpu || b.runs <= a.runs || b.waited < a.waited {
		t.Fatalf("before %+v, after %+v: want more CPU time and more goroutines scheduled", a, b)
	}
}
