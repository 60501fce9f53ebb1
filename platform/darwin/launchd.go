package darwin

// Install and Uninstall have no build constraint: they only write a file
// and run launchctl through a Runner, so that tests check them anywhere.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// InstallOptions say what Install and Uninstall write and remove.
type InstallOptions struct {
	UnitOptions
	// PlistPath is the job's file; default DefaultPlistPath.
	PlistPath string

	// Runner runs launchctl; nil means os/exec.
	Runner Runner

	// Tests replace this.
	euid func() int
}

// ErrNotInstalled is returned by Uninstall when there is no job file.
var ErrNotInstalled = errors.New("tetherd is not installed as a launchd daemon")

func (o *InstallOptions) defaults() {
	if o.PlistPath == "" {
		o.PlistPath = DefaultPlistPath
	}
	if o.Runner == nil {
		o.Runner = execRunner{timeout: time.Minute}
	}
	if o.euid == nil {
		o.euid = os.Geteuid
	}
}

// Install writes the job to PlistPath (root-owned, 0644, as launchd
// requires) and loads it: `launchctl bootstrap system PLIST`, which starts
// it (RunAtLoad). A job installed before is unloaded first (`launchctl
// bootout`), so that the new file takes effect. It needs root.
func Install(o InstallOptions) error {
	o.defaults()
	if o.euid() != 0 {
		return errors.New("installing the launchd daemon needs root: run it with sudo")
	}
	plist, err := LaunchdPlist(o.UnitOptions)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(o.PlistPath); err == nil {
		// Not loaded is fine: the file may be all that is left.
		_, _ = o.Runner.Run(context.Background(), "", launchctlCmd, "bootout", "system/"+Label)
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
	if _, err := o.Runner.Run(context.Background(), "", launchctlCmd, "bootstrap", "system", o.PlistPath); err != nil {
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
	if _, err := o.Runner.Run(context.Background(), "", launchctlCmd, "bootout", "system/"+Label); err != nil {
		return err
	}
	return os.Remove(o.PlistPath)
}
