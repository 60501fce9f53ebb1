//go:build !darwin

package darwin

import (
	"errors"
	"io"
	"runtime"
)

// errOverflow is never returned off macOS.
var errOverflow = errors.New("routing socket overflow")

// openRouteSocket is macOS's only; tests use a fake source.
func openRouteSocket() (io.ReadCloser, error) {
	return nil, errors.New("the routing socket watcher does not run on " + runtime.GOOS)
}
