package darwin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// defaultRoute is a default route as `route -n get` reports it.
type defaultRoute struct {
	// Gateway is the next hop; invalid for a route through an interface
	// without a gateway (a point-to-point link).
	Gateway netip.Addr
	// Interface is the interface name, e.g. en0.
	Interface string
}

func (d *defaultRoute) String() string {
	if d == nil {
		return "none"
	}
	if d.Gateway.IsValid() {
		return fmt.Sprintf("via %s dev %s", d.Gateway, d.Interface)
	}
	return "dev " + d.Interface
}

// familyFlag is route(8)'s address family option.
func familyFlag(v6 bool) string {
	if v6 {
		return "-inet6"
	}
	return "-inet"
}

// getDefaultRoute asks `route -n get -inet[6] default` for the default
// route of one family. It returns nil, nil when there is none. The
// question names the default route itself (destination and mask 0), so
// the split routes of the tunnel, which only cover it, do not answer it.
func getDefaultRoute(ctx context.Context, r Runner, v6 bool) (*defaultRoute, error) {
	out, err := runRoute(ctx, r, "-n", "get", familyFlag(v6), "default")
	if err != nil {
		if notInTable(err) {
			return nil, nil
		}
		return nil, err
	}
	return parseRouteGet(out)
}

// parseRouteGet parses the output of `route -n get`: "key: value" lines,
// of which it needs gateway and interface.
func parseRouteGet(out []byte) (*defaultRoute, error) {
	d := &defaultRoute{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "gateway":
			// An address, or the interface's link address ("link#12") for
			// a route without a gateway.
			if a, err := netip.ParseAddr(strings.TrimSpace(v)); err == nil {
				d.Gateway = a.Unmap()
			}
		case "interface":
			d.Interface = strings.TrimSpace(v)
		}
	}
	if d.Interface == "" {
		return nil, fmt.Errorf("no interface in the output of route get: %q", out)
	}
	if !ifName.MatchString(d.Interface) {
		return nil, fmt.Errorf("route get: %q is not an interface name", d.Interface)
	}
	return d, nil
}

// runRoute runs route(8). route reports a failed change of the routing
// table on standard error ("route: writing to routing socket: File
// exists"), and not every version exits non-zero for it: such a line is an
// error here whatever the exit status.
func runRoute(ctx context.Context, r Runner, args ...string) ([]byte, error) {
	out, err := r.Run(ctx, "", routeCmd, args...)
	if err == nil && bytes.Contains(out, []byte("routing socket:")) {
		err = &CommandError{Command: commandLine(routeCmd, args), Err: errRouteFailed, Output: string(bytes.TrimSpace(out))}
	}
	return out, err
}

var errRouteFailed = errors.New("route reported an error")

// notInTable reports whether err is route(8) saying that the route does
// not exist ("not in table"; ESRCH).
func notInTable(err error) bool {
	var ce *CommandError
	return errors.As(err, &ce) && strings.Contains(ce.Output, "not in table")
}

// routeExists reports whether err is route(8) saying that the route to add
// already exists ("File exists"; EEXIST).
func routeExists(err error) bool {
	var ce *CommandError
	return errors.As(err, &ce) && strings.Contains(ce.Output, "File exists")
}

// routeInfo is the route that `route -n get ADDRESS` finds for an address.
type routeInfo struct {
	// Dst is the route's destination; its Bits are 0 for the default route.
	Dst       netip.Prefix
	Interface string
}

// getRoute asks `route -n get -inet[6] ADDR` which route the system uses
// for addr. It returns nil, nil when there is none.
func getRoute(ctx context.Context, r Runner, addr netip.Addr) (*routeInfo, error) {
	out, err := runRoute(ctx, r, "-n", "get", familyFlag(addr.Is6()), addr.String())
	if err != nil {
		if notInTable(err) {
			return nil, nil
		}
		return nil, err
	}
	return parseRouteInfo(out, addr.Is6())
}

// parseRouteInfo parses the destination, mask and interface lines of
// `route -n get`. A host route has no mask line.
func parseRouteInfo(out []byte, v6 bool) (*routeInfo, error) {
	var dst, mask, ifname string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		// Values may contain colons (IPv6): split at the first only.
		switch strings.TrimSpace(k) {
		case "destination":
			dst = strings.TrimSpace(v)
		case "mask":
			mask = strings.TrimSpace(v)
		case "interface":
			ifname = strings.TrimSpace(v)
		}
	}
	if dst == "" || ifname == "" {
		return nil, fmt.Errorf("no destination or interface in the output of route get: %q", out)
	}
	if !ifName.MatchString(ifname) {
		return nil, fmt.Errorf("route get: %q is not an interface name", ifname)
	}
	bits := 32
	zero := netip.IPv4Unspecified()
	if v6 {
		bits, zero = 128, netip.IPv6Unspecified()
	}
	if dst == "default" {
		return &routeInfo{Dst: netip.PrefixFrom(zero, 0), Interface: ifname}, nil
	}
	a, err := netip.ParseAddr(dst)
	if err != nil && !v6 && strings.Count(dst, ".") < 3 {
		// Some versions shorten a network's trailing zero bytes: 10.1.
		a, err = netip.ParseAddr(dst + strings.Repeat(".0", 3-strings.Count(dst, ".")))
	}
	if err != nil {
		return nil, fmt.Errorf("route get: destination %q: %w", dst, err)
	}
	a = a.WithZone("")
	if !v6 {
		a = a.Unmap()
	}
	if a.Is6() != v6 {
		return nil, fmt.Errorf("route get: destination %q is not of the family asked about", dst)
	}
	if mask != "" {
		if mask == "default" {
			bits = 0
		} else if m, err := netip.ParseAddr(mask); err == nil {
			bits = maskBits(m.AsSlice())
		} else {
			return nil, fmt.Errorf("route get: mask %q: %w", mask, err)
		}
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return nil, err
	}
	return &routeInfo{Dst: p, Interface: ifname}, nil
}

// maskBits counts the leading ones of a netmask.
func maskBits(m []byte) int {
	n := 0
	for _, b := range m {
		for i := 7; i >= 0; i-- {
			if b&(1<<i) == 0 {
				return n
			}
			n++
		}
	}
	return n
}
