//go:build linux

package main

import (
	"context"
	"fmt"
	"net"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/platform/linux"
	"github.com/tetherd/tetherd/transport"
)

func up(ctx context.Context, c *cli, cfg *daemon.Config, cs *daemon.ClientSettings, log *zap.Logger) (err error) {
	if err := linux.CheckPrivileges(linux.DefaultTUNDevice); err != nil {
		return err
	}
	peer, err := transport.ParsePeerURI(cfg.Peer)
	if err != nil {
		return err
	}
	// A crashed run's changes are undone first: its resolv.conf may point at the dead
	// tunnel's resolver, which would break the lookup of the peer's name below. (It
	// fails, changing nothing, while another up holds the journal.)
	restored, err := linux.Down(cfg.JournalDir, linux.Options{Logger: log.Named("router")})
	for _, l := range restored {
		log.Info("restored what a crashed tetherd up left", zap.String("change", l))
	}
	if err != nil {
		return err
	}
	// The peer's own addresses stay outside the tunnel (resolved now, before DNS is
	// pointed at the tunnel): its replies then pass reverse-path filtering, and a
	// peer on a routed network is reached directly.
	exclude, err := peerPrefixes(ctx, peer.URL)
	if err != nil {
		return err
	}
	pc, err := connectPeer(ctx, cfg, exclude, &net.Dialer{Control: linux.Control(linux.DefaultFwMark), KeepAlive: -1}, log)
	if err != nil {
		return err
	}
	defer pc.Close()
	// Opened here rather than with tun.CreateTUN: wireguard-go's up/down watchers,
	// which nothing here reads, would write to the device once a second and wake an
	// idle laptop for it. linux.Up sets the MTU.
	fd, err := linux.OpenTUN(cfg.TUN.Name)
	if err != nil {
		return err
	}
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		// fd is in an os.File by then, whose finalizer closes it: closing it here
		// too could close a descriptor that reused the number.
		return fmt.Errorf("create TUN %s: %w", cfg.TUN.Name, err)
	}
	defer drainEvents(dev)()
	name, err := dev.Name()
	if err != nil {
		return err
	}
	router, err := linux.Up(linux.Config{
		TUN:        name,
		MTU:        cfg.TUN.MTU,
		Addrs:      cs.TUNAddrs,
		Include:    cs.Include,
		Exclude:    append(cs.Exclude, exclude...),
		LANBypass:  cfg.Routes.LANBypass,
		DNS:        cs.DNSServers,
		DNSMode:    cfg.DNS.Mode,
		JournalDir: cfg.JournalDir,
	}, linux.Options{Logger: log.Named("router")})
	if err != nil {
		dev.Close()
		return err
	}
	defer func() {
		if cerr := router.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// Links, addresses and main-table routes changing (Wi-Fi roaming, a cable, the
	// hotspot coming back) make the client reconnect at once instead of after its
	// backoff.
	var netChanged <-chan struct{}
	if w, werr := linux.WatchNetwork(linux.WatchOptions{Ignore: name}); werr != nil {
		log.Warn("not watching the network for changes", zap.Error(werr))
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
		dev.Close()
		return err
	}
	// The control socket for `tetherd status` and `tetherd flows`, root only (a 0700
	// directory, a 0600 socket), and the optional metrics.
	stopMonitor, err := startMonitor(ctx, log, client, monitorOptions{Socket: upSocket(cfg), MetricsAddr: cfg.Metrics.Listen, Pprof: cfg.Metrics.Pprof})
	if err != nil {
		dev.Close()
		return err
	}
	defer stopMonitor()
	err = client.Run(ctx, func() {
		log.Info("tunnel is up", zap.String("peer", peer.Redacted()), zap.String("tun", name))
		if nerr := linux.Notify("READY=1"); nerr != nil { // systemd Type=notify
			log.Warn("systemd notification failed", zap.Error(nerr))
		}
	})
	_ = linux.Notify("STOPPING=1")
	if err == nil {
		log.Info("shutting down: restoring routes and DNS")
	}
	return err
}

// platformJournalDir is journal_dir as configured.
func platformJournalDir(dir string) string { return dir }

func down(dir string) ([]string, error) {
	return linux.Down(dir, linux.Options{})
}
