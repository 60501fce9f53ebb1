package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// chanDevice is a device whose reads come from in and whose writes go to out.
type chanDevice struct {
	in     chan []byte
	out    chan []byte
	once   sync.Once
	closed chan struct{}
}

func newChanDevice() *chanDevice {
	return &chanDevice{in: make(chan []byte), out: make(chan []byte, 100), closed: make(chan struct{})}
}

func (d *chanDevice) Read(p []byte) (int, error) {
	select {
	case b := <-d.in:
		return copy(p, b), nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

func (d *chanDevice) Write(p []byte) (int, error) {
	d.out <- append([]byte(nil), p...)
	return len(p), nil
}

func (d *chanDevice) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func receive(t *testing.T, d *chanDevice) []byte {
	t.Helper()
	select {
	case b := <-d.out:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no packet written back within 10 s")
		return nil
	}
}

func TestRelayDelaysEachDirectionAndStops(t *testing.T) {
	a, b := newChanDevice(), newChanDevice()
	r := newRelay(map[string]device{"a": a, "b": b}, map[string]Params{
		"a": {Delay: 30 * time.Millisecond},
		"b": {},
	}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()

	start := time.Now()
	a.in <- packet(1, 100)
	if got := receive(t, a); seqOf(got) != 1 || len(got) != 100 {
		t.Fatalf("direction a wrote back %v", got)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("direction a released the packet after %v, before its 30ms delay", d)
	}
	b.in <- packet(2, 60)
	if got := receive(t, b); seqOf(got) != 2 {
		t.Fatalf("direction b wrote back %v", got)
	}

	// A blackhole swallows both directions until toggled off again.
	if !r.toggleBlackhole() {
		t.Fatal("toggleBlackhole did not turn the blackhole on")
	}
	a.in <- packet(3, 10)
	b.in <- packet(4, 10)
	waitIn(t, r, 2, 2)
	if r.toggleBlackhole() {
		t.Fatal("toggleBlackhole did not turn the blackhole off")
	}
	b.in <- packet(5, 10)
	if got := receive(t, b); seqOf(got) != 5 {
		t.Fatalf("after the blackhole, direction b wrote back packet %d, want 5", seqOf(got))
	}
	r.set(map[string]Params{"a": {}})
	a.in <- packet(6, 10)
	if got := receive(t, a); seqOf(got) != 6 {
		t.Fatalf("direction a wrote back packet %d, want 6", seqOf(got))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	rep := r.report()
	for _, want := range []string{"direction a: in 3 pkts", "blackholed 1", "direction b: in 3 pkts"} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}

// waitIn waits until the directions a and b have read at least na and nb packets.
func waitIn(t *testing.T, r *relay, na, nb uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, d := range r.dirs {
			d.mu.Lock()
			in := d.pipe.Stats().In
			d.mu.Unlock()
			if (d.name == "a" && in < na) || (d.name == "b" && in < nb) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay did not read %d and %d packets within 10 s", na, nb)
		}
		time.Sleep(time.Millisecond)
	}
}
