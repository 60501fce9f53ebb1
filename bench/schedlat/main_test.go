package main

import (
	"bytes"
	"runtime"
	"runtime/trace"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sleeper is the start function the test looks for: it waits on wake n times.
func sleeper(wake <-chan struct{}, n int, done chan<- struct{}) {
	for range n {
		<-wake
	}
	close(done)
}

// spin keeps the one P busy for d without blocking.
func spin(d time.Duration) {
	for t0 := time.Now(); time.Since(t0) < d; {
	}
}

// TestAnalyzeMeasuresWaits traces a goroutine that is made runnable while the only P
// stays busy for 2 ms: each of its waits must come out at 2 ms or more, under its
// start function's name.
func TestAnalyzeMeasuresWaits(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 5
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	wake, done := make(chan struct{}), make(chan struct{})
	go sleeper(wake, n, done)
	for range n {
		wake <- struct{}{} // sleeper runnable, but this goroutine keeps the P
		spin(2 * time.Millisecond)
		runtime.Gosched()
	}
	<-done
	trace.Stop()

	groups, err := analyze(&buf, false)
	if err != nil {
		t.Fatal(err)
	}
	var g *group
	for i := range groups {
		if strings.HasSuffix(groups[i].name, ".sleeper") {
			g = &groups[i]
		}
	}
	if g == nil {
		t.Fatalf("no group for sleeper in %v", names(groups))
	}
	// The first wait is its start (runnable from the go statement); then up to n
	// wake-ups, each behind 2 ms of spinning (a send to a waiting receiver may also
	// hand over directly, without a wait the trace records).
	if len(g.waits) < 2 {
		t.Fatalf("sleeper: %d waits, want at least 2", len(g.waits))
	}
	if max := g.waits[len(g.waits)-1]; max < 2*time.Millisecond {
		t.Fatalf("sleeper's longest wait %v, want ≥ 2ms (the spin)", max)
	}
	var out bytes.Buffer
	print(&out, groups)
	if !strings.Contains(out.String(), "sleeper") || !strings.Contains(out.String(), "p99") {
		t.Fatalf("output lacks the sleeper's line or the header:\n%s", out.String())
	}
}

func TestAnalyzeRejectsGarbage(t *testing.T) {
	if _, err := analyze(strings.NewReader("not a trace"), false); err == nil {
		t.Fatal("no error for a file that is not a trace")
	}
}

func names(gs []group) []string {
	var s []string
	for _, g := range gs {
		s = append(s, g.name)
	}
	return s
}
