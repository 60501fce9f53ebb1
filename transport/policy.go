package transport

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/tetherd/tetherd/transport/wire"
)

// Policy decides which destinations the peer may dial. It is checked on the resolved IP
// address at dial time (and again on the socket's connect address), so a host name
// cannot route around it. The zero Policy allows every unicast address except the
// peer's own loopback and link-local ranges (169.254.169.254, the cloud metadata
// address, among them).
type Policy struct {
	// Allow, when not empty, lists the only destinations allowed.
	Allow []netip.Prefix
	// Deny lists destinations always refused (checked after Allow).
	Deny []netip.Prefix
	// AllowLoopback lets clients reach the peer's 127.0.0.0/8 and ::1.
	AllowLoopback bool
	// AllowLinkLocal lets clients reach 169.254.0.0/16 and fe80::/10 (but never the
	// metadata addresses).
	AllowLinkLocal bool
	// AllowPorts, when not empty, lists the only destination ports allowed.
	AllowPorts []PortRange
	// DenyPorts lists destination ports always refused.
	DenyPorts []PortRange
}

// PortRange is an inclusive range of ports.
type PortRange struct{ First, Last uint16 }

// ParsePortRange parses "80" or "8000-8999".
func ParsePortRange(s string) (PortRange, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			a, err1 := strconv.ParseUint(s[:i], 10, 16)
			b, err2 := strconv.ParseUint(s[i+1:], 10, 16)
			if err1 != nil || err2 != nil || a > b {
				return PortRange{}, fmt.Errorf("bad port range %q", s)
			}
			return PortRange{uint16(a), uint16(b)}, nil
		}
	}
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return PortRange{}, fmt.Errorf("bad port %q", s)
	}
	return PortRange{uint16(p), uint16(p)}, nil
}

func (r PortRange) contains(p uint16) bool { return p >= r.First && p <= r.Last }

// metadataAddrs are cloud instance-metadata services, refused whatever the policy says.
func isMetadata(ip netip.Addr) bool {
	return ip == netip.AddrFrom4([4]byte{169, 254, 169, 254}) ||
		ip == netip.AddrFrom4([4]byte{169, 254, 170, 2}) || // ECS task metadata
		ip == netip.MustParseAddr("fd00:ec2::254")
}

// Check returns nil when ip:port may be dialed, else an error that says which rule
// refused it.
func (p *Policy) Check(ip netip.Addr, port uint16) error {
	ip = ip.Unmap()
	deny := func(why string) error {
		return &StreamError{Code: wire.CodeDenied, Reason: fmt.Sprintf("%v denied by policy: %s", netip.AddrPortFrom(ip, port), why)}
	}
	switch {
	case !ip.IsValid() || ip.IsUnspecified():
		return deny("unspecified address")
	case ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return deny("multicast or broadcast")
	case isMetadata(ip):
		return deny("cloud metadata address")
	case port == 0:
		return deny("port 0")
	}
	if p == nil {
		p = &Policy{}
	}
	if !p.AllowLoopback && ip.IsLoopback() {
		return deny("the peer's loopback")
	}
	if !p.AllowLinkLocal && (ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()) {
		return deny("link-local")
	}
	if len(p.Allow) > 0 {
		ok := false
		for _, pre := range p.Allow {
			if pre.Contains(ip) {
				ok = true
				break
			}
		}
		if !ok {
			return deny("not in the allow list")
		}
	}
	for _, pre := range p.Deny {
		if pre.Contains(ip) {
			return deny("in deny " + pre.String())
		}
	}
	if len(p.AllowPorts) > 0 {
		ok := false
		for _, r := range p.AllowPorts {
			if r.contains(port) {
				ok = true
				break
			}
		}
		if !ok {
			return deny("port not allowed")
		}
	}
	for _, r := range p.DenyPorts {
		if r.contains(port) {
			return deny("port denied")
		}
	}
	return nil
}
