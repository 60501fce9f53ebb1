package daemon

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	p := Pacer{Min: 200 * time.Millisecond, Max: time.Second}
	ms := time.Millisecond
	for i, c := range []struct {
		changed bool
		want    time.Duration
	}{
		{false, 200 * ms}, // the first tick waits Min, whatever it saw
		{false, 400 * ms},
		{false, 800 * ms},
		{false, time.Second},
		{false, time.Second},
		{true, 200 * ms},
		{false, 400 * ms},
		{true, 200 * ms},
	} {
		if got := p.Next(c.changed); got != c.want {
			t.Fatalf("tick %d (changed %v): %v, want %v", i, c.changed, got, c.want)
		}
	}
	var z Pacer
	if got := z.Next(false); got != time.Second {
		t.Fatalf("zero Pacer: first interval %v, want 1s", got)
	}
	for range 10 {
		z.Next(false)
	}
	if got := z.Next(false); got != 5*time.Second {
		t.Fatalf("zero Pacer: longest interval %v, want 5s", got)
	}
	if got := (&Pacer{Min: 3 * time.Second, Max: time.Second}).Next(false); got != 3*time.Second {
		t.Fatalf("Max below Min: %v, want Min (3s)", got)
	}
}

// TestRateMeterMoved: Sample reports whether the totals moved, which is what paces
// the client's housekeeping.
func TestRateMeterMoved(t *testing.T) {
	var m RateMeter
	t0 := time.Now()
	if !m.Sample(t0, 100, 50) {
		t.Fatal("first sample with bytes: not moved")
	}
	if m.Sample(t0.Add(time.Second), 100, 50) {
		t.Fatal("same totals: moved")
	}
	if up, down := m.Rates(); up != 0 || down != 0 {
		t.Fatalf("rates %v, %v after a quiet second, want 0, 0", up, down)
	}
	if !m.Sample(t0.Add(3*time.Second), 100, 2050) {
		t.Fatal("down total grew: not moved")
	}
	if up, down := m.Rates(); up != 0 || down != 1000 {
		t.Fatalf("rates %v, %v over 2 s with 2000 bytes down, want 0, 1000", up, down)
	}
}
