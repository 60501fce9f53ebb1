package main

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// packet i: 8 bytes of sequence number, then padding up to size.
func packet(i, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

func seqOf(b []byte) int { return int(binary.BigEndian.Uint64(b)) }

// out is a packet as it left the pipe.
type out struct {
	seq int
	at  time.Time
}

// drive pushes n packets of size bytes, one every gap from t0, and pops with a
// clock ticking in steps of step until the pipe is empty (or a minute has passed).
func drive(t *testing.T, q *Pipe, n, size int, gap, step time.Duration) []out {
	t.Helper()
	var got []out
	next := 0
	for now := t0; now.Before(t0.Add(time.Minute)); now = now.Add(step) {
		for next < n && !t0.Add(time.Duration(next)*gap).After(now) {
			q.Push(packet(next, size), t0.Add(time.Duration(next)*gap))
			next++
		}
		for {
			p, ok := q.Pop(now)
			if !ok {
				break
			}
			got = append(got, out{seqOf(p), now})
		}
		if next == n && q.Len() == 0 {
			return got
		}
	}
	t.Fatalf("the pipe still holds %d packets after a minute", q.Len())
	return nil
}

func seqs(o []out) []int {
	var s []int
	for _, x := range o {
		s = append(s, x.seq)
	}
	return s
}

func TestZeroParamsPassEverythingAtOnce(t *testing.T) {
	q := NewPipe(Params{}, 1)
	q.Push(packet(7, 100), t0)
	p, ok := q.Pop(t0)
	if !ok || seqOf(p) != 7 || len(p) != 100 {
		t.Fatalf("Pop at the arrival time = %v, %v; want packet 7 at once", p, ok)
	}
	if st := q.Stats(); st.In != 1 || st.Out != 1 || st.InBytes != 100 || st.OutBytes != 100 {
		t.Fatalf("stats %v", st)
	}
}

func TestDelayIsRespected(t *testing.T) {
	q := NewPipe(Params{Delay: 20 * time.Millisecond}, 1)
	got := drive(t, q, 100, 64, time.Millisecond, 100*time.Microsecond)
	if len(got) != 100 {
		t.Fatalf("%d packets out, want 100", len(got))
	}
	for _, o := range got {
		sent := t0.Add(time.Duration(o.seq) * time.Millisecond)
		if d := o.at.Sub(sent); d != 20*time.Millisecond {
			t.Fatalf("packet %d left after %v, want exactly 20ms", o.seq, d)
		}
	}
	if !slices.IsSorted(seqs(got)) {
		t.Fatalf("order changed without reorder: %v", seqs(got))
	}
}

func TestJitterStaysInBoundsAndKeepsOrder(t *testing.T) {
	p := Params{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}
	q := NewPipe(p, 3)
	step := 100 * time.Microsecond
	got := drive(t, q, 2000, 64, 200*time.Microsecond, step)
	if len(got) != 2000 {
		t.Fatalf("%d packets out, want 2000", len(got))
	}
	if !slices.IsSorted(seqs(got)) {
		t.Fatal("jitter reordered packets")
	}
	lo, hi := time.Hour, time.Duration(0)
	for _, o := range got {
		d := o.at.Sub(t0.Add(time.Duration(o.seq) * 200 * time.Microsecond))
		lo, hi = min(lo, d), max(hi, d)
		if d < p.Delay-p.Jitter || d > p.Delay+p.Jitter+step {
			t.Fatalf("packet %d delayed %v, outside %v±%v", o.seq, d, p.Delay, p.Jitter)
		}
	}
	if hi-lo < p.Jitter {
		t.Fatalf("delays spread only over [%v, %v]: the jitter is not applied", lo, hi)
	}
}

func TestLossRate(t *testing.T) {
	const n = 100000
	q := NewPipe(Params{Loss: 1}, 42)
	got := drive(t, q, n, 64, time.Microsecond, 10*time.Microsecond)
	st := q.Stats()
	if st.Lost < n*85/10000 || st.Lost > n*115/10000 {
		t.Fatalf("lost %d of %d, want 1%% ± 0.15%%", st.Lost, n)
	}
	if uint64(len(got)) != n-st.Lost || st.Out != uint64(len(got)) {
		t.Fatalf("out %d (stats %d), in %d, lost %d", len(got), st.Out, n, st.Lost)
	}
	if !slices.IsSorted(seqs(got)) {
		t.Fatal("loss changed the order")
	}
}

func TestReorderChangesOrderAndLosesNothing(t *testing.T) {
	const n = 20000
	q := NewPipe(Params{Delay: 20 * time.Millisecond, Reorder: 1, ReorderHold: 3 * time.Millisecond}, 9)
	got := drive(t, q, n, 64, 100*time.Microsecond, 50*time.Microsecond)
	s := seqs(got)
	if len(s) != n {
		t.Fatalf("%d out, want %d", len(s), n)
	}
	st := q.Stats()
	if st.Reordered < n*7/1000 || st.Reordered > n*13/1000 {
		t.Fatalf("%d of %d held back, want about 1%%", st.Reordered, n)
	}
	inversions := 0
	for i := 1; i < len(s); i++ {
		if s[i] < s[i-1] {
			inversions++
		}
	}
	if inversions < int(st.Reordered)/2 {
		t.Fatalf("only %d places out of order for %d packets held back", inversions, st.Reordered)
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatalf("not a permutation of 0..%d: position %d holds %d", n-1, i, v)
		}
	}
	// A held-back packet leaves ReorderHold after its due time.
	for _, o := range got {
		d := o.at.Sub(t0.Add(time.Duration(o.seq) * 100 * time.Microsecond))
		if d != 20*time.Millisecond && d != 23*time.Millisecond {
			t.Fatalf("packet %d delayed %v, want 20ms or 23ms", o.seq, d)
		}
	}
}

func TestDuplicates(t *testing.T) {
	const n = 20000
	q := NewPipe(Params{Dup: 2}, 5)
	got := drive(t, q, n, 64, time.Microsecond, 10*time.Microsecond)
	st := q.Stats()
	if st.Duplicated < n*15/1000 || st.Duplicated > n*25/1000 {
		t.Fatalf("%d duplicated of %d, want about 2%%", st.Duplicated, n)
	}
	if uint64(len(got)) != n+st.Duplicated {
		t.Fatalf("%d out, want %d + %d duplicates", len(got), n, st.Duplicated)
	}
	count := map[int]int{}
	for _, o := range got {
		count[o.seq]++
	}
	twice := 0
	for i := 0; i < n; i++ {
		switch count[i] {
		case 1:
		case 2:
			twice++
		default:
			t.Fatalf("packet %d came out %d times", i, count[i])
		}
	}
	if uint64(twice) != st.Duplicated {
		t.Fatalf("%d packets twice, stats say %d", twice, st.Duplicated)
	}
}

func TestRateLimitAndItsQueue(t *testing.T) {
	// 1250 bytes at 1 Mbit/s occupy the link for 10 ms each. Five arrive at once;
	// the fourth would wait 30 ms > 25 ms and is dropped, so is the fifth.
	q := NewPipe(Params{Rate: 1e6, RateQueue: 25 * time.Millisecond, Delay: time.Millisecond}, 1)
	for i := 0; i < 5; i++ {
		q.Push(packet(i, 1250), t0)
	}
	if st := q.Stats(); st.Overflow != 2 {
		t.Fatalf("overflow %d, want 2", st.Overflow)
	}
	for i, want := range []time.Duration{11, 21, 31} {
		at, ok := q.Next()
		if !ok || at.Sub(t0) != want*time.Millisecond {
			t.Fatalf("packet %d due at %v, want %v", i, at.Sub(t0), want*time.Millisecond)
		}
		if _, ok := q.Pop(at.Add(-time.Nanosecond)); ok {
			t.Fatalf("packet %d came out early", i)
		}
		if p, ok := q.Pop(at); !ok || seqOf(p) != i {
			t.Fatalf("packet %d did not come out at its time", i)
		}
	}
	// An idle link sends at once again.
	later := t0.Add(time.Second)
	q.Push(packet(9, 1250), later)
	if at, _ := q.Next(); at.Sub(later) != 11*time.Millisecond {
		t.Fatalf("after idling, due after %v, want 11ms", at.Sub(later))
	}
}

func TestLimitBoundsTheQueue(t *testing.T) {
	q := NewPipe(Params{Delay: time.Second, Limit: 5}, 1)
	for i := 0; i < 12; i++ {
		q.Push(packet(i, 10), t0)
	}
	if q.Len() != 5 || q.Stats().Overflow != 7 {
		t.Fatalf("queued %d, overflow %d; want 5 and 7", q.Len(), q.Stats().Overflow)
	}
}

func TestBlackholeDropsEverythingAndLifts(t *testing.T) {
	q := NewPipe(Params{Blackhole: true, Loss: 50}, 1)
	for i := 0; i < 100; i++ {
		q.Push(packet(i, 10), t0)
	}
	if st := q.Stats(); st.Blackholed != 100 || st.Lost != 0 || q.Len() != 0 {
		t.Fatalf("stats %v, queued %d", st, q.Len())
	}
	q.SetParams(Params{})
	q.Push(packet(100, 10), t0)
	if p, ok := q.Pop(t0); !ok || seqOf(p) != 100 {
		t.Fatal("no packet after the blackhole was lifted")
	}
}

func TestSameSeedSameChoices(t *testing.T) {
	p := Params{Delay: 5 * time.Millisecond, Jitter: time.Millisecond, Loss: 3, Reorder: 3, Dup: 3}
	run := func(seed uint64) ([]out, Stats) {
		q := NewPipe(p, seed)
		got := drive(t, q, 5000, 64, 50*time.Microsecond, 50*time.Microsecond)
		return got, q.Stats()
	}
	a, sa := run(11)
	b, sb := run(11)
	c, sc := run(12)
	if !slices.Equal(a, b) || sa != sb {
		t.Fatal("the same seed gave different results")
	}
	if slices.Equal(a, c) && sa == sc {
		t.Fatal("different seeds gave the same results")
	}
}
