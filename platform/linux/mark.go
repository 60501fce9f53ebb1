//go:build linux

package linux

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Control returns a net.Dialer Control function that sets the firewall
// mark (SO_MARK) on the socket before it connects. The tunnel's own
// WebSocket connection must carry Config.FwMark so that the policy rules
// of Up route it by the main table instead of into the TUN. Setting a
// mark needs CAP_NET_ADMIN. A zero mark leaves the socket unmarked.
func Control(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return fmt.Errorf("set SO_MARK %#x on %s socket to %s: %w", mark, network, address, err)
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x on %s socket to %s: %w", mark, network, address, serr)
		}
		return nil
	}
}
