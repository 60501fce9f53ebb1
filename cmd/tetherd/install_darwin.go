//go:build darwin

package main

import (
	"errors"
	"fmt"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/platform/darwin"
)

func serviceSupported() error { return nil }

// installService installs the LaunchDaemon. It starts `tetherd up`, which first
// restores whatever a tetherd that did not stop cleanly left (from its journal), so
// the job needs no separate clean-up step.
func installService(c *cli, exe, cfgPath string, cfg *daemon.Config) error {
	if err := darwin.CheckSettings(cfg.DNS.Mode, cfg.Routes.LANBypass); err != nil {
		return fmt.Errorf("not installed: %w", err)
	}
	if err := darwin.CheckExecutable(exe); err != nil {
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
