//go:build linux

package linux

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// OpenTUN creates (or attaches to) the TUN interface name in the calling thread's
// network namespace and returns its file descriptor, with the virtio-net header on
// (IFF_VNET_HDR: the kernel's TSO super-packets come in whole, and GSO ones go out
// whole) and no packet-information prefix. The descriptor is close-on-exec and
// non-blocking, ready for Go's poller: golang.zx2c4.com/wireguard/tun's
// CreateUnmonitoredTUNFromFD takes it from there.
//
// This is what wireguard-go's CreateTUN does, minus the two watchers it starts for
// its up/down events, which tetherd does not use: one of them writes to the device
// once a second, for the daemon's life, and so wakes an idle laptop's CPU every
// second. The MTU, addresses and up state are Up's to set.
func OpenTUN(name string) (int, error) {
	fd, err := unix.Open(DefaultTUNDevice, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("%s is missing: modprobe tun", DefaultTUNDevice)
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return -1, fmt.Errorf("open %s: %w: run tetherd up with sudo", DefaultTUNDevice, err)
	case err != nil:
		return -1, fmt.Errorf("open %s: %w", DefaultTUNDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return -1, fmt.Errorf("create TUN %s: %w (another program holds it: is tetherd up running already?)", name, err)
		case errors.Is(err, unix.EPERM):
			return -1, fmt.Errorf("create TUN %s: %w: tetherd up needs CAP_NET_ADMIN: run it with sudo", name, err)
		case errors.Is(err, unix.EINVAL):
			return -1, fmt.Errorf("create TUN %s: %w (an interface of another kind has that name?)", name, err)
		}
		return -1, fmt.Errorf("create TUN %s: %w", name, err)
	}
	return fd, nil
}
