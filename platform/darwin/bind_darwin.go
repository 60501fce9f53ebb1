package darwin

import "golang.org/x/sys/unix"

// bindToInterface sets IP_BOUND_IF (IPV6_BOUND_IF for IPv6) on fd: the
// socket then only uses the interface ifindex.
func bindToInterface(fd uintptr, v6 bool, ifindex int) error {
	if v6 {
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_BOUND_IF, ifindex)
	}
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BOUND_IF, ifindex)
}
