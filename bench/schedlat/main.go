// Command schedlat reads a Go execution trace and prints, for each kind of goroutine,
// how long its goroutines waited to run once they were runnable: the scheduling
// latency the Go runtime adds to every hand-off between goroutines. It groups by the
// function a goroutine started in (or, with -each, by goroutine).
//
//	curl -o /tmp/trace.out '127.0.0.1:9470/debug/pprof/trace?seconds=3'   # metrics.pprof on
//	go run ./bench/schedlat /tmp/trace.out
//
// Each line: waits, p50, p99, max, their sum, how many exceeded 1 ms, the function.
// `go tool trace -pprof=sched` gives the same waits summed by stack; this tool gives
// their distribution, which is what a latency tail is made of.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/exp/trace"
)

func main() {
	each := flag.Bool("each", false, "one line per goroutine instead of per start function")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: schedlat [-each] TRACE-FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedlat:", err)
		os.Exit(1)
	}
	defer f.Close()
	groups, err := analyze(f, *each)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedlat:", err)
		os.Exit(1)
	}
	print(os.Stdout, groups)
}

// group is the waits of the goroutines of one start function (or one goroutine).
type group struct {
	name  string
	waits []time.Duration // sorted
}

// analyze collects the runnable-to-running waits of every goroutine in the trace.
func analyze(r io.Reader, each bool) ([]group, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	runnable := map[trace.GoID]trace.Time{}
	start := map[trace.GoID]string{}
	waits := map[string][]time.Duration{}
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		if name, ok := start[id]; !ok || name == "?" {
			start[id] = startFunc(from, st.Stack)
		}
		switch {
		case to == trace.GoRunnable:
			runnable[id] = ev.Time()
		case from == trace.GoRunnable && to == trace.GoRunning:
			t0, ok := runnable[id]
			if !ok {
				break // runnable since before the trace began
			}
			delete(runnable, id)
			key := start[id]
			if each {
				key = fmt.Sprintf("%s (goroutine %d)", key, id)
			}
			waits[key] = append(waits[key], time.Duration(ev.Time()-t0))
		}
	}
	groups := make([]group, 0, len(waits))
	for name, w := range waits {
		slices.Sort(w)
		groups = append(groups, group{name, w})
	}
	slices.SortFunc(groups, func(a, b group) int {
		if c := len(b.waits) - len(a.waits); c != 0 {
			return c
		}
		return compareStrings(a.name, b.name)
	})
	return groups, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// startFunc names a goroutine by the first transition the trace shows of it with a
// stack: at its creation that is its start function; for one that existed before the
// trace, the outermost frame of where it stood. "?" until such a transition.
func startFunc(from trace.GoState, stk trace.Stack) string {
	var frames []string
	for f := range stk.Frames() {
		frames = append(frames, f.Func)
	}
	switch {
	case len(frames) == 0:
		return "?"
	case from == trace.GoNotExist:
		return frames[0]
	}
	return frames[len(frames)-1]
}

// percentile returns the p-th percentile (0 < p < 100) of sorted waits.
func percentile(w []time.Duration, p int) time.Duration {
	return w[min(len(w)-1, len(w)*p/100)]
}

func print(out io.Writer, groups []group) {
	fmt.Fprintf(out, "%8s %10s %10s %10s %10s %6s  %s\n", "waits", "p50", "p99", "max", "sum", ">1ms", "goroutines started in")
	for _, g := range groups {
		var sum time.Duration
		over := 0
		for _, w := range g.waits {
			sum += w
			if w > time.Millisecond {
				over++
			}
		}
		fmt.Fprintf(out, "%8d %10v %10v %10v %10v %6d  %s\n", len(g.waits),
			percentile(g.waits, 50).Round(time.Microsecond), percentile(g.waits, 99).Round(time.Microsecond),
			g.waits[len(g.waits)-1].Round(time.Microsecond), sum.Round(time.Microsecond), over, g.name)
	}
}
