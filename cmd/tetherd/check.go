package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/transport"
)

const checkDescription = `Check a configuration file without changing anything on the system: every key is
known and has a valid value (errors name the file, line and key), the file and the
token files are not readable by others, and the token files can be read. Exits 0 and
prints a summary when it is valid, 1 with the problems otherwise.`

func runCheck(_ context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "check", "[flags]", checkDescription)
	configPath := fs.String("config", "", "the YAML configuration `FILE` (default "+systemConfig+")")
	if err := fs.parse(args); err != nil {
		return err
	}
	path := *configPath
	if path == "" {
		path = systemConfig
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no configuration at %s: give one with --config FILE", path)
		}
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		return err
	}
	if _, err := peerToken(cfg); err != nil {
		return fmt.Errorf("%s: token_file: %w", path, err)
	}
	if _, err := cfg.Serve.ReadToken(); err != nil {
		return fmt.Errorf("%s: serve.token_file: %w", path, err)
	}
	if _, err := cfg.Limits.Transport(); err != nil {
		return err
	}
	cs, err := cfg.Client()
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: valid\n", path)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-10s %s\n", k, v) }
	if cfg.Peer != "" {
		peer := cfg.Peer
		if u, err := transport.ParsePeerURI(cfg.Peer); err == nil {
			peer = u.Redacted()
		}
		row("peer", peer)
	} else {
		row("peer", "none (give it to up or proxy as PEER-URI)")
	}
	row("tun", fmt.Sprintf("%s, MTU %d, %s", cfg.TUN.Name, cfg.TUN.MTU, joinStrings(cs.TUNAddrs)))
	routes := "everything (IPv4 and IPv6)"
	if len(cs.Include) > 0 {
		routes = joinStrings(cs.Include) + " (and all IPv6)"
	}
	if len(cs.Exclude) > 0 {
		routes += ", except " + joinStrings(cs.Exclude)
	}
	if cfg.Routes.LANBypass {
		routes += ", LAN bypass on"
	}
	row("routes", routes)
	row("dns", fmt.Sprintf("%s via %s", cfg.DNS.Mode, joinStrings(cs.DNSServers)))
	row("control", upSocket(cfg)+" (up), "+proxySocket(cfg)+" (proxy)")
	if cfg.Metrics.Listen != "" {
		row("metrics", "http://"+cfg.Metrics.Listen+"/metrics")
		if cfg.Metrics.Pprof {
			row("pprof", "http://"+cfg.Metrics.Listen+"/debug/pprof/")
		}
	}
	row("serve", cfg.Serve.Listen+cfg.Serve.Path)
	_, err = fmt.Fprint(c.stdout, b.String())
	return err
}

// joinStrings joins the String forms of xs with ", ".
func joinStrings[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}
