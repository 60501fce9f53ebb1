//go:build linux

package linux

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestConfigDefaults(t *testing.T) {
	in := Config{TUN: "tun0", Include: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}}
	c, err := in.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Table != 7170 || c.FwMark != 0x7170 || c.RulePriority != 7170 || c.DNSMode != DNSAuto ||
		c.ResolvConf != "/etc/resolv.conf" || c.JournalDir != "/run/tetherd" {
		t.Errorf("defaults: %+v", c)
	}
	if in.Include[0] != netip.MustParsePrefix("10.1.2.3/8") {
		t.Error("withDefaults modified the caller's Include")
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::/0")}; !slices.Equal(c.routes(), want) {
		t.Errorf("routes %v, want %v (IPv6 always captured)", c.routes(), want)
	}
}

func TestConfigRoutes(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		include []netip.Prefix
		want    []netip.Prefix
	}{
		{nil, []netip.Prefix{p("0.0.0.0/0"), p("::/0")}},
		{[]netip.Prefix{p("10.0.0.0/8"), p("10.0.0.0/8")}, []netip.Prefix{p("10.0.0.0/8"), p("::/0")}},
		{[]netip.Prefix{p("10.0.0.0/8"), p("2001:db8::/32")}, []netip.Prefix{p("10.0.0.0/8"), p("2001:db8::/32")}},
		{[]netip.Prefix{p("2001:db8::/32")}, []netip.Prefix{p("2001:db8::/32")}},
	} {
		c, err := Config{TUN: "t", Include: tc.include}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got := c.routes(); !slices.Equal(got, tc.want) {
			t.Errorf("Include %v: routes %v, want %v", tc.include, got, tc.want)
		}
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "empty interface name"},
		{Config{TUN: "a-very-long-name0"}, "longer than 15"},
		{Config{TUN: "a/b"}, "contains"},
		{Config{TUN: "t", MTU: 100}, "MTU 100"},
		{Config{TUN: "t", Table: 254}, "reserved"},
		{Config{TUN: "t", RulePriority: 32764}, "rule priority 32764"},
		{Config{TUN: "t", DNSMode: "dnsmasq"}, `DNS mode "dnsmasq"`},
		{Config{TUN: "t", Exclude: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, "whole address family"},
		{Config{TUN: "t", Include: []netip.Prefix{{}}}, "include prefix invalid"},
		{Config{TUN: "t", DNS: []netip.Addr{netip.IPv4Unspecified()}}, "DNS server 0.0.0.0"},
		{Config{TUN: "t", Addrs: []netip.Prefix{netip.MustParsePrefix("::ffff:1.2.3.4/128")}}, "address ::ffff:1.2.3.4/128"},
	} {
		_, err := tc.cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestPlanRules(t *testing.T) {
	c, err := Config{
		TUN: "t", LANBypass: true, Table: 100, FwMark: 0xca6c, RulePriority: 500,
		Exclude: []netip.Prefix{netip.MustParsePrefix("192.0.2.9/32"), netip.MustParsePrefix("2001:db8::/32")},
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range planRules(c) {
		got = append(got, r.String())
	}
	want := []string{
		"ipv4 500: from all ipproto udp dport 53 lookup 100",
		"ipv4 500: from all ipproto tcp dport 53 lookup 100",
		"ipv6 500: from all ipproto udp dport 53 lookup 100",
		"ipv6 500: from all ipproto tcp dport 53 lookup 100",
		"ipv4 500: from all to 192.0.2.9/32 lookup main",
		"ipv6 500: from all to 2001:db8::/32 lookup main",
		"ipv4 501: from all lookup main suppress_prefixlength 0",
		"ipv6 501: from all lookup main suppress_prefixlength 0",
		"ipv4 502: not from all fwmark 0xca6c lookup 100",
		"ipv6 502: not from all fwmark 0xca6c lookup 100",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The netlink form of each rule prints the same as the spec, so the
	// dump of an installed rule matches its journal entry.
	for _, r := range planRules(c) {
		nr := r.netlinkRule()
		if nr.Goto != -1 || nr.Flow != -1 {
			t.Errorf("%v: goto %d flow %d: not built on netlink.NewRule", r, nr.Goto, nr.Flow)
		}
		if got := formatRule(*nr); got != r.String() {
			t.Errorf("formatRule(netlinkRule) = %q, want %q", got, r.String())
		}
	}
}

func TestTunnelRoute(t *testing.T) {
	r := tunnelRoute(netip.MustParsePrefix("0.0.0.0/0"), 7, 7170)
	if r.Family != netlink.FAMILY_V4 || r.Scope != netlink.SCOPE_LINK || r.LinkIndex != 7 || r.Table != 7170 || r.Protocol != unix.RTPROT_STATIC {
		t.Errorf("IPv4 route %+v", r)
	}
	if got := routeDst(*r); got != netip.MustParsePrefix("0.0.0.0/0") {
		t.Errorf("routeDst = %v", got)
	}
	r = tunnelRoute(netip.MustParsePrefix("::/0"), 7, 7170)
	if r.Family != netlink.FAMILY_V6 || r.Scope != netlink.SCOPE_UNIVERSE {
		t.Errorf("IPv6 route %+v", r)
	}
	if got := routeDst(netlink.Route{Family: unix.AF_INET6}); got != netip.MustParsePrefix("::/0") {
		t.Errorf("routeDst(nil Dst, IPv6) = %v", got)
	}
}
