package daemon

import "runtime/debug"

// MemoryReturner gives memory back to the operating system after a mass close of
// flows. The Go runtime keeps freed heap for reuse and hands it back only gradually
// (over minutes), so a laptop that opened 10,000 connections would otherwise show
// that peak in its RSS long after they closed. Observe the number of open flows about
// once a second (every few seconds while Observe reports nothing to watch); when it
// falls to a quarter of a peak of at least MinPeak, the heap is collected and
// returned at once (debug.FreeOSMemory: one full GC, rare by design).
//
// One return is not enough: when it runs, most of the flows are still closing, the
// ones that just closed are still being torn down (gVisor's endpoints, the session's
// streams), and what sync.Pools held survives one collection in their victim caches.
// So after a return the count is watched until it has stopped falling for Settle
// observations (at most maxSettleWait), and then memory is returned once more.
type MemoryReturner struct {
	// MinPeak is the smallest peak worth returning memory after. Default 1000.
	MinPeak int
	// Settle is how many observations without a change of the count the follow-up
	// return waits for. Default 3.
	Settle int
	// Free returns the memory; default debug.FreeOSMemory (tests replace it).
	Free func()

	peak, last int // the highest count since the last return; the last one seen
	// level is the lowest count since the last return, wait the observations left
	// before the follow-up (0: none pending), and waited how many it has waited.
	level, wait, waited int
}

// maxSettleWait bounds the observations a follow-up return waits for a count that
// keeps falling.
const maxSettleWait = 30

// Observe records the open flows now, and returns memory if they fell far from
// their peak, or settled after that. It reports whether the caller should keep
// observing about once a second: the count moved since the last observation, or the
// returner is Armed.
func (m *MemoryReturner) Observe(open int) bool {
	moved := open != m.last
	m.last = open
	m.observe(open)
	return moved || m.Armed()
}

func (m *MemoryReturner) observe(open int) {
	if m.wait > 0 {
		m.waited++
		switch {
		case open > m.level:
			m.wait = 0 // traffic again: the runtime reuses what it holds
		case open < m.level && m.waited < maxSettleWait:
			m.level, m.wait = open, m.settle() // still closing: wait for the end
		default:
			if m.wait--; m.wait == 0 || m.waited >= maxSettleWait {
				m.wait = 0
				m.free()
			}
		}
	}
	if open > m.peak {
		m.peak = open
		return
	}
	if m.peak >= m.minPeak() && open <= m.peak/4 {
		m.free()
		m.peak, m.level = open, open
		m.wait, m.waited = m.settle(), 0
	}
}

// Armed tells whether a return may be due soon — a peak of MinPeak or more was seen
// and the count has not fallen from it yet, or a follow-up is pending — so the caller
// should keep observing about once a second (it may observe less often otherwise).
func (m *MemoryReturner) Armed() bool { return m.wait > 0 || m.peak >= m.minPeak() }

func (m *MemoryReturner) minPeak() int {
	if m.MinPeak > 0 {
		return m.MinPeak
	}
	return 1000
}

func (m *MemoryReturner) settle() int {
	if m.Settle > 0 {
		return m.Settle
	}
	return 3
}

func (m *MemoryReturner) free() {
	free := m.Free
	if free == nil {
		free = debug.FreeOSMemory
	}
	free()
}
