//go:build !linux

package main

import (
	"errors"
	"os"
)

// openTUN is Linux only: the relay runs in Linux network namespaces.
func openTUN(name string, mtu int) (*os.File, error) {
	return nil, errors.New("impair: TUN devices are supported on Linux only")
}
