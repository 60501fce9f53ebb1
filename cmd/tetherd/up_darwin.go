//go:build darwin

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/platform/darwin"
	"github.com/tetherd/tetherd/transport"
)

func up(ctx context.Context, c *cli, cfg *daemon.Config, cs *daemon.ClientSettings, log *zap.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("tetherd up needs root on macOS (it creates a utun and changes routes and DNS): run it with sudo")
	}
	if err := darwin.CheckSettings(cfg.DNS.Mode, cfg.Routes.LANBypass); err != nil {
		return err
	}
	peer, err := transport.ParsePeerURI(cfg.Peer)
	if err != nil {
		return err
	}
	// What a tetherd that did not stop cleanly left is restored first: its DNS key
	// would send the lookup of the peer's name below to a resolver that is gone.
	// (darwin.Up would do it too, but only after that lookup.)
	journalDir := darwin.JournalDir(cfg.JournalDir)
	restored, err := darwin.Down(journalDir, darwin.Options{Logger: log.Named("router")})
	for _, l := range restored {
		log.Info("restored what a tetherd that did not stop cleanly left", zap.String("change", l))
	}
	if err != nil {
		return err
	}
	// The peer's own addresses stay outside the tunnel (resolved now, before DNS is
	// pointed at the tunnel).
	exclude, err := peerPrefixes(ctx, peer.URL)
	if err != nil {
		return err
	}
	// The tunnel's socket is bound to the interface of the peer's route (outside
	// the tunnel), so it cannot loop into the utun. Until the utun exists, a binder
	// that knows no utun does it; afterwards one that ignores the utun's routes.
	peerAddrs := make([]netip.Addr, len(exclude))
	for i, p := range exclude {
		peerAddrs[i] = p.Addr()
	}
	// The pf DNS filter must not cut the tunnel's own connection if the peer
	// listens on a DNS port.
	peerEndpoints, err := darwin.PeerEndpoints(peer.URL, peerAddrs)
	if err != nil {
		return err
	}
	var bound atomic.Pointer[darwin.Binder]
	early := darwin.NewBinder(darwin.BinderOptions{Destinations: peerAddrs, Logger: log.Named("binder")})
	if _, err := early.Refresh(ctx); err != nil {
		log.Warn("no interface to the peer yet", zap.Error(err))
	}
	bound.Store(early)
	dialer := &net.Dialer{
		Control: func(network, address string, c syscall.RawConn) error {
			return bound.Load().Control(network, address, c)
		},
		KeepAlive: -1,
	}
	pc, err := connectPeer(ctx, cfg, exclude, dialer, log)
	if err != nil {
		return err
	}
	defer pc.Close()
	tunName := darwin.TUNName(cfg.TUN.Name)
	dev, err := tun.CreateTUN(tunName, cfg.TUN.MTU)
	if err != nil {
		return fmt.Errorf("create utun (tun.name %s): %w", cfg.TUN.Name, err)
	}
	defer drainEvents(dev)()
	name, err := dev.Name()
	if err != nil {
		return err
	}
	if name != cfg.TUN.Name {
		log.Info("macOS names tunnel devices utunN", zap.String("configured", cfg.TUN.Name), zap.String("tun", name))
	}
	router, err := darwin.Up(darwin.Config{
		TUN:        name,
		MTU:        cfg.TUN.MTU,
		Addrs:      cs.TUNAddrs,
		Include:    cs.Include,
		Exclude:    append(cs.Exclude, exclude...),
		LANBypass:  cfg.Routes.LANBypass,
		DNS:        cs.DNSServers,
		DNSMode:    cfg.DNS.Mode,
		Peers:      peerEndpoints,
		JournalDir: journalDir,
	}, darwin.Options{Logger: log.Named("router")})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := router.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// When the network changes, the watcher moves the peer's exclusion routes to the
	// new gateway and re-reads the interfaces, before the client reconnects.
	binder := darwin.NewBinder(darwin.BinderOptions{Ignore: name, Destinations: peerAddrs, Logger: log.Named("binder")})
	if _, err := binder.Refresh(ctx); err != nil {
		log.Warn("no interface to the peer yet; dialing it fails until there is one", zap.Error(err))
	}
	bound.Store(binder)
	refresh := func(ctx context.Context) error {
		rerr := router.Refresh(ctx)
		_, berr := binder.Refresh(ctx)
		return errors.Join(rerr, berr)
	}
	var netChanged <-chan struct{}
	if w, werr := darwin.WatchNetwork(darwin.WatchOptions{Ignore: name, Refresh: refresh, Logger: log.Named("watch")}); werr != nil {
		log.Warn("not watching the network for changes: the tunnel's socket stays on the interface it has now", zap.Error(werr))
	} else {
		defer w.Close()
		netChanged = w.C()
	}
	client, err := daemon.NewClient(daemon.ClientOptions{
		TUN:            dev,
		NetworkChanged: netChanged,
		Dial:           pc.Dial,
		DNS:            cs.DNSServers,
		HijackDNS:      cfg.DNS.Hijack,
		PeerName:       peer.Redacted(),
		TUNName:        name,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	// The control socket for `tetherd status` and `tetherd flows`, root only (a 0700
	// directory, a 0600 socket), and the optional metrics.
	stopMonitor, err := startMonitor(ctx, log, client, monitorOptions{Socket: upSocket(cfg), MetricsAddr: cfg.Metrics.Listen, Pprof: cfg.Metrics.Pprof})
	if err != nil {
		return err
	}
	defer stopMonitor()
	err = client.Run(ctx, func() {
		log.Info("tunnel is up", zap.String("peer", peer.Redacted()), zap.String("tun", name))
	})
	if err == nil {
		log.Info("shutting down: restoring routes and DNS")
	}
	return err
}

// platformJournalDir maps the configuration's journal_dir to macOS: the Linux default
// /run/tetherd becomes /var/run/tetherd.
func platformJournalDir(dir string) string { return darwin.JournalDir(dir) }

func down(dir string) ([]string, error) {
	return darwin.Down(darwin.JournalDir(dir), darwin.Options{})
}
