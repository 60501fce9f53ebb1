//go:build linux

package linux

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultTUNDevice is the clone device that TUN interfaces are created
// through.
const DefaultTUNDevice = "/dev/net/tun"

// CheckPrivileges returns a clear, actionable error when `tetherd up`
// cannot work: "tetherd up needs CAP_NET_ADMIN: run it with sudo" when
// the process lacks CAP_NET_ADMIN in its effective set (root without it,
// e.g. in a restricted container, counts as lacking it), and
// "/dev/net/tun is missing: modprobe tun" when tunDevice
// (DefaultTUNDevice if empty) does not exist.
func CheckPrivileges(tunDevice string) error {
	return checkPrivileges(tunDevice, effectiveCaps)
}

func checkPrivileges(tunDevice string, caps func() (uint64, error)) error {
	if tunDevice == "" {
		tunDevice = DefaultTUNDevice
	}
	c, err := caps()
	if err != nil {
		return fmt.Errorf("read process capabilities: %w", err)
	}
	if c&(1<<unix.CAP_NET_ADMIN) == 0 {
		return errors.New("tetherd up needs CAP_NET_ADMIN: run it with sudo")
	}
	fi, err := os.Stat(tunDevice)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s is missing: modprobe tun", tunDevice)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tunDevice, err)
	}
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return fmt.Errorf("%s is not a character device (mknod %s c 10 200)", tunDevice, tunDevice)
	}
	return nil
}

// effectiveCaps returns the effective capability set of this thread (the
// same for all threads of a Go program that does not change them).
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}
