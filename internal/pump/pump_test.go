package pump

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A source of items that signals each push by kicking the pump: the pump must move
// every item exactly once, never run fn concurrently, and stop when told.
func TestPumpMovesEverythingOnce(t *testing.T) {
	const producers, each = 8, 5000
	var (
		mu      sync.Mutex
		queue   []int
		closed  bool
		seen    = make(map[int]int)
		inFn    atomic.Int32
		overlap atomic.Bool
	)
	finished := make(chan struct{})
	p := New(func() bool {
		if inFn.Add(1) > 1 {
			overlap.Store(true)
		}
		defer inFn.Add(-1)
		mu.Lock()
		defer mu.Unlock()
		for _, v := range queue {
			seen[v]++
		}
		queue = queue[:0]
		return closed
	}, func() { close(finished) })

	var wg sync.WaitGroup
	for w := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mu.Lock()
				queue = append(queue, w*each+i)
				mu.Unlock()
				p.Kick()
				if i%100 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	closed = true
	mu.Unlock()
	p.Kick()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the pump did not finish after the last kick")
	}
	if overlap.Load() {
		t.Error("fn ran in two goroutines at once")
	}
	if !p.Finished() {
		t.Error("Finished is false after onDone")
	}
	if len(seen) != producers*each {
		t.Fatalf("moved %d distinct items, want %d", len(seen), producers*each)
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("item %d moved %d times", v, n)
		}
	}
	p.Kick() // ignored: no goroutine may start (goleak checks at exit)
}

// Between kicks no goroutine exists: that is the point of the package.
func TestPumpIdleHoldsNoGoroutine(t *testing.T) {
	ran := make(chan struct{}, 1)
	p := New(func() bool { ran <- struct{}{}; return false }, nil)
	base := runtime.NumGoroutine()
	for range 100 {
		p.Kick()
		<-ran
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the kicks, %d before", runtime.NumGoroutine(), base)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPumpNotStartedWithoutKick(t *testing.T) {
	var calls atomic.Int32
	New(func() bool { calls.Add(1); return true }, nil)
	time.Sleep(10 * time.Millisecond)
	if calls.Load() != 0 {
		t.Fatal("fn ran without a kick")
	}
}
