package darwin

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Runner runs an external command: route, ifconfig, scutil, pfctl, launchctl. It
// is the package's only way to change the system, so that tests can record
// the exact commands (see testdata/*.golden).
type Runner interface {
	// Run runs name with args and stdin (nothing when empty) and returns
	// what it printed (standard output and standard error together). A
	// command that exits non-zero returns a *CommandError.
	Run(ctx context.Context, stdin string, name string, args ...string) ([]byte, error)
}

// Commands run by this package, with absolute paths: launchd starts jobs
// with a minimal PATH, and root should not look commands up in one.
const (
	routeCmd     = "/sbin/route"
	ifconfigCmd  = "/sbin/ifconfig"
	scutilCmd    = "/usr/sbin/scutil"
	pfctlCmd     = "/sbin/pfctl"
	launchctlCmd = "/bin/launchctl"
)

// commandTimeout bounds every command (scutil talks to configd, which can
// hang).
const commandTimeout = 10 * time.Second

// execRunner runs commands with os/exec, each bounded by timeout.
type execRunner struct{ timeout time.Duration }

func (r execRunner) Run(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, &CommandError{Command: commandLine(name, args), Err: err, Output: string(bytes.TrimSpace(out))}
	}
	return out, nil
}

// CommandError is a command that failed.
type CommandError struct {
	// Command is the command line.
	Command string
	// Err is why it failed, e.g. an *exec.ExitError.
	Err error
	// Output is what it printed.
	Output string
}

func (e *CommandError) Error() string {
	if e.Output == "" {
		return fmt.Sprintf("%s: %v", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, e.Output)
}

func (e *CommandError) Unwrap() error { return e.Err }

// commandLine formats a command for errors, logs and golden files.
func commandLine(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}
