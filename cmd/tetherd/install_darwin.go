//go:build darwin

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/platform/darwin"
)

func serviceSupported() error { return nil }

// installService installs the LaunchDaemon. It starts `tetherd up`, which first
// restores whatever a tetherd that did not stop cleanly left (from its journal), so
// the job needs no separate clean-up step.
func installService(c *cli, exe, cfgPath string, cfg *daemon.Config) error {
	if err := checkDarwinConfig(cfg); err != nil {
		return fmt.Errorf("not installed: %w", err)
	}
	if err := checkRootOwned(exe); err != nil {
		return fmt.Errorf("not installed: %w", err)
	}
	o := darwin.InstallOptions{UnitOptions: darwin.UnitOptions{Exe: exe, Config: cfgPath}}
	if err := darwin.Install(o); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "installed %s and started it: it runs %s up --config %s\nIts log is %s; see 'sudo launchctl print system/%s'; remove it with 'sudo tetherd uninstall'.\n",
		darwin.DefaultPlistPath, exe, cfgPath, darwin.LogPath, darwin.Label)
	return nil
}

// checkRootOwned refuses a binary that someone other than root could replace (it,
// or its directory, owned by a user or writable by group or others): launchd would
// run the replacement as root.
func checkRootOwned(exe string) error {
	for _, p := range []string{exe, filepath.Dir(exe)} {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%s can be changed by someone other than root, and the daemon would run it as root: install the binary first, e.g. 'sudo install -m 755 %s /usr/local/bin/tetherd', and run 'sudo /usr/local/bin/tetherd install'", p, exe)
		}
	}
	return nil
}

func uninstallService(c *cli) error {
	err := darwin.Uninstall(darwin.InstallOptions{})
	if errors.Is(err, darwin.ErrNotInstalled) {
		fmt.Fprintf(c.stdout, "nothing to do: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "stopped tetherd and removed %s\n", darwin.DefaultPlistPath)
	return nil
}
