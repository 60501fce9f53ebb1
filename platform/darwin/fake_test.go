package darwin

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeRunner records the commands it is given as a transcript ("$ " and
// the command line, "| " and each line of its standard input) and
// answers them with respond (nil: empty output, no error).
type fakeRunner struct {
	mu      sync.Mutex
	lines   []string
	respond func(line, stdin string) ([]byte, error)
}

func (f *fakeRunner) Run(_ context.Context, stdin, name string, args ...string) ([]byte, error) {
	line := commandLine(name, args)
	f.mu.Lock()
	f.lines = append(f.lines, "$ "+line)
	for l := range strings.Lines(stdin) {
		f.lines = append(f.lines, "| "+strings.TrimSuffix(l, "\n"))
	}
	respond := f.respond
	f.mu.Unlock()
	if respond == nil {
		return nil, nil
	}
	return respond(line, stdin)
}

// note adds a line of commentary to the transcript.
func (f *fakeRunner) note(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, "# "+fmt.Sprintf(format, args...))
}

func (f *fakeRunner) transcript() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.lines, "\n") + "\n"
}

// routeError is what route(8) answers when the kernel refuses a change.
func routeError(line, msg string) error {
	return &CommandError{Command: line, Err: errRouteFailed, Output: "route: writing to routing socket: " + msg}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}
