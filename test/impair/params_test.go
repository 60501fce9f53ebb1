package main

import (
	"testing"
	"time"
)

func TestParseSettings(t *testing.T) {
	base := Params{Delay: time.Millisecond}
	a, b, err := ParseSettings("delay=20ms, loss=1 reorder=1.5% # comment\n a.dup=2 b.rate=10mbit blackhole=on\nb.limit=50", base, base)
	if err != nil {
		t.Fatal(err)
	}
	wantA := Params{Delay: 20 * time.Millisecond, Loss: 1, Reorder: 1.5, Dup: 2, Blackhole: true}
	wantB := Params{Delay: 20 * time.Millisecond, Loss: 1, Reorder: 1.5, Rate: 10e6, Limit: 50, Blackhole: true}
	if a != wantA || b != wantB {
		t.Fatalf("got\n a %v\n b %v\nwant\n a %v\n b %v", a, b, wantA, wantB)
	}
	// Empty settings change nothing.
	if a2, b2, err := ParseSettings("  \n# nothing\n", a, b); err != nil || a2 != a || b2 != b {
		t.Fatalf("empty settings: %v %v %v", a2, b2, err)
	}
}

func TestParseSettingsErrors(t *testing.T) {
	for _, s := range []string{
		"delay", "delay=fast", "loss=101", "loss=-1", "dup=x", "rate=fast", "rate=-5",
		"blackhole=maybe", "c.delay=1ms", "speed=1", "limit=-1", "jitter=-1ms",
	} {
		if _, _, err := ParseSettings(s, Params{}, Params{}); err == nil {
			t.Errorf("ParseSettings(%q): no error", s)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "800000": 800000, "500k": 500000, "10mbit": 10000000, "1.5M": 1500000, "1g": 1000000000, "2Gbit": 2000000000,
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestParamsStringRoundTrips(t *testing.T) {
	p := Params{Delay: 20 * time.Millisecond, Jitter: time.Millisecond, Loss: 1, Reorder: 2, ReorderHold: 4 * time.Millisecond,
		Dup: 0.5, Rate: 1e6, RateQueue: 10 * time.Millisecond, Limit: 7, Blackhole: true}
	a, _, err := ParseSettings(p.String(), Params{}, Params{})
	if err != nil || a != p {
		t.Fatalf("%q parsed as %v (%v)", p.String(), a, err)
	}
}
