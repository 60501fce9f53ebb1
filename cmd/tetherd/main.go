// Command tetherd shares a phone's network with a laptop over one WebSocket: `tetherd
// serve` runs on the phone, the other commands on the laptop. Run `tetherd help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/daemon"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. Adding a subcommand is one entry in commands and one
// run function.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
}

// commands returns the subcommands in the order usage lists them.
func commands() []command {
	return []command{
		{"up", "bring the tunnel up: route all traffic through the peer (root)", runUp},
		{"down", "restore routes and DNS after a 'tetherd up' that crashed", runDown},
		{"status", "show what the running 'tetherd up' or 'tetherd proxy' is doing", runStatus},
		{"flows", "list the flows the running 'tetherd up' or 'tetherd proxy' carries", runFlows},
		{"proxy", "run a SOCKS5 and HTTP proxy through the peer (no root)", runProxy},
		{"serve", "run the peer: share this machine's network with tetherd clients", runServe},
		{"install", "run 'tetherd up' as a system service at boot (root)", runInstall},
		{"uninstall", "stop and remove the system service (root)", runUninstall},
		{"check", "check a configuration file without changing anything", runCheck},
		{"version", "print the version", runVersion},
	}
}

// cli is what a subcommand may use of its process; tests replace all of it.
type cli struct {
	stdout, stderr io.Writer
	// newLogger builds the logger a command logs to.
	newLogger func(daemon.LogConfig) (*zap.Logger, error)
	// governProcs runs a daemon.ProcsGovernor during the long-running commands
	// (main sets it; GOMAXPROCS is the process's, not a test's, to change).
	governProcs bool
}

// governed tells the commands that run until stopped and carry traffic.
func governed(name string) bool {
	switch name {
	case "up", "serve", "proxy":
		return true
	}
	return false
}

// usageError is an error in the command line; it exits with status 2. The message
// has already been printed when err is nil.
type usageError struct{ err error }

func (e *usageError) Error() string {
	if e.err == nil {
		return "usage error"
	}
	return e.err.Error()
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		cancel(fmt.Errorf("received %v", sig))
		sig = <-sigs
		fmt.Fprintf(os.Stderr, "tetherd: received %v again: exiting at once\n", sig)
		code := 1
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s)
		}
		os.Exit(code)
	}()
	isTerminal := false
	if fi, err := os.Stderr.Stat(); err == nil {
		isTerminal = fi.Mode()&os.ModeCharDevice != 0
	}
	c := &cli{
		stdout: os.Stdout,
		stderr: os.Stderr,
		newLogger: func(cfg daemon.LogConfig) (*zap.Logger, error) {
			return daemon.NewLogger(cfg, isTerminal)
		},
		// One thread while idle, all under load, unless the user chose (GOMAXPROCS).
		governProcs: os.Getenv("GOMAXPROCS") == "",
	}
	os.Exit(c.run(ctx, os.Args[1:]))
}

// run runs the command line args (without the program name) and returns the exit
// status: 0, 1 for a failure, 2 for a usage error.
func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.usage(c.stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return c.help(rest)
	}
	for _, cmd := range commands() {
		if cmd.name != name {
			continue
		}
		if c.governProcs && governed(name) {
			gctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); (&daemon.ProcsGovernor{}).Run(gctx) }()
			defer func() { stop(); <-done }()
		}
		err := cmd.run(ctx, c, rest)
		var ue *usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			if ue.err != nil {
				fmt.Fprintf(c.stderr, "tetherd %s: %s\n", name, printableLines(ue.err.Error()))
			}
			fmt.Fprintf(c.stderr, "Run 'tetherd help %s' for usage.\n", name)
			return 2
		}
		// An error may quote the peer (a refusal's reason, an HTTP answer).
		fmt.Fprintf(c.stderr, "tetherd: %s\n", printableLines(err.Error()))
		return 1
	}
	fmt.Fprintf(c.stderr, "tetherd: unknown command %q\n\n", name)
	c.usage(c.stderr)
	return 2
}

// help prints the usage of tetherd, or of the command named in args, to stdout.
func (c *cli) help(args []string) int {
	if len(args) == 0 {
		c.usage(c.stdout)
		return 0
	}
	for _, cmd := range commands() {
		if cmd.name == args[0] {
			// Every command prints its usage for -h and returns flag.ErrHelp.
			err := cmd.run(context.Background(), c, []string{"-h"})
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(c.stderr, "tetherd: unknown command %q\n\n", args[0])
	c.usage(c.stderr)
	return 2
}

func (c *cli) usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Usage: tetherd <command> [flags]\n\nCommands:\n")
	for _, cmd := range commands() {
		fmt.Fprintf(&b, "  %-9s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(&b, "  %-9s %s\n", "help", "print this help, or a command's: tetherd help serve")
	b.WriteString("\nRun 'tetherd help <command>' for the flags of a command.\n")
	io.WriteString(w, b.String())
}

func runVersion(_ context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "version", "", "Print the version of tetherd and of the Go toolchain it was built with.")
	if err := fs.parse(args); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "tetherd %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// flagSet is the flag set of a command, with its usage text.
type flagSet struct {
	*flag.FlagSet
	c                 *cli
	args, description string
}

// newFlagSet returns the flag set of the command name, whose synopsis is "tetherd
// NAME ARGS" followed by description.
func newFlagSet(c *cli, name, args, description string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), c: c, args: args, description: description}
	fs.SetOutput(c.stderr)
	// The flag package prints a bad flag itself; parse adds a hint, and -h prints
	// the full usage.
	fs.Usage = func() {}
	return fs
}

// printUsage prints the synopsis, the description and the flags, with two dashes.
func (fs *flagSet) printUsage(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: tetherd %s", fs.Name())
	if fs.args != "" {
		b.WriteString(" " + fs.args)
	}
	b.WriteString("\n\n" + fs.description + "\n")
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nFlags:\n")
			first = false
		}
		arg, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if arg != "" {
			b.WriteString(" " + arg)
		}
		b.WriteString("\n      " + strings.ReplaceAll(usage, "\n", "\n      ") + "\n")
	})
	io.WriteString(w, b.String())
}

// parse parses args and refuses positional arguments. -h prints the usage to stdout
// and returns flag.ErrHelp; a bad flag is a *usageError.
func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage(fs.c.stdout)
			return err
		}
		return &usageError{}
	}
	if fs.NArg() > 0 {
		return &usageError{err: fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// parseOptionalArg parses args that may hold one positional argument (PEER-URI)
// before, between or after the flags, and returns it (or nothing). -h prints the
// usage and returns flag.ErrHelp; a bad flag or a second argument is a *usageError.
func (fs *flagSet) parseOptionalArg(args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printUsage(fs.c.stdout)
				return nil, err
			}
			return nil, &usageError{}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) > 1 {
		return nil, &usageError{err: fmt.Errorf("unexpected argument %q", positional[1])}
	}
	return positional, nil
}
