//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Defaults applied by Up and Down to zero Config fields.
const (
	// DefaultTable is the private routing table that holds the tunnel routes.
	DefaultTable = 7170
	// DefaultFwMark is the firewall mark of the tunnel's own socket.
	DefaultFwMark uint32 = 0x7170
	// DefaultRulePriority is the first of the three rule priorities Up uses.
	DefaultRulePriority = 7170
	// DefaultResolvConf is the resolver configuration rewritten in
	// resolv.conf mode.
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultJournalDir holds the journal of an active configuration.
	DefaultJournalDir = "/run/tetherd"
)

// DNS modes of Config.DNSMode.
const (
	// DNSAuto uses systemd-resolved when it is running and manages
	// /etc/resolv.conf, else rewrites resolv.conf.
	DNSAuto = "auto"
	// DNSResolved configures the TUN as a systemd-resolved link with
	// resolvectl (dns, domain ~., default-route).
	DNSResolved = "resolved"
	// DNSResolvConf rewrites the resolv.conf file in place.
	DNSResolvConf = "resolvconf"
	// DNSOff leaves DNS alone.
	DNSOff = "off"
)

// Config says what Up changes. The zero value of every field but TUN has a
// default; Up never modifies the caller's Config.
type Config struct {
	// TUN is the name of the tunnel interface. It must exist: the caller
	// creates it (and it normally vanishes when the caller's process exits).
	TUN string
	// MTU is set on the TUN if it is > 0; Close restores the old MTU.
	MTU int
	// Addrs are added to the TUN, e.g. 100.100.100.1/30 and fd7e:7e7d::1/64.
	// Addresses the TUN already has are left alone (and not removed later).
	Addrs []netip.Prefix
	// Include is routed into the tunnel. Empty means a full tunnel
	// (0.0.0.0/0 and ::/0). IPv6 is always captured: when Include has no
	// IPv6 prefix, ::/0 is routed into the tunnel anyway, so that a split
	// IPv4 tunnel cannot leak IPv6 traffic past it. (There is no such rule
	// the other way round: an IPv6-only Include captures no IPv4.)
	Include []netip.Prefix
	// Exclude never goes into the tunnel: a rule sends it to the main
	// table. Put the peer's address here too: besides guarding against an
	// unmarked socket, it keeps strict reverse-path filtering
	// (rp_filter=1) from dropping the peer's replies. If the main table
	// has no route for an excluded address at all, the lookup falls
	// through to the tunnel rule.
	Exclude []netip.Prefix
	// LANBypass keeps routes of the main table that are more specific than
	// a default route (the LAN, VPNs, docker bridges) direct, with the rule
	// "lookup main suppress_prefixlength 0".
	LANBypass bool
	// Table is the private routing table; default DefaultTable. It must
	// be empty when Up starts, and Close flushes it.
	Table int
	// FwMark is the mark on the tunnel's own socket (see Control); default
	// DefaultFwMark. Marked traffic bypasses the tunnel.
	FwMark uint32
	// RulePriority is the first of three consecutive rule priorities;
	// default DefaultRulePriority. P holds the Exclude rules, P+1 the
	// LAN bypass, P+2 the tunnel rule. No other rule may use them.
	RulePriority int
	// DNS are resolver addresses inside the TUN network. Empty leaves DNS
	// alone.
	DNS []netip.Addr
	// DNSMode is DNSAuto (the default), DNSResolved, DNSResolvConf or
	// DNSOff.
	DNSMode string
	// ResolvConf is the file rewritten in resolv.conf mode; default
	// DefaultResolvConf. It is rewritten in place (never renamed over),
	// because inside `ip netns exec` it is a bind mount.
	ResolvConf string
	// JournalDir holds journal.json while a configuration is active;
	// default DefaultJournalDir.
	JournalDir string
}

// withDefaults returns a copy of c with defaults filled in and the prefix
// lists normalized (masked, deduplicated, cloned), or a validation error.
func (c Config) withDefaults() (Config, error) {
	if c.Table == 0 {
		c.Table = DefaultTable
	}
	if c.FwMark == 0 {
		c.FwMark = DefaultFwMark
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.DNSMode == "" {
		c.DNSMode = DNSAuto
	}
	if c.ResolvConf == "" {
		c.ResolvConf = DefaultResolvConf
	}
	if c.JournalDir == "" {
		c.JournalDir = DefaultJournalDir
	}
	var errs []error
	if err := validIfName(c.TUN); err != nil {
		errs = append(errs, fmt.Errorf("TUN: %w", err))
	}
	if c.MTU < 0 || (c.MTU > 0 && c.MTU < 576) || c.MTU > 65535 {
		errs = append(errs, fmt.Errorf("MTU %d: want 0 (keep) or 576..65535", c.MTU))
	}
	switch c.Table {
	case 253, 254, 255:
		errs = append(errs, fmt.Errorf("table %d is reserved (default, main, local)", c.Table))
	}
	if c.Table < 0 {
		errs = append(errs, fmt.Errorf("table %d: must be positive", c.Table))
	}
	if c.RulePriority < 1 || c.RulePriority+2 >= 32766 {
		errs = append(errs, fmt.Errorf("rule priority %d: want 1..32763 so that P..P+2 come before the main rule (32766)", c.RulePriority))
	}
	switch c.DNSMode {
	case DNSAuto, DNSResolved, DNSResolvConf, DNSOff:
	default:
		errs = append(errs, fmt.Errorf("DNS mode %q: want %q, %q, %q or %q", c.DNSMode, DNSAuto, DNSResolved, DNSResolvConf, DNSOff))
	}
	for _, a := range c.Addrs {
		if !a.IsValid() || a.Addr().Is4In6() {
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
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() {
			errs = append(errs, fmt.Errorf("DNS server %v: invalid", a))
		}
	}
	c.DNS = dedup(c.DNS, func(a netip.Addr) netip.Addr { return a })
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return c, nil
}

// routes returns the prefixes Up routes into the tunnel: Include, or both
// default routes when it is empty, plus ::/0 when Include has no IPv6
// prefix.
func (c Config) routes() []netip.Prefix {
	if len(c.Include) == 0 {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	out := slices.Clone(c.Include)
	if !slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		out = append(out, netip.MustParsePrefix("::/0"))
	}
	return out
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

// validIfName applies the kernel's rules for interface names
// (dev_valid_name).
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) >= 16:
		return fmt.Errorf("interface name %q longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}
