// Package flowtab is the table of open flows that `tetherd flows` lists: the netstack
// (tetherd up) and the proxy (tetherd proxy) each keep one. A flow gets an id when it
// is first seen — before its dial, so that every log line about it, even a failed
// dial, carries the same id — and enters the table once it is open.
//
// Counting is two atomic adds per read or write; listing copies the table under its
// lock.
package flowtab

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherd/tetherd/internal/shrink"
)

// Info describes one open flow.
type Info struct {
	// ID is unique within the process's table; log lines about the flow carry it as
	// "flow".
	ID uint64 `json:"id"`
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
	// Src is the application's endpoint; Dst the destination (for UDP, the first
	// one: an association may send to several).
	Src string `json:"src"`
	Dst string `json:"dst"`
	// Started is when the flow opened.
	Started time.Time `json:"started"`
	// BytesOut counts application → destination payload bytes, BytesIn the other
	// way.
	BytesOut uint64 `json:"bytes_out"`
	BytesIn  uint64 `json:"bytes_in"`
}

// Flow is one flow of a Table. Its counters may be updated from any goroutine.
type Flow struct {
	id       uint64
	proto    string
	src, dst string
	started  time.Time
	out, in  atomic.Uint64
	table    *Table
}

// ID returns the flow's id.
func (f *Flow) ID() uint64 { return f.id }

// AddOut counts n bytes sent by the application.
func (f *Flow) AddOut(n int) {
	if n > 0 {
		f.out.Add(uint64(n))
	}
}

// AddIn counts n bytes delivered to the application.
func (f *Flow) AddIn(n int) {
	if n > 0 {
		f.in.Add(uint64(n))
	}
}

// Bytes returns the flow's counters: out (from the application) and in (to it).
func (f *Flow) Bytes() (out, in uint64) { return f.out.Load(), f.in.Load() }

// Age returns how long the flow has existed.
func (f *Flow) Age() time.Duration { return time.Since(f.started) }

// Open enters the flow into its table (once its dial succeeded); Close removes it.
func (f *Flow) Open() {
	t := f.table
	t.mu.Lock()
	t.m[f.id] = f
	t.peak.Grew(len(t.m))
	t.mu.Unlock()
}

// Close removes the flow from its table. It may be called more than once, and for a
// flow that was never opened.
func (f *Flow) Close() {
	t := f.table
	t.mu.Lock()
	if t.m[f.id] == f {
		delete(t.m, f.id)
		t.m = shrink.Map(&t.peak, t.m)
	}
	t.mu.Unlock()
}

func (f *Flow) info() Info {
	return Info{
		ID: f.id, Proto: f.proto, Src: f.src, Dst: f.dst, Started: f.started,
		BytesOut: f.out.Load(), BytesIn: f.in.Load(),
	}
}

// Table holds the open flows. The zero value is not usable: use New.
type Table struct {
	next atomic.Uint64
	mu   sync.Mutex
	m    map[uint64]*Flow
	peak shrink.Peak // of m
}

// New returns an empty table.
func New() *Table { return &Table{m: make(map[uint64]*Flow)} }

// Start returns a new flow with the next id; it is listed once Open is called.
func (t *Table) Start(proto string, src, dst netip.AddrPort) *Flow {
	return t.StartNamed(proto, src.String(), dst.String())
}

// StartNamed is Start for endpoints that are not IP addresses (a proxy's host name
// destination).
func (t *Table) StartNamed(proto, src, dst string) *Flow {
	return &Flow{id: t.next.Add(1), proto: proto, src: src, dst: dst, started: time.Now(), table: t}
}

// Len returns how many flows are open.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// Count returns how many open flows have the protocol proto.
func (t *Table) Count(proto string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, f := range t.m {
		if f.proto == proto {
			n++
		}
	}
	return n
}

// List returns the open flows ordered by id (oldest first).
func (t *Table) List() []Info {
	t.mu.Lock()
	out := make([]Info, 0, len(t.m))
	for _, f := range t.m {
		out = append(out, f.info())
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Writer counts what passes through it into a counter: use it as the destination of
// a copy so that the source's WriteTo, if any, is still used.
type Writer struct {
	W   io.Writer
	Add func(int)
}

// Write writes p to W and counts what was written.
func (w Writer) Write(p []byte) (int, error) {
	n, err := w.W.Write(p)
	w.Add(n)
	return n, err
}

// Reader counts what is read through it into a counter.
type Reader struct {
	R   io.Reader
	Add func(int)
}

// Read reads from R and counts what was read.
func (r Reader) Read(p []byte) (int, error) {
	n, err := r.R.Read(p)
	r.Add(n)
	return n, err
}

type ctxKey struct{}

// WithID returns ctx carrying a flow id, so that a dialer called with it can put the
// id on its own log lines.
func WithID(ctx context.Context, id uint64) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// IDFrom returns the flow id WithID put into ctx.
func IDFrom(ctx context.Context) (uint64, bool) {
	id, ok := ctx.Value(ctxKey{}).(uint64)
	return id, ok
}
