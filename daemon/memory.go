package daemon

import "runtime/debug"

// MemoryReturner gives memory back to the operating system after a mass close of
// flows. The Go runtime keeps freed heap for reuse and hands it back only gradually
// (over minutes), so a laptop that opened 10,000 connections would otherwise show
// that peak in its RSS long after they closed. Observe the number of open flows about
// once a second; when it falls to a quarter of a peak of at least MinPeak, the heap is
// collected and returned at once (debug.FreeOSMemory: one full GC, rare by design).
//
// One return is not enough: when it runs, the flows that just closed are still
// being torn down (gVisor's endpoints, the session's streams), and what sync.Pools
// held survives one collection in their victim caches. So once the count has stayed
// at or below the level of a return for Settle observations, memory is returned once
// more.
type MemoryReturner struct {
	// MinPeak is the smallest peak worth returning memory after. Default 1000.
	MinPeak int
	// Settle is how many observations after a return, without the count rising
	// above its level, the follow-up return waits. Default 3.
	Settle int
	// Free returns the memory; default debug.FreeOSMemory (tests replace it).
	Free func()

	peak int
	// level is the count at the last return, and wait the observations left
	// before the follow-up; 0: none pending.
	level, wait int
}

// Observe records the open flows now, and returns memory if they fell far from
// their peak, or settled after that.
func (m *MemoryReturner) Observe(open int) {
	if m.wait > 0 {
		if open > m.level {
			m.wait = 0 // traffic again: the runtime reuses what it holds
		} else if m.wait--; m.wait == 0 {
			m.free()
		}
	}
	if open > m.peak {
		m.peak = open
		return
	}
	minPeak := m.MinPeak
	if minPeak <= 0 {
		minPeak = 1000
	}
	if m.peak >= minPeak && open <= m.peak/4 {
		m.free()
		m.peak, m.level = open, open
		m.wait = m.Settle
		if m.wait <= 0 {
			m.wait = 3
		}
	}
}

func (m *MemoryReturner) free() {
	free := m.Free
	if free == nil {
		free = debug.FreeOSMemory
	}
	free()
}
