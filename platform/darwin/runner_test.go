package darwin

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestExecRunner(t *testing.T) {
	r := execRunner{timeout: 10 * time.Second}
	out, err := r.Run(context.Background(), "d.init\nquit\n", "cat")
	if err != nil || string(out) != "d.init\nquit\n" {
		t.Errorf("cat: %q, %v", out, err)
	}
	_, err = r.Run(context.Background(), "", "sh", "-c", "echo route: writing to routing socket: File exists >&2; exit 1")
	var ce *CommandError
	var ee *exec.ExitError
	if !errors.As(err, &ce) || !errors.As(err, &ee) || !routeExists(err) || !strings.Contains(err.Error(), "sh -c") {
		t.Errorf("failing command: %v", err)
	}
	// route(8) may report a failure and exit 0: runRoute still sees it.
	_, err = runRoute(context.Background(), scriptRunner{"echo route: writing to routing socket: not in table"}, "-n", "delete", "-inet", "0.0.0.0/1")
	if !notInTable(err) {
		t.Errorf("runRoute: %v", err)
	}
	_, err = execRunner{timeout: 50 * time.Millisecond}.Run(context.Background(), "", "sleep", "5")
	if err == nil {
		t.Error("the timeout did not stop sleep")
	}
}

// scriptRunner runs its shell script whatever command it is given.
type scriptRunner struct{ script string }

func (s scriptRunner) Run(ctx context.Context, stdin, _ string, _ ...string) ([]byte, error) {
	return execRunner{timeout: 10 * time.Second}.Run(ctx, stdin, "sh", "-c", s.script)
}
