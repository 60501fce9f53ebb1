//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
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
