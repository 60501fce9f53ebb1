//go:build !darwin

package darwin

import (
	"errors"
	"runtime"
)

// bindToInterface is macOS's only; tests use a fake.
func bindToInterface(uintptr, bool, int) error {
	return errors.New("IP_BOUND_IF does not exist on " + runtime.GOOS)
}
