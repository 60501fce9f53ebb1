package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/transport"
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

// peerConn dials the peer for up: always at the addresses resolved at start (DNS goes
// into the tunnel afterwards, and the tunnel may be what is down), through a dialer
// whose Control keeps the socket out of the tunnel.
type peerConn struct {
	cfg     *daemon.Config
	token   string
	limits  *transport.Config
	addrs   []netip.Prefix
	dialer  *net.Dialer
	log     *zap.Logger
	first   *transport.Session // made before the system changed; the client's first
	firstEr error
}

// connectPeer makes the first connection before anything on the system changes: a
// wrong token, pin or version is returned and leaves it untouched. An unreachable
// peer (no network yet, the phone away) is not an error: the client connects when it
// can. Close releases the first session if the client never took it.
func connectPeer(ctx context.Context, cfg *daemon.Config, addrs []netip.Prefix, dialer *net.Dialer, log *zap.Logger) (*peerConn, error) {
	token, err := peerToken(cfg)
	if err != nil {
		return nil, err
	}
	limits, err := cfg.Limits.Transport()
	if err != nil {
		return nil, err
	}
	p := &peerConn{cfg: cfg, token: token, limits: limits, addrs: addrs, dialer: dialer, log: log}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	p.first, p.firstEr = p.dial(dctx)
	cancel()
	if p.firstEr != nil && (transport.Permanent(p.firstEr) || ctx.Err() != nil) {
		return nil, p.firstEr
	}
	return p, nil
}

// Dial is the client's Dial: the first call hands over the first connection's
// outcome, the next ones dial anew. The client calls it from one goroutine.
func (p *peerConn) Dial(ctx context.Context) (*transport.Session, error) {
	if s, err := p.first, p.firstEr; s != nil || err != nil {
		p.first, p.firstEr = nil, nil
		return s, err
	}
	return p.dial(ctx)
}

// Close closes the first session if the client did not take it.
func (p *peerConn) Close() {
	if p.first != nil {
		p.first.Close()
		p.first = nil
	}
}

func (p *peerConn) dial(ctx context.Context) (*transport.Session, error) {
	return transport.Dial(ctx, p.cfg.Peer, &transport.DialOptions{
		Token:          p.token,
		NetDialContext: p.dialAddrs,
		Config:         p.limits,
		Logger:         p.log.Named("transport"),
	})
}

// dialAddrs connects to the peer's port at each resolved address in turn.
func (p *peerConn) dialAddrs(ctx context.Context, _, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, a := range p.addrs {
		c, err := p.dialer.DialContext(ctx, "tcp", net.JoinHostPort(a.Addr().String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = errors.New("the peer's name resolved to no address")
	}
	return nil, firstErr
}

// drainEvents hands dev to a goroutine that drains its event channel, which nobody else
// reads (wireguard's listeners block once its small buffer is full); the channel is
// closed with the device, which ends the goroutine. The returned func closes dev (a
// no-op if the client closed it already) and waits for that goroutine.
func drainEvents(dev tun.Device) (closeDev func()) {
	var events sync.WaitGroup
	events.Go(func() {
		for range dev.Events() {
		}
	})
	return func() {
		dev.Close()
		events.Wait()
	}
}
