//go:build !linux

package netstack

import (
	"errors"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// vnetIO is the offload path of a Linux TUN (vnet_linux.go); other systems have no
// virtio-net headers, and their devices are always used through Read and Write.
type vnetIO struct{}

func newVnetIO(tun.Device) *vnetIO { return nil }

var errNoVnet = errors.New("no virtio-net offload path on this system")

func (*vnetIO) read(*[vnetHdrLen]byte, []byte) (int, error) { return 0, errNoVnet }
func (*vnetIO) write(*stack.PacketBuffer) error             { return errNoVnet }
func (*vnetIO) writeUDPRun(run []*stack.PacketBuffer) (int, error) {
	return len(run), errNoVnet
}
