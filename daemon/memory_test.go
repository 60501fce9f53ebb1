package daemon

import "testing"

func TestMemoryReturner(t *testing.T) {
	freed := 0
	m := &MemoryReturner{MinPeak: 100, Free: func() { freed++ }}
	steps := []struct {
		open, freed int
	}{
		{10, 0}, {90, 0}, {5, 0}, // a peak below MinPeak: nothing
		{100, 0}, {400, 0}, {150, 0}, // not yet a quarter of 400
		{100, 1},        // a quarter of the peak: returned once; 100 is the new peak
		{50, 1}, {0, 2}, // a quarter of that peak (still >= MinPeak)
		{1000, 2}, {250, 3}, // a new peak, fallen to a quarter
		{250, 3}, // and not again without a new peak
	}
	for i, s := range steps {
		m.Observe(s.open)
		if freed != s.freed {
			t.Fatalf("step %d (open %d): freed %d times, want %d", i, s.open, freed, s.freed)
		}
	}
}

func TestMemoryReturnerDefault(t *testing.T) {
	m := &MemoryReturner{}
	m.Observe(2000)
	m.Observe(0) // runs debug.FreeOSMemory: must simply work
	if m.peak != 0 {
		t.Fatalf("peak %d after returning", m.peak)
	}
}
