package daemon

import "testing"

func TestMemoryReturner(t *testing.T) {
	freed := 0
	m := &MemoryReturner{MinPeak: 100, Settle: 2, Free: func() { freed++ }}
	// armed: whether the caller should keep observing every second after the step.
	steps := []struct {
		open, freed int
		armed       bool
	}{
		{10, 0, false}, {90, 0, false}, {5, 0, false}, // a peak below MinPeak: nothing
		{100, 0, true}, {400, 0, true}, {150, 0, true}, // not yet a quarter of 400
		{100, 1, true},               // a quarter of the peak: returned; 100 is the new peak
		{100, 1, true},               // settling (1 of 2)
		{101, 1, true},               // rose above the level: no follow-up
		{101, 1, true}, {0, 2, true}, // a quarter of the peak 101 (still >= MinPeak)
		{0, 2, true}, {0, 3, false}, // settled for 2 observations: the follow-up return
		{0, 3, false}, {0, 3, false}, // and nothing more: observing may slow down
		{1000, 3, true}, {250, 4, true}, // a new peak, fallen to a quarter
		{240, 4, true}, {230, 4, true}, {200, 4, true}, // still falling (not to a quarter): no follow-up yet
		{200, 4, true}, {200, 5, true}, // stopped falling for 2 observations: the follow-up
		{200, 5, true}, {100, 5, true}, // not again without a new peak; a fall below a quarter of 250 would
	}
	for i, s := range steps {
		m.Observe(s.open)
		if freed != s.freed {
			t.Fatalf("step %d (open %d): freed %d times, want %d", i, s.open, freed, s.freed)
		}
		if m.Armed() != s.armed {
			t.Fatalf("step %d (open %d): Armed() = %v, want %v", i, s.open, m.Armed(), s.armed)
		}
	}
}

// TestMemoryReturnerSettleBounded: a count that keeps falling a little delays the
// follow-up return at most maxSettleWait observations.
func TestMemoryReturnerSettleBounded(t *testing.T) {
	freed := 0
	m := &MemoryReturner{MinPeak: 100, Free: func() { freed++ }}
	m.Observe(100000)
	m.Observe(25000) // returned
	for i := 1; i < maxSettleWait; i++ {
		m.Observe(25000 - i)
		if freed != 1 {
			t.Fatalf("observation %d of a falling count: freed %d times, want 1", i, freed)
		}
	}
	m.Observe(25000 - maxSettleWait)
	if freed != 2 {
		t.Fatalf("after %d observations of a falling count: freed %d times, want 2", maxSettleWait, freed)
	}
}

func TestMemoryReturnerDefault(t *testing.T) {
	m := &MemoryReturner{}
	m.Observe(2000)
	m.Observe(0) // runs debug.FreeOSMemory: must simply work
	if m.peak != 0 || m.wait != 3 {
		t.Fatalf("peak %d, follow-up in %d after returning; want 0, 3", m.peak, m.wait)
	}
	for range 3 {
		m.Observe(0)
	}
	if m.wait != 0 {
		t.Fatalf("follow-up still pending (%d)", m.wait)
	}
}
