//go:build linux

package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// From linux/if_tun.h and linux/sockios.h.
const (
	iffTUN    = 0x0001
	iffNoPI   = 0x1000
	tunSetIFF = 0x400454ca
)

// ifreq is struct ifreq: the name, then a union of which we use the flags and the
// MTU (both at the start of the union).
type ifreq struct {
	name [syscall.IFNAMSIZ]byte
	data [24]byte
}

func ioctl(fd int, req uintptr, ifr *ifreq) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(ifr))); e != 0 {
		return e
	}
	return nil
}

// openTUN opens (creating it unless it exists as a persistent device) the TUN
// device name, without packet information, sets its MTU when mtu > 0 and brings it
// up. The file is non-blocking, so that Close makes a blocked Read return.
func openTUN(name string, mtu int) (*os.File, error) {
	if len(name) >= syscall.IFNAMSIZ {
		return nil, fmt.Errorf("TUN name %q is too long", name)
	}
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr ifreq
	copy(ifr.name[:], name)
	*(*uint16)(unsafe.Pointer(&ifr.data[0])) = iffTUN | iffNoPI
	if err := ioctl(fd, tunSetIFF, &ifr); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := linkUp(name, mtu); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// linkUp sets the MTU of the interface (when mtu > 0) and its IFF_UP flag.
func linkUp(name string, mtu int) error {
	s, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(s)
	var ifr ifreq
	copy(ifr.name[:], name)
	if mtu > 0 {
		*(*int32)(unsafe.Pointer(&ifr.data[0])) = int32(mtu)
		if err := ioctl(s, syscall.SIOCSIFMTU, &ifr); err != nil {
			return fmt.Errorf("SIOCSIFMTU %s %d: %w", name, mtu, err)
		}
	}
	ifr.data = [24]byte{}
	if err := ioctl(s, syscall.SIOCGIFFLAGS, &ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	*(*uint16)(unsafe.Pointer(&ifr.data[0])) |= syscall.IFF_UP
	if err := ioctl(s, syscall.SIOCSIFFLAGS, &ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s: %w", name, err)
	}
	return nil
}
