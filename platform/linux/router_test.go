//go:build linux

package linux

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// The tests that touch networking run in a network namespace of their own,
// created with `ip netns add` (so that no thread of the test binary ever
// enters it) and deleted in t.Cleanup, also when the test fails. Inside:
//
//	lo        up
//	tun0      a real TUN (persistent, no process attached: no carrier), down,
//	          MTU 1500 - it stands in for the TUN the caller creates. (A
//	          dummy link would do as well, but CONFIG_DUMMY is not in every
//	          kernel; /dev/net/tun is, wherever tetherd runs.)
//	uplink0   veth (peer uplink0p), up, 192.0.2.2/24 and 2001:db8:1::2/64,
//	          default routes via 192.0.2.1 and 2001:db8:1::1 in main: the
//	          "LAN" and the way out that the marked tunnel socket takes.
type testNS struct {
	name   string
	h      *netlink.Handle
	tun    int // ifindex of tun0
	uplink int // ifindex of uplink0
}

const (
	testTUN   = "tun0"
	testMark  = 0x7170
	testTable = 7170
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command to create network namespaces")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newTestNS(t *testing.T) *testNS {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("tetherd-test-%d", rand.Uint32())
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	n := &testNS{name: name, h: h}

	lo, err := h.LinkByName("lo")
	must(t, err)
	must(t, h.LinkSetUp(lo))
	n.addTUN(t)

	must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink0"}, PeerName: "uplink0p"}))
	up, err := h.LinkByName("uplink0")
	must(t, err)
	peer, err := h.LinkByName("uplink0p")
	must(t, err)
	// No link-local addresses: they appear asynchronously after DAD and
	// would make the baseline racy.
	must(t, h.LinkSetIP6AddrGenMode(up, 1 /* IN6_ADDR_GEN_MODE_NONE */))
	must(t, h.LinkSetIP6AddrGenMode(peer, 1))
	must(t, h.LinkSetUp(up))
	must(t, h.LinkSetUp(peer))
	must(t, h.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.0.2.2/24"))}))
	must(t, h.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("2001:db8:1::2/64")), Flags: unix.IFA_F_NODAD}))
	must(t, h.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.ParseIP("192.0.2.1")}))
	must(t, h.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("::/0")), Gw: net.ParseIP("2001:db8:1::1")}))
	n.uplink = up.Attrs().Index
	n.waitLocalRoute(t, "2001:db8:1::2")
	return n
}

// waitLocalRoute waits for the local-table route of an IPv6 address,
// which the kernel adds from a work queue after the address.
func (n *testNS) waitLocalRoute(t *testing.T, addr string) {
	t.Helper()
	want := net.ParseIP(addr)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		routes, err := n.h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
		must(t, err)
		if slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.IP.Equal(want) }) {
			return
		}
	}
	t.Fatalf("no local route for %s after 5s", addr)
}

// addTUN creates tun0 (again).
func (n *testNS) addTUN(t *testing.T) {
	t.Helper()
	run(t, "ip", "-n", n.name, "tuntap", "add", "mode", "tun", "name", testTUN)
	l, err := n.h.LinkByName(testTUN)
	must(t, err)
	n.tun = l.Attrs().Index
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeRunner records commands instead of running them; fail makes the
// command whose text starts with it fail.
type fakeRunner struct {
	cmds []string
	fail string
}

func (f *fakeRunner) run(name string, args ...string) error {
	cmd := strings.Join(append([]string{name}, args...), " ")
	f.cmds = append(f.cmds, cmd)
	if f.fail != "" && strings.HasPrefix(cmd, f.fail) {
		return fmt.Errorf("%s: injected failure", cmd)
	}
	return nil
}

// testEnv is a namespace, a journal directory and a resolv.conf.
type testEnv struct {
	*testNS
	dir        string // journal directory
	resolvConf string
	run        *fakeRunner
}

const origResolvConf = "# the LAN's resolver\nnameserver 192.0.2.1\nsearch lan.example\noptions edns0 trust-ad\n"

func newTestEnv(t *testing.T) *testEnv {
	n := newTestNS(t)
	tmp := t.TempDir()
	rc := filepath.Join(tmp, "resolv.conf")
	must(t, os.WriteFile(rc, []byte(origResolvConf), 0o640))
	return &testEnv{testNS: n, dir: filepath.Join(tmp, "run", "tetherd"), resolvConf: rc, run: &fakeRunner{}}
}

func (te *testEnv) opts(t *testing.T) Options {
	return Options{Handle: te.h, Logger: zaptest.NewLogger(t), run: te.run, resolvedActive: func(string) bool { return false }}
}

// fullConfig is a full tunnel with LAN bypass, two exclusions and DNS in
// resolv.conf mode.
func (te *testEnv) fullConfig() Config {
	return Config{
		TUN:        testTUN,
		MTU:        1280,
		Addrs:      []netip.Prefix{netip.MustParsePrefix("100.100.100.1/30"), netip.MustParsePrefix("fd7e:7e7d::1/64")},
		Exclude:    []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:ee::/48")},
		LANBypass:  true,
		DNS:        []netip.Addr{netip.MustParseAddr("100.100.100.2"), netip.MustParseAddr("fd7e:7e7d::2")},
		DNSMode:    DNSResolvConf,
		ResolvConf: te.resolvConf,
		JournalDir: te.dir,
	}
}

// up runs Up and closes the Router at the end of the test unless the test
// did (or abandoned it).
func up(t *testing.T, cfg Config, opts Options) *Router {
	t.Helper()
	r, err := Up(cfg, opts)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// abandon simulates the death of the process that owns r (SIGKILL): the
// kernel closes its descriptors, which releases the journal lock, and
// nothing is restored.
func abandon(r *Router) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.store.release()
	r.env.close()
}

// state is everything Up may touch, as text: rules and routes of both
// families in all tables, links, addresses, resolv.conf (bytes, mode,
// inode) and the journal directory.
func (te *testEnv) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(dumpRules(t, te.h))
	b.WriteString(dumpRoutes(t, te.h, unix.RT_TABLE_UNSPEC))
	links, err := te.h.LinkList()
	must(t, err)
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		lines = append(lines, fmt.Sprintf("link %s mtu %d up=%v", a.Name, a.MTU, a.Flags&net.FlagUp != 0))
		addrs, err := te.h.AddrList(l, netlink.FAMILY_ALL)
		must(t, err)
		for _, ad := range addrs {
			lines = append(lines, fmt.Sprintf("addr %v dev %s", ad.IPNet, a.Name))
		}
	}
	slices.Sort(lines)
	b.WriteString(strings.Join(lines, "\n") + "\n")
	if fi, err := os.Stat(te.resolvConf); err == nil {
		data, err := os.ReadFile(te.resolvConf)
		must(t, err)
		fmt.Fprintf(&b, "resolv.conf %v ino %d:\n%s", fi.Mode(), fi.Sys().(*syscall.Stat_t).Ino, data)
	} else {
		fmt.Fprintf(&b, "resolv.conf: %v\n", err)
	}
	if _, err := os.Stat(filepath.Join(te.dir, journalName)); err == nil {
		b.WriteString("journal present\n")
	}
	return b.String()
}

func dumpRules(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	var b strings.Builder
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(fam)
		must(t, err)
		for _, r := range rules {
			b.WriteString(formatRule(r) + "\n")
		}
	}
	return b.String()
}

// dumpRoutes returns the routes of table (all tables if RT_TABLE_UNSPEC)
// of both families, sorted, like `ip route show table all`.
func dumpRoutes(t *testing.T, h *netlink.Handle, table int) string {
	t.Helper()
	names := map[int]string{}
	links, err := h.LinkList()
	must(t, err)
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var lines []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		must(t, err)
		for _, r := range routes {
			s := fmt.Sprintf("ipv%d table %s %s %s", map[int]int{unix.AF_INET: 4, unix.AF_INET6: 6}[r.Family],
				tableName(r.Table), routeTypes[int(r.Type)], prefixString(routeDst(r)))
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			if r.LinkIndex != 0 {
				s += " dev " + names[r.LinkIndex]
			}
			s += fmt.Sprintf(" proto %d scope %d", r.Protocol, r.Scope)
			if r.Src != nil {
				s += " src " + r.Src.String()
			}
			if r.Priority != 0 {
				s += fmt.Sprintf(" metric %d", r.Priority)
			}
			lines = append(lines, s)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

var routeTypes = map[int]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_UNREACHABLE: "unreachable",
}

func diffText(t *testing.T, what, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var d []string
	for _, l := range w {
		if !slices.Contains(g, l) {
			d = append(d, "- "+l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			d = append(d, "+ "+l)
		}
	}
	t.Errorf("%s differs (-want +got):\n%s\n--- got:\n%s\n--- want:\n%s", what, strings.Join(d, "\n"), got, want)
}

// The golden dumps of fullConfig after Up.
const (
	goldenFullRules = `ipv4 0: from all lookup local
ipv4 7170: from all ipproto udp dport 53 lookup 7170
ipv4 7170: from all ipproto tcp dport 53 lookup 7170
ipv4 7170: from all to 203.0.113.0/24 lookup main
ipv4 7171: from all lookup main suppress_prefixlength 0
ipv4 7172: not from all fwmark 0x7170 lookup 7170
ipv4 32766: from all lookup main
ipv4 32767: from all lookup default
ipv6 0: from all lookup local
ipv6 7170: from all ipproto udp dport 53 lookup 7170
ipv6 7170: from all ipproto tcp dport 53 lookup 7170
ipv6 7170: from all to 2001:db8:ee::/48 lookup main
ipv6 7171: from all lookup main suppress_prefixlength 0
ipv6 7172: not from all fwmark 0x7170 lookup 7170
ipv6 32766: from all lookup main
`
	goldenFullTable = `ipv4 table 7170 unicast default dev tun0 proto 4 scope 253
ipv6 table 7170 unicast default (::/0) dev tun0 proto 4 scope 0 metric 1024
`
	goldenResolvConf = `# written by tetherd; the original is restored when it stops
nameserver 100.100.100.2
nameserver fd7e:7e7d::2
search lan.example
options edns0 trust-ad
`
)

func TestUpCloseGolden(t *testing.T) {
	te := newTestEnv(t)
	before := te.state(t)

	r := up(t, te.fullConfig(), te.opts(t))

	diffText(t, "rules after Up", dumpRules(t, te.h), goldenFullRules)
	diffText(t, "table 7170 after Up", dumpRoutes(t, te.h, testTable), goldenFullTable)
	got, err := os.ReadFile(te.resolvConf)
	must(t, err)
	diffText(t, "resolv.conf after Up", string(got), goldenResolvConf)
	tun, err := te.h.LinkByName(testTUN)
	must(t, err)
	if a := tun.Attrs(); a.MTU != 1280 || a.Flags&net.FlagUp == 0 {
		t.Errorf("tun0 after Up: mtu %d flags %v, want mtu 1280 and up", a.MTU, a.Flags)
	}
	addrs, err := te.h.AddrList(tun, netlink.FAMILY_ALL)
	must(t, err)
	var as []string
	for _, a := range addrs {
		as = append(as, a.IPNet.String())
	}
	slices.Sort(as)
	if want := []string{"100.100.100.1/30", "fd7e:7e7d::1/64"}; !slices.Equal(as, want) {
		t.Errorf("tun0 addresses %v, want %v", as, want)
	}
	checkJournalFiles(t, te.dir)

	must(t, r.Close())
	diffText(t, "state after Close", te.state(t), before)
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if lines, err := Down(te.dir, te.opts(t)); err != nil || lines != nil {
		t.Errorf("Down after Close = %q, %v; want nothing to do", lines, err)
	}
}

// checkJournalFiles checks the journal's permissions and that it parses.
func checkJournalFiles(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	must(t, err)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("journal directory mode %v, want 0700", fi.Mode().Perm())
	}
	fi, err = os.Stat(filepath.Join(dir, journalName))
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600", fi.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	must(t, err)
	if len(ents) != 1 {
		t.Errorf("journal directory holds %d files, want only %s", len(ents), journalName)
	}
	s := &journalStore{dir: dir}
	j, err := s.read()
	if err != nil || j == nil {
		t.Fatalf("read journal: %v, %v", j, err)
	}
	if j.PID != os.Getpid() || j.TUN != testTUN {
		t.Errorf("journal pid %d tun %q", j.PID, j.TUN)
	}
}

func TestSplitTunnelGolden(t *testing.T) {
	te := newTestEnv(t)
	before := te.state(t)
	cfg := Config{
		TUN:        testTUN,
		Addrs:      []netip.Prefix{netip.MustParsePrefix("100.100.100.1/30")},
		Include:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("10.1.2.3/8")},
		JournalDir: te.dir,
		DNSMode:    DNSOff,
		DNS:        []netip.Addr{netip.MustParseAddr("100.100.100.2")},
	}
	r := up(t, cfg, te.opts(t))
	// Only IPv4 prefixes are included: ::/0 is captured anyway, so that
	// IPv6 cannot leak. 10.1.2.3/8 is masked and deduplicated.
	diffText(t, "table 7170", dumpRoutes(t, te.h, testTable), `ipv4 table 7170 unicast 10.0.0.0/8 dev tun0 proto 4 scope 253
ipv4 table 7170 unicast 198.51.100.7/32 dev tun0 proto 4 scope 253
ipv6 table 7170 unicast default (::/0) dev tun0 proto 4 scope 0 metric 1024
`)
	diffText(t, "rules", dumpRules(t, te.h), `ipv4 0: from all lookup local
ipv4 7170: from all ipproto udp dport 53 lookup 7170
ipv4 7170: from all ipproto tcp dport 53 lookup 7170
ipv4 7172: not from all fwmark 0x7170 lookup 7170
ipv4 32766: from all lookup main
ipv4 32767: from all lookup default
ipv6 0: from all lookup local
ipv6 7170: from all ipproto udp dport 53 lookup 7170
ipv6 7170: from all ipproto tcp dport 53 lookup 7170
ipv6 7172: not from all fwmark 0x7170 lookup 7170
ipv6 32766: from all lookup main
`)
	must(t, r.Close())
	diffText(t, "state after Close", te.state(t), before) // includes resolv.conf: DNSOff left it alone
}

// TestLoopPrevention shows with real route lookups that the marked tunnel
// socket leaves through the uplink while everything else enters the TUN.
func TestLoopPrevention(t *testing.T) {
	for _, bypass := range []bool{true, false} {
		t.Run(fmt.Sprintf("LANBypass=%v", bypass), func(t *testing.T) {
			te := newTestEnv(t)
			cfg := te.fullConfig()
			cfg.LANBypass = bypass
			cfg.DNSMode = DNSOff
			r := up(t, cfg, te.opts(t))

			lanVia := te.uplink
			if !bypass {
				lanVia = te.tun
			}
			cases := []struct {
				dst  string
				mark uint32
				want int
			}{
				{"198.51.100.7", 0, te.tun},           // the internet: into the tunnel
				{"198.51.100.7", testMark, te.uplink}, // the tunnel's own socket: main table
				{"2001:db8:ffff::7", 0, te.tun},
				{"2001:db8:ffff::7", testMark, te.uplink},
				{"203.0.113.9", 0, te.uplink}, // Exclude
				{"2001:db8:ee::9", 0, te.uplink},
				{"192.0.2.77", 0, lanVia}, // the LAN: direct only with LANBypass
				{"2001:db8:1::77", 0, lanVia},
				{"100.100.100.2", 0, te.tun}, // the DNS server inside the TUN network
			}
			for _, c := range cases {
				if got := routeVia(t, te.h, c.dst, c.mark); got != c.want {
					t.Errorf("route get %s mark %#x: dev index %d, want %d (tun0=%d uplink0=%d)", c.dst, c.mark, got, c.want, te.tun, te.uplink)
				}
			}
			// DNS to a resolver on the LAN goes into the tunnel even with the LAN
			// bypass: no query leaves outside it. (netlink's RouteGetOptions has no
			// port selectors; ip route get does.)
			for _, q := range [][]string{{"192.0.2.1", "udp"}, {"192.0.2.1", "tcp"}, {"2001:db8:1::1", "udp"}} {
				out, err := exec.Command("ip", "-n", te.name, "route", "get", q[0], "ipproto", q[1], "dport", "53").CombinedOutput()
				if err != nil {
					t.Fatalf("ip route get: %v: %s", err, out)
				}
				if !strings.Contains(string(out), "dev "+testTUN) {
					t.Errorf("DNS to %s over %s leaves outside the tunnel: %s", q[0], q[1], out)
				}
			}
			must(t, r.Close())
			if got := routeVia(t, te.h, "198.51.100.7", 0); got != te.uplink {
				t.Errorf("after Close: 198.51.100.7 via dev index %d, want uplink0 (%d)", got, te.uplink)
			}
		})
	}
}

func routeVia(t *testing.T, h *netlink.Handle, dst string, mark uint32) int {
	t.Helper()
	rs, err := h.RouteGetWithOptions(net.ParseIP(dst), &netlink.RouteGetOptions{Mark: mark})
	if err != nil {
		t.Fatalf("route get %s mark %#x: %v", dst, mark, err)
	}
	if len(rs) == 0 {
		t.Fatalf("route get %s: no route", dst)
	}
	return rs[0].LinkIndex
}

// TestCrashRecovery abandons a Router as SIGKILL would and restores the
// system from the journal with Down.
func TestCrashRecovery(t *testing.T) {
	t.Run("tun survives", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		abandon(up(t, te.fullConfig(), te.opts(t)))

		lines, err := Down(te.dir, te.opts(t))
		must(t, err)
		diffText(t, "Down's lines", te.normalize(lines), `journal of tetherd pid PID (tun0, written TIME)
restored $DIR/resolv.conf (84 bytes)
removed rule ipv6 7172: not from all fwmark 0x7170 lookup 7170
removed rule ipv4 7172: not from all fwmark 0x7170 lookup 7170
removed rule ipv6 7171: from all lookup main suppress_prefixlength 0
removed rule ipv4 7171: from all lookup main suppress_prefixlength 0
removed rule ipv6 7170: from all to 2001:db8:ee::/48 lookup main
removed rule ipv4 7170: from all to 203.0.113.0/24 lookup main
removed rule ipv6 7170: from all ipproto tcp dport 53 lookup 7170
removed rule ipv6 7170: from all ipproto udp dport 53 lookup 7170
removed rule ipv4 7170: from all ipproto tcp dport 53 lookup 7170
removed rule ipv4 7170: from all ipproto udp dport 53 lookup 7170
removed route default dev tun0 table 7170
removed route default (::/0) dev tun0 table 7170
removed address fd7e:7e7d::1/64 from tun0
removed address 100.100.100.1/30 from tun0
set tun0 down again
restored MTU 1500 on tun0
removed journal $DIR/run/tetherd/journal.json
`)
		diffText(t, "state after Down", te.state(t), before)

		lines, err = Down(te.dir, te.opts(t))
		if err != nil || lines != nil {
			t.Errorf("second Down = %q, %v; want nil, nil", lines, err)
		}
	})

	// The TUN dies with the process; the next `tetherd up` creates a new
	// one of the same name before its Up restores the old journal.
	t.Run("tun vanished and replaced", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		r := up(t, te.fullConfig(), te.opts(t))
		abandon(r)
		must(t, te.h.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: te.tun}}))
		oldIndex := te.tun
		te.addTUN(t)

		lines, err := Down(te.dir, te.opts(t))
		must(t, err)
		want := fmt.Sprintf(`journal of tetherd pid PID (tun0, written TIME)
tun0 (index %d) is gone: its addresses and routes went with it; the new tun0 (index %d) is left alone
restored $DIR/resolv.conf (84 bytes)
removed rule ipv6 7172: not from all fwmark 0x7170 lookup 7170
removed rule ipv4 7172: not from all fwmark 0x7170 lookup 7170
removed rule ipv6 7171: from all lookup main suppress_prefixlength 0
removed rule ipv4 7171: from all lookup main suppress_prefixlength 0
removed rule ipv6 7170: from all to 2001:db8:ee::/48 lookup main
removed rule ipv4 7170: from all to 203.0.113.0/24 lookup main
removed rule ipv6 7170: from all ipproto tcp dport 53 lookup 7170
removed rule ipv6 7170: from all ipproto udp dport 53 lookup 7170
removed rule ipv4 7170: from all ipproto tcp dport 53 lookup 7170
removed rule ipv4 7170: from all ipproto udp dport 53 lookup 7170
removed journal $DIR/run/tetherd/journal.json
`, oldIndex, te.tun)
		diffText(t, "Down's lines", te.normalize(lines), want)
		diffText(t, "state after Down", te.state(t), before)
	})

	// A new Up restores the stale journal before configuring anew.
	t.Run("Up after crash", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		abandon(up(t, te.fullConfig(), te.opts(t)))
		r := up(t, te.fullConfig(), te.opts(t))
		diffText(t, "rules", dumpRules(t, te.h), goldenFullRules)
		diffText(t, "table 7170", dumpRoutes(t, te.h, testTable), goldenFullTable)
		must(t, r.Close())
		diffText(t, "state after Close", te.state(t), before)
	})

	// While the owner lives, its journal is not stale: neither Down nor a
	// second Up may touch it.
	t.Run("owner alive", func(t *testing.T) {
		te := newTestEnv(t)
		r := up(t, te.fullConfig(), te.opts(t))
		during := te.state(t)
		if _, err := Down(te.dir, te.opts(t)); err == nil || !strings.Contains(err.Error(), "another tetherd is running") {
			t.Errorf("Down while the owner runs: %v, want a lock error", err)
		}
		if _, err := Up(te.fullConfig(), te.opts(t)); err == nil {
			t.Error("second Up while the first runs succeeded")
		}
		diffText(t, "state", te.state(t), during)
		must(t, r.Close())
	})
}

// normalize replaces the temporary directory, the pid and the time in
// Down's lines.
func (te *testEnv) normalize(lines []string) string {
	s := strings.Join(lines, "\n") + "\n"
	s = strings.ReplaceAll(s, filepath.Dir(te.resolvConf), "$DIR")
	if i := strings.Index(s, "pid "); i >= 0 {
		j := strings.Index(s[i:], " (")
		s = s[:i] + "pid PID" + s[i+j:]
	}
	if i := strings.Index(s, "written "); i >= 0 {
		j := strings.Index(s[i:], ")")
		s = s[:i] + "written TIME" + s[i+j:]
	}
	return s
}

// TestUpFailsHalfway makes each step of Up fail in turn and checks that
// nothing is left behind.
func TestUpFailsHalfway(t *testing.T) {
	te := newTestEnv(t)
	before := te.state(t)
	injected := errors.New("injected failure")
	var steps []string // of the last run: the complete list once Up succeeds
	for k := 0; ; k++ {
		steps = nil
		opts := te.opts(t)
		opts.beforeStep = func(name string) error {
			if steps = append(steps, name); len(steps) == k+1 {
				return injected
			}
			return nil
		}
		r, err := Up(te.fullConfig(), opts)
		if err == nil {
			must(t, r.Close())
			break
		}
		if !errors.Is(err, injected) || len(steps) != k+1 {
			t.Fatalf("step %d: Up: %v after steps %q, want the injected failure at step %d", k, err, steps, k)
		}
		diffText(t, fmt.Sprintf("state after failing step %d (%s)", k, steps[k]), te.state(t), before)
	}
	want := []string{
		"set MTU 1280 on tun0",
		"set tun0 up",
		"add address 100.100.100.1/30 to tun0",
		"add address fd7e:7e7d::1/64 to tun0",
		"add route default dev tun0 table 7170",
		"add route default (::/0) dev tun0 table 7170",
		"add rule ipv4 7170: from all ipproto udp dport 53 lookup 7170",
		"add rule ipv4 7170: from all ipproto tcp dport 53 lookup 7170",
		"add rule ipv6 7170: from all ipproto udp dport 53 lookup 7170",
		"add rule ipv6 7170: from all ipproto tcp dport 53 lookup 7170",
		"add rule ipv4 7170: from all to 203.0.113.0/24 lookup main",
		"add rule ipv6 7170: from all to 2001:db8:ee::/48 lookup main",
		"add rule ipv4 7171: from all lookup main suppress_prefixlength 0",
		"add rule ipv6 7171: from all lookup main suppress_prefixlength 0",
		"add rule ipv4 7172: not from all fwmark 0x7170 lookup 7170",
		"add rule ipv6 7172: not from all fwmark 0x7170 lookup 7170",
		"configure DNS (resolvconf)",
	}
	if !slices.Equal(steps, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
	diffText(t, "state after the final Close", te.state(t), before)
}

// TestUpFailsForReal covers failures that come from the system, not from
// the test hook.
func TestUpFailsForReal(t *testing.T) {
	t.Run("no such TUN", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		cfg := te.fullConfig()
		cfg.TUN = "tun9"
		if _, err := Up(cfg, te.opts(t)); err == nil || !strings.Contains(err.Error(), `TUN "tun9"`) {
			t.Errorf("Up: %v, want a missing TUN error", err)
		}
		diffText(t, "state", te.state(t), before)
	})
	t.Run("invalid TUN name", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		cfg := te.fullConfig()
		cfg.TUN = "tun 0"
		if _, err := Up(cfg, te.opts(t)); err == nil || !strings.Contains(err.Error(), "white space") {
			t.Errorf("Up: %v, want an invalid name error", err)
		}
		diffText(t, "state", te.state(t), before)
	})
	// resolvectl fails at its second command, after all routes and rules.
	t.Run("resolvectl fails", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		cfg := te.fullConfig()
		cfg.DNSMode = DNSResolved
		te.run.fail = "resolvectl domain"
		if _, err := Up(cfg, te.opts(t)); err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("Up: %v, want the resolvectl failure", err)
		}
		diffText(t, "resolvectl commands", strings.Join(te.run.cmds, "\n"), `resolvectl dns tun0 100.100.100.2 fd7e:7e7d::2
resolvectl domain tun0 ~.
resolvectl revert tun0`)
		diffText(t, "state", te.state(t), before)
	})
	t.Run("rule priority taken", func(t *testing.T) {
		te := newTestEnv(t)
		rule := netlink.NewRule()
		rule.Priority, rule.Table, rule.Family = 7171, unix.RT_TABLE_MAIN, netlink.FAMILY_V6
		must(t, te.h.RuleAdd(rule))
		before := te.state(t)
		if _, err := Up(te.fullConfig(), te.opts(t)); err == nil || !strings.Contains(err.Error(), "rule priority 7171 is taken") {
			t.Errorf("Up: %v, want a priority conflict", err)
		}
		diffText(t, "state", te.state(t), before)
	})
	t.Run("table not empty", func(t *testing.T) {
		te := newTestEnv(t)
		must(t, te.h.RouteAdd(&netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.9.0.0/16")), Table: testTable, LinkIndex: te.uplink, Gw: net.ParseIP("192.0.2.1")}))
		before := te.state(t)
		if _, err := Up(te.fullConfig(), te.opts(t)); err == nil || !strings.Contains(err.Error(), "routing table 7170 is not empty") {
			t.Errorf("Up: %v, want a table conflict", err)
		}
		diffText(t, "state", te.state(t), before)
	})
}

// TestIPv6DisabledOnTUN: with net.ipv6.conf.tun0.disable_ipv6=1 the TUN
// takes no IPv6 address or route, so IPv6 is blocked with an unreachable
// route in the private table instead of leaking past the tunnel.
func TestIPv6DisabledOnTUN(t *testing.T) {
	te := newTestEnv(t)
	run(t, "ip", "netns", "exec", te.name, "sysctl", "-q", "-w", "net.ipv6.conf.tun0.disable_ipv6=1")
	before := te.state(t)
	cfg := te.fullConfig()
	cfg.DNSMode = DNSOff
	r := up(t, cfg, te.opts(t))
	diffText(t, "table 7170", dumpRoutes(t, te.h, testTable), `ipv4 table 7170 unicast default dev tun0 proto 4 scope 253
ipv6 table 7170 unreachable default (::/0) dev lo proto 4 scope 0 metric 1024
`)
	if _, err := te.h.RouteGetWithOptions(net.ParseIP("2001:db8:ffff::7"), &netlink.RouteGetOptions{}); err == nil {
		t.Error("IPv6 to the internet is routable, want unreachable")
	}
	if got := routeVia(t, te.h, "2001:db8:ffff::7", testMark); got != te.uplink {
		t.Errorf("marked IPv6: dev index %d, want uplink0", got)
	}
	must(t, r.Close())
	diffText(t, "state after Close", te.state(t), before)
}

func TestResolvConf(t *testing.T) {
	t.Run("in place, mode kept", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t) // has the inode and mode 0640
		r := up(t, te.fullConfig(), te.opts(t))
		fi, err := os.Stat(te.resolvConf)
		must(t, err)
		if !strings.Contains(before, fmt.Sprintf("ino %d:", fi.Sys().(*syscall.Stat_t).Ino)) {
			t.Error("resolv.conf was replaced, not rewritten in place")
		}
		must(t, r.Close())
		diffText(t, "state after Close", te.state(t), before)
	})
	t.Run("rewritten by something else", func(t *testing.T) {
		te := newTestEnv(t)
		abandon(up(t, te.fullConfig(), te.opts(t)))
		other := "nameserver 192.0.2.99\n"
		must(t, os.WriteFile(te.resolvConf, []byte(other), 0o640))
		lines, err := Down(te.dir, te.opts(t))
		must(t, err)
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "left alone: something else rewrote it") }) {
			t.Errorf("Down's lines do not say resolv.conf was left alone:\n%s", strings.Join(lines, "\n"))
		}
		if got, _ := os.ReadFile(te.resolvConf); string(got) != other {
			t.Errorf("resolv.conf = %q, want the other writer's %q", got, other)
		}
	})
	t.Run("did not exist", func(t *testing.T) {
		te := newTestEnv(t)
		must(t, os.Remove(te.resolvConf))
		before := te.state(t)
		r := up(t, te.fullConfig(), te.opts(t))
		got, err := os.ReadFile(te.resolvConf)
		must(t, err)
		if !hasMarker(got) {
			t.Errorf("resolv.conf = %q, want tetherd's", got)
		}
		must(t, r.Close())
		diffText(t, "state after Close", te.state(t), before)
	})
	t.Run("stale marker without journal", func(t *testing.T) {
		te := newTestEnv(t)
		must(t, os.WriteFile(te.resolvConf, []byte(goldenResolvConf), 0o644))
		before := te.state(t)
		if _, err := Up(te.fullConfig(), te.opts(t)); err == nil || !strings.Contains(err.Error(), "restore it by hand") {
			t.Errorf("Up: %v, want a refusal", err)
		}
		diffText(t, "state", te.state(t), before)
	})
}

func TestResolved(t *testing.T) {
	const upCmds = `resolvectl dns tun0 100.100.100.2 fd7e:7e7d::2
resolvectl domain tun0 ~.
resolvectl default-route tun0 yes`
	t.Run("Up and Close", func(t *testing.T) {
		te := newTestEnv(t)
		before := te.state(t)
		cfg := te.fullConfig()
		cfg.DNSMode = DNSResolved
		r := up(t, cfg, te.opts(t))
		diffText(t, "commands of Up", strings.Join(te.run.cmds, "\n"), upCmds)
		must(t, r.Close())
		diffText(t, "commands", strings.Join(te.run.cmds, "\n"), upCmds+"\nresolvectl revert tun0")
		diffText(t, "state after Close", te.state(t), before) // resolv.conf untouched
	})
	t.Run("auto picks resolved", func(t *testing.T) {
		te := newTestEnv(t)
		opts := te.opts(t)
		var asked string
		opts.resolvedActive = func(path string) bool { asked = path; return true }
		cfg := te.fullConfig()
		cfg.DNSMode = "" // auto
		r := up(t, cfg, opts)
		if asked != te.resolvConf {
			t.Errorf("resolved probe asked about %q, want %q", asked, te.resolvConf)
		}
		diffText(t, "commands", strings.Join(te.run.cmds, "\n"), upCmds)
		must(t, r.Close())
	})
	t.Run("auto picks resolv.conf", func(t *testing.T) {
		te := newTestEnv(t)
		cfg := te.fullConfig()
		cfg.DNSMode = DNSAuto
		r := up(t, cfg, te.opts(t))
		if len(te.run.cmds) != 0 {
			t.Errorf("ran %q, want no commands", te.run.cmds)
		}
		got, _ := os.ReadFile(te.resolvConf)
		diffText(t, "resolv.conf", string(got), goldenResolvConf)
		must(t, r.Close())
	})
	t.Run("crash, tun gone", func(t *testing.T) {
		te := newTestEnv(t)
		cfg := te.fullConfig()
		cfg.DNSMode = DNSResolved
		abandon(up(t, cfg, te.opts(t)))
		must(t, te.h.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: te.tun}}))
		te.run.cmds = nil
		lines, err := Down(te.dir, te.opts(t))
		must(t, err)
		if len(te.run.cmds) != 0 {
			t.Errorf("Down ran %q; resolved forgets a vanished link by itself", te.run.cmds)
		}
		if !slices.Contains(lines, "systemd-resolved: tun0 is gone, and its DNS settings with it") {
			t.Errorf("Down's lines:\n%s", strings.Join(lines, "\n"))
		}
	})
}

func TestControl(t *testing.T) {
	requireRoot(t) // SO_MARK needs CAP_NET_ADMIN
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
				close(accepted)
			}()
			for _, mark := range []uint32{testMark, 0} {
				d := net.Dialer{Control: Control(mark)}
				c, err := d.Dial(network, ln.Addr().String())
				must(t, err)
				if got := soMark(t, c); got != mark {
					t.Errorf("SO_MARK = %#x, want %#x", got, mark)
				}
				c.Close()
				if mark == testMark {
					if sc := <-accepted; sc != nil {
						sc.Close()
					}
				}
			}
		})
	}
}

func soMark(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	must(t, err)
	var mark int
	var serr error
	must(t, rc.Control(func(fd uintptr) { mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }))
	must(t, serr)
	return uint32(mark)
}
