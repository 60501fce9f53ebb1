//go:build !linux

package transport

import (
	"errors"
	"syscall"
)

// idleWaiter is a stub outside Linux: every watch fails, and idle relays wait in
// their goroutines.
type idleWaiter struct{}

func (w *idleWaiter) init() {}

func (w *idleWaiter) watch(syscall.RawConn, func()) (int32, error) {
	return 0, errors.ErrUnsupported
}

func (w *idleWaiter) cancel(int32) {}
