package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/tetherd/tetherd/daemon"
)

const upDescription = `Bring the tunnel up: create a TUN device, route all of this machine's IPv4 and IPv6
traffic into it and carry every TCP and UDP flow through the peer (a phone running
'tetherd serve'). DNS is resolved by the peer. Runs in the foreground until
interrupted; Ctrl-C or SIGTERM restore the routes and DNS. Needs root (CAP_NET_ADMIN).

PEER-URI is the line 'tetherd serve' printed; it overrides the configuration's peer.
The configuration is --config FILE, else /etc/tetherd/config.yaml if it exists.`

// systemConfig is read by up and down when no --config is given.
const systemConfig = "/etc/tetherd/config.yaml"

func runUp(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "up", "[PEER-URI] [flags]", upDescription)
	configPath := fs.String("config", "", "read the YAML configuration `FILE` (default "+systemConfig+" if it exists)")
	logLevel := fs.String("log-level", "", "log at level `L`: debug, info, warn or error (default info)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on `ADDR`, host:port (default: metrics.listen, off)")
	positional, err := fs.parseOptionalArg(args)
	if err != nil {
		return err
	}
	cfg, err := loadPeerConfig(*configPath, positional, *logLevel)
	if err != nil {
		return err
	}
	if *metrics != "" {
		cfg.Metrics.Listen = *metrics
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cs, err := cfg.Client()
	if err != nil {
		return err
	}
	log, err := c.newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	return up(ctx, c, cfg, cs, log)
}

func runDown(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "down", "[flags]", `Restore the routes, rules and DNS settings that a 'tetherd up' changed, from the
journal it keeps, after it crashed or was killed. It says what it restored.`)
	configPath := fs.String("config", "", "read journal_dir from the YAML configuration `FILE`")
	journalDir := fs.String("journal-dir", "", "the journal `DIR` (default: journal_dir of the configuration, /run/tetherd)")
	if err := fs.parse(args); err != nil {
		return err
	}
	dir := *journalDir
	if dir == "" {
		cfg, err := loadClientConfig(*configPath)
		if err != nil {
			return err
		}
		dir = platformJournalDir(cfg.JournalDir)
	}
	restored, err := down(dir)
	for _, l := range restored {
		fmt.Fprintf(c.stdout, "restored: %s\n", l)
	}
	if err != nil {
		return err
	}
	if len(restored) == 0 {
		fmt.Fprintf(c.stdout, "nothing to restore: no journal in %s\n", dir)
	}
	return nil
}

// loadClientConfig reads path, or the system configuration when path is empty and it
// exists, or returns the defaults.
func loadClientConfig(path string) (*daemon.Config, error) {
	if path == "" {
		if _, err := os.Stat(systemConfig); err != nil {
			return daemon.DefaultConfig(), nil
		}
		path = systemConfig
	}
	return daemon.LoadConfig(path)
}

// loadPeerConfig loads the configuration of a command that talks to a peer (up,
// proxy): the file (or the system one, or defaults), with the PEER-URI argument and
// --log-level on top. It fails with a usage error when no peer is known.
func loadPeerConfig(path string, positional []string, logLevel string) (*daemon.Config, error) {
	cfg, err := loadClientConfig(path)
	if err != nil {
		return nil, err
	}
	if len(positional) == 1 {
		cfg.Peer = positional[0]
	}
	if logLevel != "" {
		cfg.Log.Level = logLevel
	}
	if cfg.Peer == "" {
		return nil, &usageError{err: errors.New("no peer: give the tether:// line 'tetherd serve' printed, or set peer in the configuration")}
	}
	return cfg, nil
}

// peerToken returns the token of the configuration: token, or the content of
// token_file.
func peerToken(cfg *daemon.Config) (string, error) {
	if cfg.TokenFile != "" {
		return daemon.ReadTokenFile(cfg.TokenFile)
	}
	return cfg.Token, nil
}

// peerPrefixes returns the addresses of the peer URL's host as host prefixes.
func peerPrefixes(ctx context.Context, rawURL string) ([]netip.Prefix, error) {
	host := rawURL
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if i := strings.IndexAny(host, "/?"); i >= 0 {
		host = host[:i]
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Prefix{netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve the peer %s: %w", host, err)
	}
	var out []netip.Prefix
	for _, ip := range ips {
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}
