package shrink

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
)

func TestMapRebuildsBelowAQuarter(t *testing.T) {
	var p Peak
	m := map[int]string{}
	for i := range 4000 {
		m[i] = fmt.Sprint(i)
		p.Grew(len(m))
	}
	orig := m
	for i := range 3000 {
		delete(m, i)
		m = Map(&p, m)
	}
	if !same(m, orig) {
		t.Fatal("rebuilt at a quarter of the peak; want only below it")
	}
	delete(m, 3000)
	m = Map(&p, m)
	if same(m, orig) {
		t.Fatal("not rebuilt below a quarter of the peak")
	}
	if len(m) != 999 {
		t.Fatalf("rebuilt map holds %d entries, want 999", len(m))
	}
	for i := 3001; i < 4000; i++ {
		if m[i] != fmt.Sprint(i) {
			t.Fatalf("entry %d is %q after the rebuild", i, m[i])
		}
	}
	// The peak restarts at the rebuilt size: 999 is below the minimum worth it.
	for i := 3001; i < 4000; i++ {
		delete(m, i)
		before := m
		if m = Map(&p, m); !same(m, before) {
			t.Fatalf("rebuilt again at %d entries, below a peak worth it", len(m))
		}
	}
}

func TestMapSmallPeakKept(t *testing.T) {
	var p Peak
	m := map[int]int{}
	for i := range minPeak - 1 {
		m[i] = i
		p.Grew(len(m))
	}
	orig := m
	for i := range minPeak - 1 {
		delete(m, i)
		m = Map(&p, m)
	}
	if !same(m, orig) {
		t.Fatal("a map that never reached the minimum peak was rebuilt")
	}
}

// TestMapGivesMemoryBack measures what the point is: a map that held 200,000
// entries and was emptied keeps megabytes; rebuilt, it keeps next to nothing.
func TestMapGivesMemoryBack(t *testing.T) {
	held := func(shrink bool) uint64 {
		var p Peak
		m := map[uint64]*int{}
		for i := range uint64(200_000) {
			m[i] = new(int)
			p.Grew(len(m))
		}
		for i := range uint64(200_000 - 10) {
			delete(m, i)
			if shrink {
				m = Map(&p, m)
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		runtime.KeepAlive(m)
		return ms.HeapAlloc
	}
	kept, shrunk := held(false), held(true)
	t.Logf("heap holding 10 entries after 200,000: %d KiB as is, %d KiB rebuilt", kept>>10, shrunk>>10)
	if kept < shrunk+2<<20 {
		t.Fatalf("rebuilding gave back %d KiB, want at least 2 MiB", (int64(kept)-int64(shrunk))>>10)
	}
}

// same reports whether a and b are the same map, not just equal ones.
func same[M ~map[K]V, K comparable, V any](a, b M) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}
