//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/platform/linux"
)

func serviceSupported() error { return nil }

// hiddenDirs are invisible to the service (ProtectHome=yes, PrivateTmp=yes).
var hiddenDirs = []string{"/home", "/root", "/run/user", "/tmp", "/var/tmp"}

func installService(c *cli, exe, cfgPath string, cfg *daemon.Config) error {
	if err := checkUnitSandbox(exe, cfgPath, cfg); err != nil {
		return fmt.Errorf("not installed: %w", err)
	}
	o := linux.InstallOptions{UnitOptions: linux.UnitOptions{Exe: exe, Config: cfgPath}}
	if err := linux.Install(o); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "installed %s and started it: it runs %s up --config %s\nSee 'systemctl status tetherd' and 'journalctl -u tetherd'; remove it with 'sudo tetherd uninstall'.\n",
		filepath.Join(linux.DefaultUnitDir, linux.UnitName), exe, cfgPath)
	return nil
}

// checkUnitSandbox refuses what the unit's sandbox would make fail at start.
func checkUnitSandbox(exe, cfgPath string, cfg *daemon.Config) error {
	paths := []struct{ what, path string }{{"the tetherd binary", exe}, {"the configuration", cfgPath}}
	if cfg.TokenFile != "" {
		paths = append(paths, struct{ what, path string }{"token_file", cfg.TokenFile})
	}
	for _, p := range paths {
		for _, d := range hiddenDirs {
			if p.path == d || strings.HasPrefix(p.path, d+"/") {
				return fmt.Errorf("%s %s is under %s, which the service cannot see (ProtectHome, PrivateTmp): move it, e.g. to /usr/local/bin or /etc/tetherd", p.what, p.path, d)
			}
		}
		if p.what == "the tetherd binary" {
			continue
		}
		// The service keeps CAP_NET_ADMIN only: without CAP_DAC_OVERRIDE,
		// root reads a 0600 file only if it owns it.
		fi, err := os.Stat(p.path)
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			return fmt.Errorf("%s %s is owned by uid %d; the service reads it as root without CAP_DAC_OVERRIDE: chown root %s", p.what, p.path, st.Uid, p.path)
		}
	}
	if cfg.JournalDir != linux.DefaultJournalDir {
		return fmt.Errorf("journal_dir is %s, but the service may write only %s (its RuntimeDirectory): remove journal_dir from the configuration", cfg.JournalDir, linux.DefaultJournalDir)
	}
	return nil
}

func uninstallService(c *cli) error {
	err := linux.Uninstall(linux.InstallOptions{})
	if errors.Is(err, linux.ErrNotInstalled) {
		fmt.Fprintf(c.stdout, "nothing to do: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "stopped tetherd and removed %s\n", filepath.Join(linux.DefaultUnitDir, linux.UnitName))
	return nil
}
