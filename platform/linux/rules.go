//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ruleSpec is one policy rule Up adds, in a form that survives JSON.
type ruleSpec struct {
	Family   int          `json:"family"` // 4 or 6
	Priority int          `json:"priority"`
	To       netip.Prefix `json:"to,omitzero"`
	Not      bool         `json:"not,omitempty"`
	FwMark   uint32       `json:"fwmark,omitempty"` // matched with mask 0xffffffff
	Table    int          `json:"table"`
	// SuppressPrefixlen is set for the LAN bypass rule.
	SuppressPrefixlen *int `json:"suppress_prefixlength,omitempty"`
	// IPProto and Dport select DNS (port 53) for the DNS capture rules.
	IPProto int    `json:"ipproto,omitempty"`
	Dport   uint16 `json:"dport,omitempty"`
}

// planRules returns the rules for cfg (defaults applied), in the order Up
// adds them: DNS capture and exclusions (P), LAN bypass (P+1), then the
// tunnel rule (P+2) last, so that nothing is captured before its exceptions
// are in place.
//
// DNS (UDP and TCP port 53) is sent into the tunnel ahead of every
// exception — the exclusions, the peer's own address, the LAN bypass — so
// that no query leaves the machine outside the tunnel, not even one to a
// resolver on the LAN or on the phone itself. (Rules of one priority apply
// in the order they were added.)
func planRules(cfg Config) []ruleSpec {
	p := cfg.RulePriority
	var rs []ruleSpec
	for _, f := range []int{4, 6} {
		for _, proto := range []int{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rs = append(rs, ruleSpec{Family: f, Priority: p, IPProto: proto, Dport: 53, Table: cfg.Table})
		}
	}
	for _, x := range cfg.Exclude {
		rs = append(rs, ruleSpec{Family: family(x.Addr()), Priority: p, To: x, Table: unix.RT_TABLE_MAIN})
	}
	for _, f := range []int{4, 6} {
		if cfg.LANBypass {
			zero := 0
			rs = append(rs, ruleSpec{Family: f, Priority: p + 1, Table: unix.RT_TABLE_MAIN, SuppressPrefixlen: &zero})
		}
	}
	for _, f := range []int{4, 6} {
		rs = append(rs, ruleSpec{Family: f, Priority: p + 2, Not: true, FwMark: cfg.FwMark, Table: cfg.Table})
	}
	return rs
}

// netlinkRule converts s for RuleAdd and RuleDel. It starts from
// netlink.NewRule: a zero netlink.Rule would mean "goto rule 0".
func (s ruleSpec) netlinkRule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = nlFamily(s.Family)
	r.Priority = s.Priority
	r.Table = s.Table
	r.Invert = s.Not
	if s.To.IsValid() {
		r.Dst = ipNet(s.To)
	}
	if s.FwMark != 0 {
		r.Mark = s.FwMark
		mask := uint32(0xffffffff)
		r.Mask = &mask
	}
	if s.SuppressPrefixlen != nil {
		r.SuppressPrefixlen = *s.SuppressPrefixlen
	}
	if s.IPProto != 0 {
		r.IPProto = s.IPProto
		r.Dport = netlink.NewRulePortRange(s.Dport, s.Dport)
	}
	return r
}

func protoName(p int) string {
	switch p {
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_TCP:
		return "tcp"
	}
	return fmt.Sprint(p)
}

// String formats s as `ip -4 rule` would, prefixed by the family.
func (s ruleSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipv%d %d: ", s.Family, s.Priority)
	if s.Not {
		b.WriteString("not ")
	}
	b.WriteString("from all")
	if s.To.IsValid() {
		fmt.Fprintf(&b, " to %v", s.To)
	}
	if s.FwMark != 0 {
		fmt.Fprintf(&b, " fwmark %#x", s.FwMark)
	}
	if s.IPProto != 0 {
		fmt.Fprintf(&b, " ipproto %s dport %d", protoName(s.IPProto), s.Dport)
	}
	fmt.Fprintf(&b, " lookup %s", tableName(s.Table))
	if s.SuppressPrefixlen != nil {
		fmt.Fprintf(&b, " suppress_prefixlength %d", *s.SuppressPrefixlen)
	}
	return b.String()
}

// formatRule formats a rule from a RuleList dump like `ip rule`, prefixed
// by the family, e.g. "ipv4 7172: not from all fwmark 0x7170 lookup 7170".
// Tests and diagnostics use it to compare rule dumps as text.
func formatRule(r netlink.Rule) string {
	var b strings.Builder
	fam := 4
	if r.Family == unix.AF_INET6 {
		fam = 6
	}
	fmt.Fprintf(&b, "ipv%d %d: ", fam, r.Priority)
	if r.Invert {
		b.WriteString("not ")
	}
	b.WriteString("from ")
	if r.Src != nil {
		b.WriteString(r.Src.String())
	} else {
		b.WriteString("all")
	}
	if r.Dst != nil {
		fmt.Fprintf(&b, " to %v", r.Dst)
	}
	if r.Mark != 0 || (r.Mask != nil && *r.Mask != 0xffffffff) {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
		if r.Mask != nil && *r.Mask != 0xffffffff {
			fmt.Fprintf(&b, "/%#x", *r.Mask)
		}
	}
	if r.IPProto != 0 {
		fmt.Fprintf(&b, " ipproto %s", protoName(r.IPProto))
		if r.Dport != nil {
			if r.Dport.Start == r.Dport.End {
				fmt.Fprintf(&b, " dport %d", r.Dport.Start)
			} else {
				fmt.Fprintf(&b, " dport %d-%d", r.Dport.Start, r.Dport.End)
			}
		}
	}
	if r.IifName != "" {
		fmt.Fprintf(&b, " iif %s", r.IifName)
	}
	if r.OifName != "" {
		fmt.Fprintf(&b, " oif %s", r.OifName)
	}
	switch {
	case r.Goto >= 0:
		fmt.Fprintf(&b, " goto %d", r.Goto)
	case r.Type != 0 && r.Type != unix.RTN_UNICAST:
		fmt.Fprintf(&b, " type %d", r.Type)
	default:
		fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
	}
	if r.SuppressPrefixlen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	if r.SuppressIfgroup >= 0 {
		fmt.Fprintf(&b, " suppress_ifgroup %d", r.SuppressIfgroup)
	}
	return b.String()
}

// routeString formats a route of table through dev like `ip route`.
func routeString(dst netip.Prefix, dev string, table int) string {
	return fmt.Sprintf("%s dev %s table %s", prefixString(dst), dev, tableName(table))
}

// tunnelRoute is the netlink form of "dst dev TUN table T proto static".
func tunnelRoute(dst netip.Prefix, linkIndex, table int) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipNet(dst),
		Table:     table,
		Family:    nlFamily(family(dst.Addr())),
		Protocol:  unix.RTPROT_STATIC,
		Type:      unix.RTN_UNICAST,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if dst.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK // as `ip route add ... dev X` without a gateway
	}
	return r
}

// unreachableRoute is "unreachable dst table T proto static", which
// blocks dst when it cannot be routed into the TUN.
func unreachableRoute(dst netip.Prefix, table int) *netlink.Route {
	return &netlink.Route{
		Dst:      ipNet(dst),
		Table:    table,
		Family:   nlFamily(family(dst.Addr())),
		Protocol: unix.RTPROT_STATIC,
		Type:     unix.RTN_UNREACHABLE,
	}
}

// routeDst returns the destination of a dumped route as a prefix.
func routeDst(r netlink.Route) netip.Prefix {
	if r.Dst == nil {
		if r.Family == unix.AF_INET6 {
			return netip.MustParsePrefix("::/0")
		}
		return netip.MustParsePrefix("0.0.0.0/0")
	}
	p, ok := prefixFromIPNet(r.Dst)
	if !ok {
		return netip.Prefix{}
	}
	return p
}

func prefixString(p netip.Prefix) string {
	if p.Bits() == 0 {
		if p.Addr().Is4() {
			return "default"
		}
		return "default (::/0)"
	}
	return p.String()
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return fmt.Sprint(t)
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func nlFamily(f int) int {
	if f == 4 {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}

// gone reports whether err says the object to delete does not exist
// (any more): rules answer ENOENT, routes ESRCH, addresses EADDRNOTAVAIL,
// links ENODEV or a LinkNotFoundError.
func gone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) ||
		errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV)
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed meanwhile.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		v, err := dump()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return v, err
	}
}
