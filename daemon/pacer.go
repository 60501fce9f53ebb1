package daemon

import "time"

// Pacer paces a periodic task that has little to do while nothing changes — sampling
// rates, returning memory, governing threads: its interval is Min after a tick that
// saw a change and doubles with every quiet tick, up to Max. A tunnel that is up all
// day on a phone or a laptop then wakes the CPU for it about once every Max while
// idle, not every Min. The zero value ticks every second, stretching to 5 s.
type Pacer struct {
	// Min is the interval after a change. Default 1 s.
	Min time.Duration
	// Max is the longest interval. Default 5 s; never less than Min.
	Max time.Duration

	cur time.Duration
}

// Next returns how long to wait for the next tick, given whether the tick just done
// saw a change.
func (p *Pacer) Next(changed bool) time.Duration {
	lo, hi := p.Min, p.Max
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = 5 * time.Second
	}
	hi = max(hi, lo)
	if changed || p.cur < lo {
		p.cur = lo
	} else {
		p.cur = min(2*p.cur, hi)
	}
	return p.cur
}
