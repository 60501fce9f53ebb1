// Package pump runs work on demand in short-lived goroutines, so that an idle
// connection costs no goroutine.
//
// A relay that copies one direction of a connection usually parks a goroutine in a
// blocking read for the connection's whole life: 4–8 KiB of stack per idle
// direction, which for thousands of idle flows is most of a tunnel's memory. When
// the source can say "readable" by callback instead (gVisor's waiter queue, a
// transport.Stream), a Pump runs the copy in a goroutine started when the callback
// fires, which ends as soon as nothing more is buffered.
package pump

import "sync"

// Pump runs a function each time it is kicked, in a goroutine of its own, never
// two at once, until the function reports it has finished for good. The zero value
// is not usable; use New.
type Pump struct {
	fn     func() (finished bool)
	onDone func()

	mu      sync.Mutex
	running bool // a goroutine is in run
	pending bool // kicked since fn last started
	done    bool // fn reported finished
}

// New returns a Pump for fn. fn moves whatever is ready without waiting for more
// and returns false when it has moved it all, or true when there will never be
// anything more to move (end of stream, an error): onDone (which may be nil) is then
// called once, from the goroutine that ran fn, and the Pump ignores later kicks.
// Nothing runs until the first Kick.
func New(fn func() (finished bool), onDone func()) *Pump {
	return &Pump{fn: fn, onDone: onDone}
}

// Kick asks for fn to run: now in a new goroutine when none is running, or once
// more after the running one returns. It never blocks, so it may be called from
// callbacks that hold locks of their own (a readiness notification).
func (p *Pump) Kick() {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	p.pending = true
	if p.running {
		p.mu.Unlock()
		return
	}
	p.running = true
	p.mu.Unlock()
	go p.run()
}

// run calls fn until a pass starts with no kick since the previous one began: a
// kick that arrives while fn runs is never lost, and a burst of kicks costs one
// extra pass, not one per kick.
func (p *Pump) run() {
	for {
		p.mu.Lock()
		if !p.pending {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.pending = false
		p.mu.Unlock()
		if p.fn() {
			p.mu.Lock()
			p.done, p.running = true, false
			p.mu.Unlock()
			if p.onDone != nil {
				p.onDone()
			}
			return
		}
	}
}

// Finished reports whether fn has reported it finished.
func (p *Pump) Finished() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}
