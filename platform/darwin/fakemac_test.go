package darwin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fakeMac is a small model of what route, ifconfig and scutil change on a
// Mac: routes (by destination, as BSD matches them), the utun's addresses
// and the dynamic store's keys. It interprets the commands the router
// runs, so that tests can check that Close and Down return the system to
// where it was, after every way Up can stop.
type fakeMac struct {
	mu       sync.Mutex
	routes   map[netip.Prefix]string // destination -> "via GW dev IF" or "dev IF"
	addrs    map[netip.Addr]bool     // addresses on the utun
	keys     map[string]string       // dynamic store
	tunAlive bool
	pf       fakePF
	// failAt makes the nth changing command (counted from 1) fail.
	failAt, changes int
}

func newFakeMac() *fakeMac {
	m := &fakeMac{routes: map[netip.Prefix]string{}, addrs: map[netip.Addr]bool{}, keys: map[string]string{}, tunAlive: true}
	m.routes[netip.MustParsePrefix("0.0.0.0/0")] = "via 192.168.1.1 dev en0"
	m.routes[netip.MustParsePrefix("::/0")] = "via fe80::1%en0 dev en0"
	m.routes[netip.MustParsePrefix("192.168.1.0/24")] = "dev en0"
	m.routes[netip.MustParsePrefix("2001:db8:1::/64")] = "dev en0"
	m.keys["State:/Network/Service/USER-WIFI/DNS"] = "192.168.1.1"
	return m
}

// state is everything the model holds, sorted, for comparisons.
func (m *fakeMac) state() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for p, v := range m.routes {
		out = append(out, "route "+p.String()+" "+v)
	}
	for a := range m.addrs {
		out = append(out, "addr "+a.String())
	}
	for k, v := range m.keys {
		out = append(out, "key "+k+" = "+v)
	}
	out = append(out, m.pf.state()...)
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// destroyTUN is the kernel detaching the utun: its addresses and routes go.
func (m *fakeMac) destroyTUN() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tunAlive = false
	clear(m.addrs)
	for p, v := range m.routes {
		if strings.HasSuffix(v, "dev "+testTUN) {
			delete(m.routes, p)
		}
	}
}

func (m *fakeMac) ifIndex(name string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name == testTUN && m.tunAlive {
		return testTUNIndex, nil
	}
	return fakeIfIndex(name)
}

func (m *fakeMac) respond(line, stdin string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := strings.Fields(line)
	changing := !(f[0] == routeCmd && f[2] == "get") && !(f[0] == scutilCmd && !strings.Contains(stdin, "set ") && !strings.Contains(stdin, "remove ")) &&
		!(f[0] == pfctlCmd && f[1] == "-s")
	if changing {
		m.changes++
		if m.changes == m.failAt {
			return nil, &CommandError{Command: line, Err: errors.New("exit status 1"), Output: "injected failure"}
		}
	}
	switch f[0] {
	case routeCmd:
		return m.route(line, f[2], f[3] == "-inet6", f[4], f[5:])
	case ifconfigCmd:
		return m.ifconfig(f[1], f[2:])
	case scutilCmd:
		return m.scutil(stdin), nil
	case pfctlCmd:
		return m.pf.pfctl(line, f[1:], stdin)
	}
	return nil, fmt.Errorf("unexpected command %s", line)
}

func (m *fakeMac) route(line, verb string, v6 bool, dst string, rest []string) ([]byte, error) {
	fail := func(msg string) ([]byte, error) { return nil, routeError(line, msg) }
	var p netip.Prefix
	switch {
	case dst == "default" && v6:
		p = netip.MustParsePrefix("::/0")
	case dst == "default":
		p = netip.MustParsePrefix("0.0.0.0/0")
	case strings.Contains(dst, "/"):
		p = netip.MustParsePrefix(dst)
	default:
		p = netip.PrefixFrom(netip.MustParseAddr(dst), map[bool]int{false: 32, true: 128}[v6])
	}
	switch verb {
	case "get":
		if dst != "default" && !strings.Contains(dst, "/") {
			// The longest match for an address.
			best, ok := netip.Prefix{}, false
			for q := range m.routes {
				if q.Addr().Is6() == v6 && q.Contains(p.Addr()) && (!ok || q.Bits() > best.Bits()) {
					best, ok = q, true
				}
			}
			if !ok {
				return fail("not in table")
			}
			p = best
		}
		v, ok := m.routes[p]
		if !ok {
			return fail("not in table")
		}
		return []byte(routeGetOutput(p, v)), nil
	case "add":
		if _, ok := m.routes[p]; ok {
			return fail("File exists")
		}
		if rest[0] == "-interface" {
			if rest[1] == testTUN && !m.tunAlive {
				return fail("Network is unreachable")
			}
			m.routes[p] = "dev " + rest[1]
		} else {
			m.routes[p] = "via " + rest[0] + " dev en0"
		}
		return nil, nil
	case "delete":
		if _, ok := m.routes[p]; !ok {
			return fail("not in table")
		}
		delete(m.routes, p)
		return nil, nil
	}
	return nil, fmt.Errorf("route %s?", verb)
}

func routeGetOutput(p netip.Prefix, v string) string {
	var b strings.Builder
	dst := p.Addr().String()
	if p.Bits() == 0 {
		dst = "default"
	}
	fmt.Fprintf(&b, "   route to: %s\ndestination: %s\n", dst, dst)
	if p.Bits() == 0 {
		b.WriteString("       mask: default\n")
	} else if p.Bits() < p.Addr().BitLen() {
		fmt.Fprintf(&b, "       mask: %s\n", net.IP(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
	}
	f := strings.Fields(v)
	if f[0] == "via" {
		fmt.Fprintf(&b, "    gateway: %s\n", f[1])
	}
	fmt.Fprintf(&b, "  interface: %s\n      flags: <UP,DONE,STATIC>\n", f[len(f)-1])
	return b.String()
}

func (m *fakeMac) ifconfig(name string, args []string) ([]byte, error) {
	if name != testTUN || !m.tunAlive {
		return nil, &CommandError{Command: "ifconfig", Err: errors.New("exit status 1"), Output: "ifconfig: interface " + name + " does not exist"}
	}
	switch {
	case args[0] == "mtu" || args[0] == "up":
	case slices.Contains(args, "-alias"):
		a := netip.MustParseAddr(args[1])
		if !m.addrs[a] {
			return nil, &CommandError{Command: "ifconfig", Err: errors.New("exit status 1"), Output: "ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address"}
		}
		delete(m.addrs, a)
		if a.Is6() {
			delete(m.routes, netip.PrefixFrom(a, 64).Masked()) // the kernel's prefix route
		}
	case args[len(args)-1] == "alias":
		a := netip.MustParseAddr(args[1])
		m.addrs[a] = true
		if a.Is6() {
			// Like the kernel: an IPv6 address brings its prefix route.
			m.routes[netip.PrefixFrom(a, 64).Masked()] = "dev " + testTUN
		}
	default:
		return nil, fmt.Errorf("ifconfig %v?", args)
	}
	return nil, nil
}

func (m *fakeMac) scutil(stdin string) []byte {
	var out strings.Builder
	var servers string
	for line := range strings.Lines(stdin) {
		f := strings.Fields(line)
		switch {
		case len(f) > 3 && f[1] == "ServerAddresses":
			servers = strings.Join(f[3:], " ")
		case len(f) == 2 && f[0] == "set":
			m.keys[f[1]] = servers
		case len(f) == 2 && f[0] == "remove":
			if _, ok := m.keys[f[1]]; !ok {
				out.WriteString("  remove: failed (no such key)\n")
			}
			delete(m.keys, f[1])
		case len(f) == 2 && f[0] == "show":
			if v, ok := m.keys[f[1]]; ok {
				fmt.Fprintf(&out, "<dictionary> {\n  ServerAddresses : %s\n}\n", v)
			} else {
				out.WriteString("  No such key\n")
			}
		}
	}
	return []byte(out.String())
}

func (m *fakeMac) options(t *testing.T) Options {
	return Options{Runner: &fakeRunner{respond: m.respond}, ifIndex: m.ifIndex, Logger: testOptions(t, nil, new(bool)).Logger}
}

// Up and then Close leave the system as it was; so do Up, a crash and
// Down; and so does an Up that fails at any of its changes.
func TestFakeMacRestores(t *testing.T) {
	m := newFakeMac()
	before := m.state()

	dir := t.TempDir()
	r, err := Up(fullConfig(dir), m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	during := m.state()
	for _, want := range []string{
		"route 0.0.0.0/1 dev utun7", "route 128.0.0.0/1 dev utun7", "route ::/1 dev utun7", "route 8000::/1 dev utun7",
		"route 203.0.113.7/32 via 192.168.1.1 dev en0", "route 0.0.0.0/0 via 192.168.1.1 dev en0",
		"key " + DNSKey + " = 10.255.77.2 fd74:6574:6865:7264::53", "key State:/Network/Service/USER-WIFI/DNS = 192.168.1.1",
	} {
		if !strings.Contains(during, want+"\n") && !strings.HasSuffix(during, want) {
			t.Errorf("while up, missing %q in\n%s", want, during)
		}
	}
	if strings.Contains(during, "192.168.1.50") {
		t.Errorf("the peer on the LAN got a route:\n%s", during)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := m.state(); got != before {
		t.Errorf("after Close:\n%s\nwant:\n%s", got, before)
	}

	// Crash: the utun goes with the process; Down restores the rest.
	r, err = Up(fullConfig(dir), m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	crash(t, r)
	m.destroyTUN()
	if _, err := Down(dir, m.options(t)); err != nil {
		t.Fatal(err)
	}
	if got := m.state(); got != before {
		t.Errorf("after a crash and Down:\n%s\nwant:\n%s", got, before)
	}
}

func TestFakeMacFailureAtEveryStep(t *testing.T) {
	// Count the changing commands of a successful Up.
	probe := newFakeMac()
	r, err := Up(fullConfig(t.TempDir()), probe.options(t))
	if err != nil {
		t.Fatal(err)
	}
	n := probe.changes
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d changes counted", n)
	}
	for k := 1; k <= n; k++ {
		m := newFakeMac()
		before := m.state()
		m.failAt = k
		dir := t.TempDir()
		if _, err := Up(fullConfig(dir), m.options(t)); err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("failure at change %d: Up: %v", k, err)
		}
		if got := m.state(); got != before {
			t.Errorf("failure at change %d left:\n%s\nwant:\n%s", k, got, before)
		}
		if lines, err := Down(dir, m.options(t)); err != nil || lines != nil {
			t.Errorf("failure at change %d: a journal was left: %q, %v", k, lines, err)
		}
	}
}

// An Include network that is routed already is left alone (and not
// removed later); a half of the full tunnel that is taken fails Up.
func TestFakeMacExistingRoutes(t *testing.T) {
	m := newFakeMac()
	before := m.state()
	cfg := fullConfig(t.TempDir())
	cfg.Include = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.0.0.0/8")}
	r, err := Up(cfg, m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.state(); !strings.Contains(got, "route 192.168.1.0/24 dev en0\n") || !strings.Contains(got, "route 10.0.0.0/8 dev utun7\n") {
		t.Errorf("while up:\n%s", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := m.state(); got != before {
		t.Errorf("after Close:\n%s\nwant:\n%s", got, before)
	}

	m.routes[netip.MustParsePrefix("128.0.0.0/1")] = "dev utun3" // another VPN
	before = m.state()
	if _, err := Up(fullConfig(t.TempDir()), m.options(t)); err == nil || !strings.Contains(err.Error(), "another VPN") {
		t.Errorf("Up over another VPN's half: %v", err)
	}
	if got := m.state(); got != before {
		t.Errorf("after the failed Up:\n%s\nwant:\n%s", got, before)
	}
}

// roam moves the fake Mac to another network: another LAN and gateway.
func roam(m *fakeMac) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routes[netip.MustParsePrefix("0.0.0.0/0")] = "via 10.0.0.1 dev en0"
	delete(m.routes, netip.MustParsePrefix("192.168.1.0/24"))
	m.routes[netip.MustParsePrefix("10.0.0.0/24")] = "dev en0"
}

// Refresh moves the Exclude routes to a new gateway, and follows an IPv6
// default route going and coming back; the journal keeps up, so that a
// crash afterwards is restored too.
func TestFakeMacRefresh(t *testing.T) {
	m := newFakeMac()
	dir := t.TempDir()
	r, err := Up(fullConfig(dir), m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	unchanged := m.state()

	roam(m)
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got := m.state()
	if !strings.Contains(got, "route 203.0.113.7/32 via 10.0.0.1 dev en0\n") || strings.Contains(got, "via 192.168.1.1") {
		t.Errorf("after roaming:\n%s", got)
	}
	if got == unchanged {
		t.Error("nothing moved")
	}

	// IPv6 goes away: the excluded IPv6 route with it; it comes back.
	m.mu.Lock()
	v6 := m.routes[netip.MustParsePrefix("::/0")]
	delete(m.routes, netip.MustParsePrefix("::/0"))
	m.mu.Unlock()
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.state(); strings.Contains(got, "2001:db8::7") {
		t.Errorf("IPv6 exclusion kept without an IPv6 default route:\n%s", got)
	}
	m.mu.Lock()
	m.routes[netip.MustParsePrefix("::/0")] = v6
	m.mu.Unlock()
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.state(); !strings.Contains(got, "route 2001:db8::7/128 via fe80::1%en0 dev en0\n") {
		t.Errorf("IPv6 exclusion not back:\n%s", got)
	}

	// A crash now: Down restores the moved routes.
	crash(t, r)
	m.destroyTUN()
	if _, err := Down(dir, m.options(t)); err != nil {
		t.Fatal(err)
	}
	ref := newFakeMac()
	roam(ref)
	if got, want := m.state(), ref.state(); got != want {
		t.Errorf("after roaming, a crash and Down:\n%s\nwant:\n%s", got, want)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Errorf("Refresh after Close: %v", err)
	}
}

// The peer's own route decides its interface: a phone on a link beside
// the default one (USB, a second Wi-Fi) is dialed there.
func TestFakeMacBinderDestinations(t *testing.T) {
	m := newFakeMac()
	m.routes[netip.MustParsePrefix("172.20.10.0/28")] = "dev en7"
	cfg := fullConfig(t.TempDir())
	cfg.Exclude = append(cfg.Exclude, netip.MustParsePrefix("172.20.10.1/32"))
	r, err := Up(cfg, m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec := &bindRecorder{}
	b := NewBinder(BinderOptions{
		Ignore:       testTUN,
		Runner:       &fakeRunner{respond: m.respond},
		Destinations: []netip.Addr{netip.MustParseAddr("172.20.10.1"), netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")},
		ifIndex:      m.ifIndex,
		bind:         rec.bind,
	})
	if _, err := b.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct{ network, addr, want string }{
		{"tcp4", "172.20.10.1:8443", "IP_BOUND_IF=9"},    // en7, the phone's link
		{"tcp4", "203.0.113.7:8443", "IP_BOUND_IF=4"},    // en0, through the exclusion route
		{"tcp6", "[2001:db8::7]:443", "IPV6_BOUND_IF=4"}, // en0
		{"tcp4", "198.51.100.1:443", "IP_BOUND_IF=4"},    // not a destination: the default
	} {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := c.(*net.UDPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Control(tc.network, tc.addr, rc); err != nil {
			t.Errorf("%s: %v", tc.addr, err)
		}
		c.Close()
		if got := rec.last(); got != tc.want {
			t.Errorf("%s bound with %s, want %s", tc.addr, got, tc.want)
		}
	}
}
