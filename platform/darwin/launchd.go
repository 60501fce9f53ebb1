//go:build darwin

package darwin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// runner runs an external command; tests substitute a fake.
type runner interface {
	run(name string, args ...string) error
}

type execRunner struct{ timeout time.Duration }

func (r execRunner) run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// InstallOptions say what Install and Uninstall write and remove.
type InstallOptions struct {
	UnitOptions
	// PlistPath is the job's file; default DefaultPlistPath.
	PlistPath string

	// Tests replace these.
	run  runner
	euid func() int
}

// ErrNotInstalled is returned by Uninstall when there is no job file.
var ErrNotInstalled = errors.New("tetherd is not installed as a launchd daemon")

func (o *InstallOptions) defaults() {
	if o.PlistPath == "" {
		o.PlistPath = DefaultPlistPath
	}
	if o.run == nil {
		o.run = execRunner{timeout: time.Minute}
	}
	if o.euid == nil {
		o.euid = os.Geteuid
	}
}

// Install writes the job to PlistPath (root-owned, 0644, as launchd
// requires) and loads it: `launchctl bootstrap system PLIST`. It needs root.
func Install(o InstallOptions) error {
	o.defaults()
	if o.euid() != 0 {
		return errors.New("installing the launchd daemon needs root: run it with sudo")
	}
	plist, err := LaunchdPlist(o.UnitOptions)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(o.PlistPath), "."+filepath.Base(o.PlistPath)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.WriteString(plist)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, o.PlistPath)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.PlistPath, err)
	}
	if err := o.run.run("launchctl", "bootstrap", "system", o.PlistPath); err != nil {
		return fmt.Errorf("%w (see %s)", err, LogPath)
	}
	return nil
}

// Uninstall unloads the job (`launchctl bootout system/dev.tetherd`, which
// stops tetherd) and removes its file. It returns ErrNotInstalled when there
// is no job file. It needs root.
func Uninstall(o InstallOptions) error {
	o.defaults()
	if o.euid() != 0 {
		return errors.New("removing the launchd daemon needs root: run it with sudo")
	}
	if _, err := os.Lstat(o.PlistPath); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: no %s", ErrNotInstalled, o.PlistPath)
	}
	if err := o.run.run("launchctl", "bootout", "system/"+Label); err != nil {
		return err
	}
	return os.Remove(o.PlistPath)
}
