//go:build !linux && !darwin

package main

import (
	"context"
	"errors"
	"runtime"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/daemon"
)

var errUnsupported = errors.New("tetherd up is not supported on " + runtime.GOOS + " (only Linux and macOS); tetherd serve works")

func up(context.Context, *cli, *daemon.Config, *daemon.ClientSettings, *zap.Logger) error {
	return errUnsupported
}

func down(string) ([]string, error) { return nil, errUnsupported }

// platformJournalDir is journal_dir as configured.
func platformJournalDir(dir string) string { return dir }
