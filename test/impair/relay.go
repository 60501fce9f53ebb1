package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// device is a packet device: one whole packet per Read and per Write, as a TUN
// without packet information. Close makes a blocked Read return os.ErrClosed.
type device interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
}

// direction is one way through the relay: packets read from dev go through pipe
// and are written back into dev when due.
type direction struct {
	name string
	dev  device
	kick chan struct{} // a packet was queued: the writer may have to wake earlier

	mu        sync.Mutex
	pipe      *Pipe
	writeErrs uint64
	lastErr   error
}

// relay runs the directions until its context ends.
type relay struct {
	dirs []*direction
}

// newRelay makes a relay over the named devices; each gets its own seed derived
// from seed, so that the directions draw independent random choices.
func newRelay(devs map[string]device, p map[string]Params, seed uint64) *relay {
	r := &relay{}
	i := uint64(0)
	for _, name := range []string{"a", "b"} {
		dev, ok := devs[name]
		if !ok {
			continue
		}
		i++
		r.dirs = append(r.dirs, &direction{
			name: name,
			dev:  dev,
			kick: make(chan struct{}, 1),
			pipe: NewPipe(p[name], seed+i*0x1000193),
		})
	}
	return r
}

// run moves packets until ctx ends or a device fails; it closes the devices and
// returns when every goroutine it started has ended. The error is nil after ctx
// ended.
func (r *relay) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(r.dirs))
	var wg sync.WaitGroup
	for _, d := range r.dirs {
		wg.Go(func() {
			errc <- fmt.Errorf("direction %s: %w", d.name, d.readLoop())
			cancel()
		})
		wg.Go(func() { d.writeLoop(ctx) })
	}
	<-ctx.Done()
	for _, d := range r.dirs {
		d.dev.Close()
	}
	wg.Wait()
	close(errc)
	var err error
	for e := range errc {
		if !errors.Is(e, os.ErrClosed) {
			err = errors.Join(err, e)
		}
	}
	return err
}

// readLoop queues every packet read until the device fails or is closed, and
// returns the error that ended it.
func (d *direction) readLoop() error {
	buf := make([]byte, 65536)
	for {
		n, err := d.dev.Read(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		d.mu.Lock()
		d.pipe.Push(pkt, time.Now())
		d.mu.Unlock()
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// writeLoop writes every packet when it is due, until ctx ends.
func (d *direction) writeLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due [][]byte
	for {
		d.mu.Lock()
		now := time.Now()
		for {
			pkt, ok := d.pipe.Pop(now)
			if !ok {
				break
			}
			due = append(due, pkt)
		}
		next, pending := d.pipe.Next()
		d.mu.Unlock()
		for i, pkt := range due {
			if _, err := d.dev.Write(pkt); err != nil {
				d.mu.Lock()
				d.writeErrs++
				d.lastErr = err
				d.mu.Unlock()
			}
			due[i] = nil
		}
		due = due[:0]
		if pending {
			timer.Reset(time.Until(next))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-timer.C:
		}
	}
}

// set changes the impairments of the directions named in p.
func (r *relay) set(p map[string]Params) {
	for _, d := range r.dirs {
		if np, ok := p[d.name]; ok {
			d.mu.Lock()
			d.pipe.SetParams(np)
			d.mu.Unlock()
			select {
			case d.kick <- struct{}{}:
			default:
			}
		}
	}
}

// params returns the current impairments of every direction.
func (r *relay) params() map[string]Params {
	m := map[string]Params{}
	for _, d := range r.dirs {
		d.mu.Lock()
		m[d.name] = d.pipe.Params()
		d.mu.Unlock()
	}
	return m
}

// toggleBlackhole turns the blackhole of every direction on when any is off, else
// off; it returns the new state.
func (r *relay) toggleBlackhole() bool {
	p := r.params()
	on := false
	for _, v := range p {
		if !v.Blackhole {
			on = true
		}
	}
	for k, v := range p {
		v.Blackhole = on
		p[k] = v
	}
	r.set(p)
	return on
}

// report is one line per direction: parameters, then counters.
func (r *relay) report() string {
	var b strings.Builder
	for _, d := range r.dirs {
		d.mu.Lock()
		fmt.Fprintf(&b, "direction %s: %v; queued %d; write errors %d", d.name, d.pipe.Stats(), d.pipe.Len(), d.writeErrs)
		if d.lastErr != nil {
			fmt.Fprintf(&b, " (last: %v)", d.lastErr)
		}
		fmt.Fprintf(&b, "; params %v\n", d.pipe.Params())
		d.mu.Unlock()
	}
	return b.String()
}
