//go:build !darwin && !linux

package darwin

import (
	"errors"
	"os"
	"runtime"
)

// lockDir is macOS's (and, for the tests, Linux's) only.
func lockDir(string) (*os.File, error) {
	return nil, errors.New("the macOS router does not run on " + runtime.GOOS)
}
