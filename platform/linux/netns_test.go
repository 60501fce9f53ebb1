//go:build linux

package linux

import (
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
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

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
