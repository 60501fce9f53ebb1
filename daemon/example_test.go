//go:build linux

package daemon_test

import (
	"context"
	"net/netip"
	"os"
	"syscall"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/transport"
)

// Embedding the client in an app that already owns a TUN device — for instance an
// Android VpnService, which hands over a file descriptor and has configured routes and
// DNS itself — is a matter of building the device and a dial function. protect is the
// app's hook that keeps the tunnel's own socket out of the VPN (VpnService.protect).
// No routing is changed by the daemon package: that is platform code the tetherd
// command adds on desktops.
func ExampleNewClient() {
	var fd int // from VpnService.Builder.establish().detachFd()
	var protect func(fd uintptr) bool
	peerURI := os.Getenv("TETHERD_PEER") // the line `tetherd serve` printed

	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		return
	}
	c, err := daemon.NewClient(daemon.ClientOptions{
		TUN: dev, // the client owns it and closes it
		Dial: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, peerURI, &transport.DialOptions{
				Control: func(network, address string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) { protect(fd) })
				},
			})
		},
		DNS:    []netip.Addr{netip.MustParseAddr("10.255.77.2")}, // what the VpnService announced
		Logger: zap.NewExample(),
	})
	if err != nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	_ = c.Run(ctx, func() { /* tell the UI the tunnel is up */ })
}
