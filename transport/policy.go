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

// isMetadata reports the cloud instance-metadata and host-agent services, refused
// whatever the policy says: reaching them from a client would hand it the machine's
// cloud credentials. Most sit in 169.254.0.0/16, which the default policy refuses
// anyway; these stay refused when AllowLinkLocal is set, and the ones outside it are
// refused always.
func isMetadata(ip netip.Addr) bool {
	for _, m := range [...]netip.Addr{
		netip.AddrFrom4([4]byte{169, 254, 169, 254}),                           // AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
		netip.AddrFrom4([4]byte{169, 254, 170, 2}),                             // AWS ECS task metadata
		netip.AddrFrom4([4]byte{169, 254, 170, 23}),                            // AWS EKS pod identity agent
		netip.AddrFrom4([4]byte{169, 254, 0, 23}),                              // Tencent Cloud
		netip.AddrFrom4([4]byte{100, 100, 100, 200}),                           // Alibaba Cloud
		netip.AddrFrom4([4]byte{168, 63, 129, 16}),                             // Azure WireServer
		netip.AddrFrom16([16]byte{0xfd, 0x00, 0x0e, 0xc2, 14: 0x02, 15: 0x54}), // fd00:ec2::254, AWS IPv6
		netip.AddrFrom16([16]byte{0xfd, 0x00, 0x0e, 0xc2, 15: 0x23}),           // fd00:ec2::23, AWS EKS IPv6
	} {
		if ip == m {
			return true
		}
	}
	return false
}

// nat64Embedded returns the IPv4 address inside an address of the well-known NAT64
// prefix 64:ff9b::/96 (RFC 6052), which reaches that IPv4 address through the
// network's translator, so the policy judges it as that address.
func nat64Embedded(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	if [12]byte(b[:12]) != [12]byte{0x00, 0x64, 0xff, 0x9b} {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(b[12:])), true
}

// Check returns nil when ip:port may be dialed, else an error that says which rule
// refused it.
func (p *Policy) Check(ip netip.Addr, port uint16) error {
	ip = ip.Unmap().WithZone("")
	deny := func(why string) error {
		return &StreamError{Code: wire.CodeDenied, Reason: fmt.Sprintf("%v denied by policy: %s", netip.AddrPortFrom(ip, port), why)}
	}
	if v4, ok := nat64Embedded(ip); ok {
		// Judged by every rule but the allow list, which may name the NAT64 prefix.
		var q Policy
		if p != nil {
			q = *p
		}
		q.Allow = nil
		if err := q.Check(v4, port); err != nil {
			return deny("NAT64 form of " + v4.String() + ", which is refused")
		}
	}
	switch {
	case !ip.IsValid() || ip.IsUnspecified() || ip.Is4() && ip.As4()[0] == 0: // 0.0.0.0/8 may reach the peer itself
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
