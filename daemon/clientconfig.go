package daemon

import (
	"fmt"
	"net/netip"

	"github.com/tetherd/tetherd/transport"
)

// TUNConfig is the "tun" section.
type TUNConfig struct {
	// Name of the TUN device. Default tether0.
	Name string `yaml:"name"`
	// MTU of the TUN device. Default 1500.
	MTU int `yaml:"mtu"`
	// IPv4 is the device's address and prefix. Default 10.255.77.1/30.
	IPv4 string `yaml:"ipv4"`
	// IPv6 is the device's address and prefix (a ULA). Default
	// fd74:6574:6865:7264::1/64.
	IPv6 string `yaml:"ipv6"`
}

// RoutesConfig is the "routes" section.
type RoutesConfig struct {
	// Include lists the networks sent into the tunnel; empty means everything (IPv4
	// and IPv6). IPv6 is captured even when Include lists only IPv4 networks, so it
	// cannot leak around the tunnel.
	Include []string `yaml:"include"`
	// Exclude lists networks that never go into the tunnel.
	Exclude []string `yaml:"exclude"`
	// LANBypass keeps the networks the laptop is directly connected to (and any other
	// more specific route of the main table) reachable without the tunnel. Default
	// true.
	LANBypass bool `yaml:"lan_bypass"`
}

// DNSConfig is the "dns" section.
type DNSConfig struct {
	// Mode is how the system is pointed at the tunnel's resolver: auto
	// (systemd-resolved when it runs, else /etc/resolv.conf), resolved, resolvconf,
	// or off. Default auto.
	Mode string `yaml:"mode"`
	// Servers are the resolver addresses inside the TUN network; queries to them are
	// resolved by the peer. Default 10.255.77.2 and fd74:6574:6865:7264::53.
	Servers []string `yaml:"servers"`
	// Hijack sends every DNS query (port 53, any destination) to the peer's resolver.
	Hijack bool `yaml:"hijack"`
}

func defaultTUN() TUNConfig {
	return TUNConfig{Name: "tether0", MTU: 1500, IPv4: "10.255.77.1/30", IPv6: "fd74:6574:6865:7264::1/64"}
}

func defaultDNS() DNSConfig {
	return DNSConfig{Mode: "auto", Servers: []string{"10.255.77.2", "fd74:6574:6865:7264::53"}}
}

// ClientSettings are the client sections of a Config, parsed.
type ClientSettings struct {
	TUNAddrs   []netip.Prefix
	Include    []netip.Prefix
	Exclude    []netip.Prefix
	DNSServers []netip.Addr
}

// Client parses the client sections. Its error is a *ConfigError.
func (c *Config) Client() (*ClientSettings, error) {
	var ps problems
	cs := c.client(&ps)
	if err := ps.err(""); err != nil {
		return nil, err
	}
	return cs, nil
}

func (c *Config) validateClient(ps *problems) { c.client(ps) }

func (c *Config) client(ps *problems) *ClientSettings {
	cs := &ClientSettings{}
	if c.Peer != "" {
		if _, err := transport.ParsePeerURI(c.Peer); err != nil {
			ps.add("peer", "%v", err)
		}
	}
	if c.Token != "" {
		if err := checkToken(c.Token); err != nil {
			ps.add("token", "%v", err)
		}
		if c.TokenFile != "" {
			ps.add("token_file", "token and token_file are mutually exclusive; set only one")
		}
	}
	if n := c.TUN.Name; n == "" || len(n) > 15 {
		ps.add("tun.name", "want 1 to 15 characters, got %q", n)
	}
	if c.TUN.MTU < 1280 || c.TUN.MTU > 65535 {
		ps.add("tun.mtu", "want 1280 to 65535 (IPv6 needs at least 1280), got %d", c.TUN.MTU)
	}
	for _, kv := range []struct {
		key, val string
		v4       bool
	}{{"tun.ipv4", c.TUN.IPv4, true}, {"tun.ipv6", c.TUN.IPv6, false}} {
		if kv.val == "" {
			continue
		}
		p, err := netip.ParsePrefix(kv.val)
		if err != nil || p.Addr().Is4() != kv.v4 || p.Addr().Is4In6() {
			ps.add(kv.key, "invalid address %q: want an %s address with its prefix length", kv.val, map[bool]string{true: "IPv4", false: "IPv6"}[kv.v4])
			continue
		}
		cs.TUNAddrs = append(cs.TUNAddrs, p)
	}
	if len(cs.TUNAddrs) == 0 && c.TUN.IPv4 == "" && c.TUN.IPv6 == "" {
		ps.add("tun", "needs an ipv4 or an ipv6 address")
	}
	list := func(key string, in []string) []netip.Prefix {
		var out []netip.Prefix
		for i, s := range in {
			p, err := parsePrefix(s)
			if err != nil {
				ps.add(fmt.Sprintf("%s[%d]", key, i), "%v", err)
				continue
			}
			out = append(out, p)
		}
		return out
	}
	cs.Include = list("routes.include", c.Routes.Include)
	cs.Exclude = list("routes.exclude", c.Routes.Exclude)
	switch c.DNS.Mode {
	case "auto", "resolved", "resolvconf", "off":
	default:
		ps.add("dns.mode", "want auto, resolved, resolvconf or off, got %q", c.DNS.Mode)
	}
	for i, s := range c.DNS.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			ps.add(fmt.Sprintf("dns.servers[%d]", i), "invalid IP address %q", s)
			continue
		}
		cs.DNSServers = append(cs.DNSServers, a.Unmap())
	}
	if c.JournalDir == "" {
		ps.add("journal_dir", "must not be empty")
	}
	return cs
}
