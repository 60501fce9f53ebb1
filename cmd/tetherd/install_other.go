//go:build !linux

package main

import (
	"errors"
	"runtime"

	"github.com/tetherd/tetherd/daemon"
)

// The launchd job (platform/darwin) is installed once tetherd up runs on macOS.
var errServiceUnsupported = errors.New("tetherd install is not supported on " + runtime.GOOS + " yet: tetherd up does not run here")

func serviceSupported() error { return errServiceUnsupported }

func installService(*cli, string, string, *daemon.Config) error { return errServiceUnsupported }

func uninstallService(*cli) error { return errServiceUnsupported }
