//go:build linux

package linux

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The tests here run a copy of the test binary as a separate process inside
// the test namespace (`ip netns exec`), where it calls Up with the
// production defaults for the handle (Options.Handle nil: the current
// namespace). helperEnv selects what the copy does instead of running tests;
// TestMain dispatches to runHelper.
const helperEnv = "TETHERD_LINUX_TEST_HELPER"

// helperConfig is the Config a helper process applies.
func helperConfig(dir, resolvConf string) Config {
	return Config{
		TUN:        testTUN,
		MTU:        1280,
		Addrs:      []netip.Prefix{netip.MustParsePrefix("100.100.100.1/30"), netip.MustParsePrefix("fd7e:7e7d::1/64")},
		LANBypass:  true,
		DNS:        []netip.Addr{netip.MustParseAddr("100.100.100.2")},
		DNSMode:    DNSResolvConf,
		ResolvConf: resolvConf,
		JournalDir: dir,
	}
}

// runHelper is the helper process. Modes:
//
//	crash      create a TUN as the real client does (non-persistent: it
//	           vanishes with the process), Up, print "ready", then wait to
//	           be killed.
//	bindmount  bind-mount $SRC over $DST (in the private mount namespace
//	           of `ip netns exec`), Up with ResolvConf=$DST, check that
//	           renaming over $DST is impossible, Close.
func runHelper(mode string) error {
	dir, src, dst := os.Getenv("DIR"), os.Getenv("SRC"), os.Getenv("DST")
	switch mode {
	case "crash":
		tun, err := createTUN(testTUN)
		if err != nil {
			return err
		}
		defer tun.Close()
		if _, err := Up(helperConfig(dir, src), Options{}); err != nil {
			return err
		}
		fmt.Println("ready")
		select {} // until SIGKILL
	case "bindmount":
		self, err1 := os.Readlink("/proc/self/ns/mnt")
		parent := os.Getenv("PARENT_MNT_NS")
		if err1 != nil || self == parent {
			return fmt.Errorf("not in a private mount namespace (%s, %v): refusing to bind-mount", self, err1)
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		tun, err := createTUN(testTUN)
		if err != nil {
			return err
		}
		defer tun.Close()
		r, err := Up(helperConfig(dir, dst), Options{})
		if err != nil {
			return err
		}
		b, err := os.ReadFile(src)
		if err != nil || !hasMarker(b) {
			return fmt.Errorf("the bind-mounted source was not rewritten: %q, %v", b, err)
		}
		tmp := dst + ".new"
		if err := os.WriteFile(tmp, nil, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, dst); !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("rename over the bind mount: %v, want EBUSY (the setup does not model ip netns exec)", err)
		}
		return r.Close()
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// createTUN creates a TUN the way the client does: not persistent, so it
// goes away with the last descriptor.
func createTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// startHelper runs the test binary in mode inside the namespace of te.
func startHelper(t *testing.T, te *testEnv, mode string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	must(t, err)
	cmd := exec.Command("ip", "netns", "exec", te.name, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=" + mode, "DIR=" + te.dir}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestSIGKILL kills a process that ran Up with SIGKILL and restores the
// namespace with Down: its TUN is gone, its rules, resolv.conf and journal
// remain.
func TestSIGKILL(t *testing.T) {
	te := newTestEnv(t)
	// The helper creates its own TUN: remove the test's persistent one.
	must(t, te.h.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: te.tun}}))
	before := te.state(t)

	cmd := startHelper(t, te, "crash", "SRC="+te.resolvConf)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	pid := cmd.Process.Pid // `ip netns exec` execs the helper: same pid
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	running := dumpRules(t, te.h)
	diffText(t, "rules while the helper runs", running, `ipv4 0: from all lookup local
ipv4 7170: from all ipproto udp dport 53 lookup 7170
ipv4 7170: from all ipproto tcp dport 53 lookup 7170
ipv4 7171: from all lookup main suppress_prefixlength 0
ipv4 7172: not from all fwmark 0x7170 lookup 7170
ipv4 32766: from all lookup main
ipv4 32767: from all lookup default
ipv6 0: from all lookup local
ipv6 7170: from all ipproto udp dport 53 lookup 7170
ipv6 7170: from all ipproto tcp dport 53 lookup 7170
ipv6 7171: from all lookup main suppress_prefixlength 0
ipv6 7172: not from all fwmark 0x7170 lookup 7170
ipv6 32766: from all lookup main
`)
	must(t, unix.Kill(pid, unix.SIGKILL))
	killed = true
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper exit: %v, want killed", err)
	}

	if _, err := te.h.LinkByName(testTUN); err == nil {
		t.Error("the helper's TUN survived it")
	}
	// Rules are not tied to a link: they outlive the process and its TUN.
	diffText(t, "rules after the kill", dumpRules(t, te.h), running)
	if b, _ := os.ReadFile(te.resolvConf); !hasMarker(b) {
		t.Errorf("resolv.conf after the kill: %q, want tetherd's", b)
	}
	lines, err := Down(te.dir, te.opts(t))
	must(t, err)
	t.Logf("Down:\n%s", strings.Join(lines, "\n"))
	if !strings.Contains(strings.Join(lines, "\n"), "removed rule ipv4 7172: not from all fwmark 0x7170 lookup 7170") {
		t.Errorf("Down's lines do not mention the tunnel rule")
	}
	diffText(t, "state after Down", te.state(t), before)
	if lines, err := Down(te.dir, te.opts(t)); lines != nil || err != nil {
		t.Errorf("second Down = %q, %v", lines, err)
	}
}

// TestResolvConfBindMount runs Up and Close with resolv.conf as a bind
// mount, as it is inside `ip netns exec` with /etc/netns/NAME/resolv.conf.
func TestResolvConfBindMount(t *testing.T) {
	te := newTestEnv(t)
	must(t, te.h.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: te.tun}}))
	dst := filepath.Join(filepath.Dir(te.resolvConf), "mountpoint")
	must(t, os.WriteFile(dst, []byte("# mount point\n"), 0o644))
	before := te.state(t)
	mnt, err := os.Readlink("/proc/self/ns/mnt")
	must(t, err)
	cmd := startHelper(t, te, "bindmount", "SRC="+te.resolvConf, "DST="+dst, "PARENT_MNT_NS="+mnt)
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	diffText(t, "state after the helper", te.state(t), before)
	if b, _ := os.ReadFile(dst); string(b) != "# mount point\n" {
		t.Errorf("the mount point itself changed: %q", b)
	}
}
