package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/transport"
)

const installDescription = `Install tetherd as a system service that runs 'tetherd up --config FILE' at boot
and restarts it after a failure: a systemd unit on Linux (Type=notify, sandboxed,
'tetherd down' after it stops), a LaunchDaemon on macOS
(/Library/LaunchDaemons/dev.tetherd.plist, log in /var/log/tetherd.log). The
service runs this tetherd binary where it is now, so put it in its final place
(e.g. /usr/local/bin) first. Needs root.

The configuration is checked first: it must name the peer, since the service has
no PEER-URI argument.`

func runInstall(_ context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "install", "[flags]", installDescription)
	configPath := fs.String("config", systemConfig, "the service reads the YAML configuration `FILE` (default "+systemConfig+")")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := serviceSupported(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("tetherd install needs root: run it with sudo")
	}
	cfgPath, err := filepath.Abs(*configPath)
	if err != nil {
		return err
	}
	cfg, err := checkServiceConfig(cfgPath)
	if err != nil {
		return fmt.Errorf("not installed: %w", err)
	}
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return fmt.Errorf("find the tetherd binary: %w", err)
	}
	return installService(c, exe, cfgPath, cfg)
}

// checkServiceConfig loads path as `tetherd up --config path` will, without a
// PEER-URI, and returns the first problem the service would fail on.
func checkServiceConfig(path string) (*daemon.Config, error) {
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if cfg.Peer == "" {
		return nil, fmt.Errorf("%s: no peer: set peer to the tether:// line 'tetherd serve' printed (the service takes no PEER-URI)", path)
	}
	if _, err := transport.ParsePeerURI(cfg.Peer); err != nil {
		return nil, fmt.Errorf("%s: peer: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := cfg.Client(); err != nil {
		return nil, err
	}
	if _, err := cfg.Limits.Transport(); err != nil {
		return nil, err
	}
	if cfg.TokenFile != "" {
		if _, err := daemon.ReadTokenFile(cfg.TokenFile); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

func runUninstall(_ context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "uninstall", "", `Stop and remove the system service that 'tetherd install' set up (stopping it
restores routes and DNS). The configuration is left alone. Needs root.`)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := serviceSupported(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("tetherd uninstall needs root: run it with sudo")
	}
	return uninstallService(c)
}
