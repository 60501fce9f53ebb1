package darwin

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
)

// DefaultJournalDir holds the journal of an active configuration. macOS
// has no /run (the system volume is read-only); /var/run is its place for
// run-time state, and it is emptied at boot, like the routes and the
// dynamic store that the journal describes.
const DefaultJournalDir = "/var/run/tetherd"

// linuxJournalDir is the Linux default that tetherd's configuration
// carries; JournalDir maps it to DefaultJournalDir.
const linuxJournalDir = "/run/tetherd"

// JournalDir returns the journal directory to use on macOS for the
// configured dir: DefaultJournalDir for an empty dir or the Linux default
// /run/tetherd (which cannot exist on macOS), else dir itself.
func JournalDir(dir string) string {
	if dir == "" || dir == linuxJournalDir {
		return DefaultJournalDir
	}
	return dir
}

// DNS modes of Config.DNSMode.
const (
	// DNSAuto (the default) and DNSDynamicStore publish the DNS servers as
	// a default resolver in the SystemConfiguration dynamic store (scutil),
	// and load the pf anchor PFAnchor, which refuses DNS leaving on any
	// other interface than the utun and lo0 (the LAN resolver included).
	DNSAuto         = "auto"
	DNSDynamicStore = "scutil"
	// DNSOff leaves DNS alone: no resolver, no pf rules.
	DNSOff = "off"
)

// utunName matches the names that golang.zx2c4.com/wireguard/tun.CreateTUN
// accepts on macOS.
var utunName = regexp.MustCompile(`^utun[0-9]*$`)

// ifName matches the names of macOS network interfaces (en0, pdp_ip0, bridge100,
// XHC20): what route(8) may print, and what a journal may give it back.
var ifName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,14}$`)

// TUNName returns the name to create the utun device with: name when it
// is "utun" or "utunN", else "utun" (the kernel picks the first free
// unit). tetherd's default name, tether0, is not possible on macOS.
func TUNName(name string) string {
	if utunName.MatchString(name) {
		return name
	}
	return "utun"
}

// Config says what Up changes. Up never modifies the caller's Config.
type Config struct {
	// TUN is the name of the utun interface, utunN. It must exist: the
	// caller creates it, and it disappears with the caller's process,
	// taking its addresses and routes along.
	TUN string
	// MTU is set on the TUN if it is > 0.
	MTU int
	// Addrs are added to the TUN, e.g. 10.255.77.1/30 and
	// fd74:6574:6865:7264::1/64, with a route of their network into it.
	Addrs []netip.Prefix
	// Include is routed into the tunnel. Empty means a full tunnel, as
	// 0.0.0.0/1 + 128.0.0.0/1 and ::/1 + 8000::/1: more specific than the
	// default routes, which stay in place (and are what Exclude and the
	// tunnel's own socket use). A /0 in Include is split the same way.
	// IPv6 is always captured: when Include has no IPv6 prefix, ::/1 and
	// 8000::/1 are routed into the tunnel anyway, so that a split IPv4
	// tunnel cannot leak IPv6 traffic past it. An Include network that
	// has a route already (the LAN) keeps it; the halves must be free.
	Include []netip.Prefix
	// Exclude never goes into the tunnel: each prefix gets a route through
	// the default gateway of its family as it was before Up (the peer's
	// own address belongs here). A family without a default route leaves
	// its Exclude prefixes alone, with a warning.
	Exclude []netip.Prefix
	// LANBypass must be true: on macOS the networks the machine is
	// directly connected to (and any other route more specific than /1)
	// always stay direct, because the tunnel is routed as two /1 halves
	// beside the default route rather than by policy rules. Up refuses a
	// Config that asks otherwise instead of silently not doing it.
	LANBypass bool
	// DNS are resolver addresses inside the TUN network. Empty leaves DNS
	// alone.
	DNS []netip.Addr
	// DNSMode is DNSAuto (the default), DNSDynamicStore or DNSOff. With
	// DNS servers and a mode other than DNSOff, Up also loads the pf DNS
	// filter (see pfRules).
	DNSMode string
	// Peers are the addresses and ports of the tunnel's own connection to
	// the peer. The DNS filter lets a connection to one of them through
	// when its port is a DNS port (53, 853); other ports are not filtered
	// anyway.
	Peers []netip.AddrPort
	// JournalDir holds journal.json while a configuration is active;
	// default DefaultJournalDir.
	JournalDir string
}

// dnsFilter says whether Up installs the pf DNS filter: whenever it
// points the system's resolver at the tunnel.
func (c Config) dnsFilter() bool { return len(c.DNS) > 0 && c.DNSMode != DNSOff }

// withDefaults returns a copy of c with defaults filled in and the prefix
// lists normalized (masked, deduplicated), or a validation error.
func (c Config) withDefaults() (Config, error) {
	if c.DNSMode == "" {
		c.DNSMode = DNSAuto
	}
	c.JournalDir = JournalDir(c.JournalDir)
	var errs []error
	if c.TUN == "utun" || !utunName.MatchString(c.TUN) {
		errs = append(errs, fmt.Errorf("TUN %q: want the name of an existing utun interface, utunN", c.TUN))
	}
	if c.MTU < 0 || (c.MTU > 0 && c.MTU < 576) || c.MTU > 65535 {
		errs = append(errs, fmt.Errorf("MTU %d: want 0 (keep) or 576..65535", c.MTU))
	}
	if !c.LANBypass {
		errs = append(errs, errors.New("LAN bypass off is not supported on macOS: directly connected networks always stay outside the tunnel there (set routes.lan_bypass: true)"))
	}
	switch c.DNSMode {
	case DNSAuto, DNSDynamicStore, DNSOff:
	default:
		errs = append(errs, fmt.Errorf("DNS mode %q: want %q, %q or %q on macOS", c.DNSMode, DNSAuto, DNSDynamicStore, DNSOff))
	}
	for _, a := range c.Addrs {
		if !a.IsValid() || a.Addr().Is4In6() || a.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("address %v: invalid", a))
		}
	}
	c.Addrs = dedup(c.Addrs, func(p netip.Prefix) netip.Prefix { return p })
	var err error
	if c.Include, err = normPrefixes("include", c.Include); err != nil {
		errs = append(errs, err)
	}
	if c.Exclude, err = normPrefixes("exclude", c.Exclude); err != nil {
		errs = append(errs, err)
	}
	for _, p := range c.Exclude {
		if p.Bits() == 0 {
			errs = append(errs, fmt.Errorf("exclude %v: excluding a whole address family would disable the tunnel for it", p))
		}
	}
	for _, a := range c.DNS {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("DNS server %v: invalid", a))
		}
	}
	c.DNS = dedup(c.DNS, func(a netip.Addr) netip.Addr { return a })
	for _, p := range c.Peers {
		if !p.IsValid() || p.Port() == 0 || p.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("peer %v: invalid", p))
		}
	}
	c.Peers = dedup(c.Peers, func(p netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(p.Addr().Unmap(), p.Port()) })
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return c, nil
}

// Halves of the default routes.
var (
	v4Halves = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
	v6Halves = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
)

// tunnelRoutes returns the prefixes routed into the tunnel: Include (a /0
// as its two /1 halves), or both families' halves when it is empty, plus
// the IPv6 halves when Include has no IPv6 prefix.
func (c Config) tunnelRoutes() []netip.Prefix {
	if len(c.Include) == 0 {
		return slices.Concat(v4Halves, v6Halves)
	}
	var out []netip.Prefix
	for _, p := range c.Include {
		switch {
		case p.Bits() == 0 && p.Addr().Is4():
			out = append(out, v4Halves...)
		case p.Bits() == 0:
			out = append(out, v6Halves...)
		default:
			out = append(out, p)
		}
	}
	if !slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		out = append(out, v6Halves...)
	}
	return dedup(out, func(p netip.Prefix) netip.Prefix { return p })
}

func normPrefixes(what string, in []netip.Prefix) ([]netip.Prefix, error) {
	var errs []error
	for _, p := range in {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("%s prefix %v: invalid", what, p))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return dedup(in, netip.Prefix.Masked), nil
}

// dedup returns the distinct values of norm(v) in order of appearance.
func dedup[T comparable](in []T, norm func(T) T) []T {
	var out []T
	for _, v := range in {
		if v = norm(v); !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
