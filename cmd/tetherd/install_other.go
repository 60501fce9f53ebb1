//go:build !linux && !darwin

package main

import (
	"errors"
	"runtime"

	"github.com/tetherd/tetherd/daemon"
)

// Services are installed on Linux (systemd) and macOS (launchd) only.
var errServiceUnsupported = errors.New("tetherd install is not supported on " + runtime.GOOS + ": tetherd up does not run here")

func serviceSupported() error { return errServiceUnsupported }

func installService(*cli, string, string, *daemon.Config) error { return errServiceUnsupported }

func uninstallService(*cli) error { return errServiceUnsupported }
