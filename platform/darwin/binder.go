package darwin

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
)

// BinderOptions configures NewBinder.
type BinderOptions struct {
	// Ignore is the tunnel's utun: a default route through it is not the
	// physical interface.
	Ignore string
	// Logger receives the interfaces chosen; nil discards them.
	Logger *zap.Logger
	// Runner runs route(8); nil means os/exec.
	Runner Runner
	// Destinations are the peer's addresses. Each is bound to the
	// interface of its own route (outside the tunnel: Up routes excluded
	// addresses around it), which is not the default one for a phone on
	// a USB or Wi-Fi link beside the default route; others, and these
	// while their route is unknown, to the default interface.
	Destinations []netip.Addr

	// Seams for tests; the zero values are the real thing.
	ifIndex func(name string) (int, error)               // nil: net.InterfaceByName
	bind    func(fd uintptr, v6 bool, ifindex int) error // nil: bindToInterface (IP_BOUND_IF)
}

// Binder keeps the tunnel's own connection to the peer on a physical
// interface, so that it can never loop into the tunnel: its Control
// method, the Control hook of a net.Dialer, binds every socket to the
// interface of the destination's own route if it is one of
// BinderOptions.Destinations, else to the interface of the default route
// of its family (IP_BOUND_IF, IPV6_BOUND_IF). A bound socket is routed by
// that interface's scoped routes, which the tunnel's routes are not.
//
// Refresh looks the interfaces up again; call it whenever the network
// changes (WatchOptions.Refresh), so that the next dial uses the new one.
// The zero Binder is not usable: use NewBinder.
type Binder struct {
	o      BinderOptions
	log    *zap.Logger
	v4, v6 atomic.Int64 // interface index; 0: no default route
	names  atomic.Pointer[[2]string]
	dests  atomic.Pointer[map[netip.Addr]destIf] // Destinations with a route outside the tunnel
}

// destIf is the interface of a destination's route.
type destIf struct {
	name  string
	index int
}

// NewBinder returns a Binder that knows no interface yet: call Refresh.
func NewBinder(o BinderOptions) *Binder {
	b := &Binder{o: o, log: o.Logger}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	if b.o.Runner == nil {
		b.o.Runner = execRunner{timeout: commandTimeout}
	}
	if b.o.ifIndex == nil {
		b.o.ifIndex = func(name string) (int, error) {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return 0, err
			}
			return ifi.Index, nil
		}
	}
	if b.o.bind == nil {
		b.o.bind = bindToInterface
	}
	b.names.Store(&[2]string{})
	b.dests.Store(&map[netip.Addr]destIf{})
	return b
}

// Refresh looks up the default route of each family (`route -n get
// default`) and the route of each destination (`route -n get ADDR`), and
// binds later sockets to their interfaces. A family without a default
// route outside the tunnel gets no interface: dials of that family to
// other addresses fail until the next Refresh. It reports whether an
// interface changed.
func (b *Binder) Refresh(ctx context.Context) (changed bool, err error) {
	var names [2]string
	var idx [2]int64
	for i, v6 := range []bool{false, true} {
		d, err := getDefaultRoute(ctx, b.o.Runner, v6)
		if err != nil {
			return false, fmt.Errorf("read the default route: %w", err)
		}
		if d == nil || d.Interface == b.o.Ignore {
			continue
		}
		n, err := b.o.ifIndex(d.Interface)
		if err != nil {
			return false, fmt.Errorf("default interface %s: %w", d.Interface, err)
		}
		names[i], idx[i] = d.Interface, int64(n)
	}
	dests := map[netip.Addr]destIf{}
	for _, a := range b.o.Destinations {
		ri, err := getRoute(ctx, b.o.Runner, a)
		if err != nil {
			return false, fmt.Errorf("route of %s: %w", a, err)
		}
		if ri == nil || ri.Interface == b.o.Ignore {
			continue
		}
		n, err := b.o.ifIndex(ri.Interface)
		if err != nil {
			return false, fmt.Errorf("interface %s of %s: %w", ri.Interface, a, err)
		}
		dests[a.Unmap()] = destIf{ri.Interface, n}
	}
	c4 := b.v4.Swap(idx[0]) != idx[0]
	c6 := b.v6.Swap(idx[1]) != idx[1]
	prevDests := b.dests.Swap(&dests)
	if prev := b.names.Swap(&names); c4 || c6 || *prev != names || !maps.Equal(*prevDests, dests) {
		fields := []zap.Field{zap.String("ipv4", names[0]), zap.String("ipv6", names[1])}
		for a, d := range dests {
			fields = append(fields, zap.String(a.String(), d.name))
		}
		b.log.Info("tunnel socket bound to the default interfaces", fields...)
		return true, nil
	}
	return false, nil
}

// Interfaces returns the interface indexes sockets are bound to, 0 for
// none.
func (b *Binder) Interfaces() (v4, v6 int) { return int(b.v4.Load()), int(b.v6.Load()) }

// Control binds the socket to the default interface of its family; it
// is a net.Dialer Control function. It fails when that family has no
// default route outside the tunnel: an unbound socket could enter it.
func (b *Binder) Control(network, address string, c syscall.RawConn) error {
	v6 := strings.HasSuffix(network, "6")
	idx, fam := b.v4.Load(), "IPv4"
	if v6 {
		idx, fam = b.v6.Load(), "IPv6"
	}
	if ap, err := netip.ParseAddrPort(address); err == nil {
		if d, ok := (*b.dests.Load())[ap.Addr().Unmap()]; ok {
			idx = int64(d.index)
		}
	}
	if idx == 0 {
		return fmt.Errorf("no %s default route outside the tunnel: not dialing %s %s", fam, network, address)
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = b.o.bind(fd, v6, int(idx)) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("bind %s socket to %s to interface %d: %w", network, address, idx, serr)
	}
	return nil
}
