package daemon

import "runtime/debug"

// MemoryReturner gives memory back to the operating system after a mass close of
// flows. The Go runtime keeps freed heap for reuse and hands it back only gradually
// (over minutes), so a laptop that opened 10,000 connections would otherwise show
// that peak in its RSS long after they closed. Observe the number of open flows about
// once a second; when it falls to a quarter of a peak of at least MinPeak, the heap is
// collected and returned at once (debug.FreeOSMemory: one full GC, rare by design).
type MemoryReturner struct {
	// MinPeak is the smallest peak worth returning memory after. Default 1000.
	MinPeak int
	// Free returns the memory; default debug.FreeOSMemory (tests replace it).
	Free func()

	peak int
}

// Observe records the open flows now, and returns memory if they fell far from
// their peak.
func (m *MemoryReturner) Observe(open int) {
	if open > m.peak {
		m.peak = open
		return
	}
	minPeak := m.MinPeak
	if minPeak <= 0 {
		minPeak = 1000
	}
	if m.peak >= minPeak && open <= m.peak/4 {
		free := m.Free
		if free == nil {
			free = debug.FreeOSMemory
		}
		free()
		m.peak = open
	}
}
