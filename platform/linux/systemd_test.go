//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSystemdUnitGolden(t *testing.T) {
	got, err := SystemdUnit(UnitOptions{Exe: "/usr/local/bin/tetherd", Config: "/etc/tetherd/config.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if got != goldenUnit {
		t.Errorf("unit differs from the golden text:\n%s", got)
	}
}

func TestSystemdUnitQuoting(t *testing.T) {
	got, err := SystemdUnit(UnitOptions{Exe: "/opt/my tools/tetherd", Config: "/etc/tetherd/50%$x.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	want := `ExecStart="/opt/my tools/tetherd" up --config /etc/tetherd/50%%$$x.yaml` + "\n"
	if !strings.Contains(got, want) {
		t.Errorf("unit lacks %q:\n%s", want, got)
	}
	for _, o := range []UnitOptions{
		{Exe: "tetherd", Config: "/etc/tetherd/config.yaml"},
		{Exe: "/usr/bin/tetherd", Config: "config.yaml"},
		{Exe: "/usr/bin/teth\nerd", Config: "/c.yaml"},
	} {
		if _, err := SystemdUnit(o); err == nil {
			t.Errorf("SystemdUnit(%+v) succeeded", o)
		}
	}
}

// TestSystemdUnitVerify runs systemd-analyze verify on units rendered into a
// temporary directory; it never loads them into the running systemd.
func TestSystemdUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd): the unit is not verified")
	}
	dir := t.TempDir()
	for _, exe := range []string{"tetherd", "with space/tetherd"} {
		exePath := filepath.Join(dir, exe)
		if err := os.MkdirAll(filepath.Dir(exePath), 0o755); err != nil {
			t.Fatal(err)
		}
		// verify checks that the binaries of ExecStart= and ExecStopPost= exist.
		if err := os.WriteFile(exePath, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		unit, err := SystemdUnit(UnitOptions{Exe: exePath, Config: "/etc/tetherd/config.yaml"})
		if err != nil {
			t.Fatal(err)
		}
		unitDir := t.TempDir()
		path := filepath.Join(unitDir, UnitName)
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", path, err, out)
		}
		// verify exits 0 on some warnings; any line naming the unit is one.
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, UnitName) {
				t.Errorf("systemd-analyze verify: %s", l)
			}
		}
	}
}

type systemctlRunner struct {
	cmds []string
	fail string // a command that fails
}

func (f *systemctlRunner) run(name string, args ...string) error {
	c := strings.Join(append([]string{name}, args...), " ")
	f.cmds = append(f.cmds, c)
	if c == f.fail {
		return errors.New("exit status 1")
	}
	return nil
}

func TestInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	r := &systemctlRunner{}
	o := InstallOptions{
		UnitOptions: UnitOptions{Exe: "/usr/local/bin/tetherd", Config: "/etc/tetherd/config.yaml"},
		UnitDir:     dir,
		run:         r,
		euid:        func() int { return 0 },
	}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, UnitName))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != goldenUnit {
		t.Errorf("installed unit differs from the golden text:\n%s", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, UnitName)); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("unit file mode: %v, %v", fi.Mode(), err)
	}
	want := []string{"systemctl daemon-reload", "systemctl enable --now tetherd"}
	if !reflect.DeepEqual(r.cmds, want) {
		t.Errorf("Install ran %q, want %q", r.cmds, want)
	}

	r.cmds = nil
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	want = []string{"systemctl disable --now tetherd", "systemctl daemon-reload"}
	if !reflect.DeepEqual(r.cmds, want) {
		t.Errorf("Uninstall ran %q, want %q", r.cmds, want)
	}
	if _, err := os.Stat(filepath.Join(dir, UnitName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit file still there: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}

	r.cmds = nil
	if err := Uninstall(o); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("second Uninstall: %v, want ErrNotInstalled", err)
	}
	if len(r.cmds) != 0 {
		t.Errorf("second Uninstall ran %q", r.cmds)
	}
}

func TestInstallFailures(t *testing.T) {
	dir := t.TempDir()
	r := &systemctlRunner{fail: "systemctl enable --now tetherd"}
	o := InstallOptions{
		UnitOptions: UnitOptions{Exe: "/usr/local/bin/tetherd", Config: "/etc/tetherd/config.yaml"},
		UnitDir:     dir,
		run:         r,
		euid:        func() int { return 1000 },
	}
	for name, f := range map[string]func(InstallOptions) error{"Install": Install, "Uninstall": Uninstall} {
		if err := f(o); err == nil || !strings.Contains(err.Error(), "sudo") {
			t.Errorf("%s as non-root: %v, want an error that says sudo", name, err)
		}
	}
	if len(r.cmds) != 0 {
		t.Errorf("non-root ran %q", r.cmds)
	}
	o.euid = func() int { return 0 }
	err := Install(o)
	if err == nil || !strings.Contains(err.Error(), "journalctl -u tetherd") {
		t.Errorf("Install with a failing enable: %v", err)
	}
}

func TestNotify(t *testing.T) {
	t.Run("unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		if err := Notify("READY=1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("path", func(t *testing.T) {
		testNotify(t, filepath.Join(t.TempDir(), "notify"))
	})
	t.Run("abstract", func(t *testing.T) {
		testNotify(t, fmt.Sprintf("@tetherd-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	})
	t.Run("bad", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "vsock:2:1")
		if err := Notify("READY=1"); err == nil {
			t.Fatal("Notify succeeded on an unsupported socket")
		}
	})
}

func testNotify(t *testing.T, name string) {
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	for _, state := range []string{"READY=1", "STOPPING=1"} {
		if err := Notify(state); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != state {
			t.Errorf("received %q, want %q", got, state)
		}
	}
}

const goldenUnit = `# Written by 'tetherd install'; remove with 'tetherd uninstall'.
[Unit]
Description=tetherd: route this machine's traffic through a tetherd peer
Documentation=https://github.com/tetherd/tetherd
Wants=network-online.target
After=network-online.target
# up exits when the peer is unreachable at start (a phone not yet on the
# network): keep retrying every RestartSec instead of giving up after the
# default 5 starts in 10 s.
StartLimitIntervalSec=0

[Service]
# tetherd up sends READY=1 over $NOTIFY_SOCKET once the tunnel is up.
Type=notify
ExecStart=/usr/local/bin/tetherd up --config /etc/tetherd/config.yaml
# Restores routes, rules and DNS from the journal if up died without doing so;
# after a clean stop it finds no journal and does nothing.
ExecStopPost=/usr/local/bin/tetherd down --config /etc/tetherd/config.yaml
Restart=on-failure
RestartSec=2

# The journal in /run/tetherd must survive a crash until ExecStopPost has read
# it, and across restarts: systemd must not remove the directory on stop.
RuntimeDirectory=tetherd
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes

# Runs as root (resolv.conf and the configuration are root's 0644/0600
# files), but with one capability only. CAP_NET_ADMIN: create the TUN, set
# its addresses, routes and policy rules over netlink, and SO_MARK on the
# tunnel's own socket. Not needed: CAP_NET_BIND_SERVICE (up listens on no
# port), CAP_NET_RAW (up opens no raw or packet socket: ICMP echo is carried
# to the peer inside the tunnel), CAP_DAC_OVERRIDE (so the configuration and
# token file must be owned by root).
CapabilityBoundingSet=CAP_NET_ADMIN
AmbientCapabilities=CAP_NET_ADMIN
NoNewPrivileges=yes

ProtectSystem=strict
# resolv.conf mode rewrites /etc/resolv.conf in place (truncate and write,
# never rename), so the file suffices, not /etc. '-': a missing file does not
# stop the service (up would then fail to create it, and says so).
ReadWritePaths=-/etc/resolv.conf
ProtectHome=yes
PrivateTmp=yes
# tetherd writes nothing under /proc/sys or /sys: routing is netlink only.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
# AF_NETLINK: routes, rules, addresses. AF_UNIX: $NOTIFY_SOCKET, and
# resolvectl's D-Bus connection in systemd-resolved mode.
RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
# Not in the way of anything tetherd does; each removes some exposure.
ProtectClock=yes
ProtectHostname=yes
ProtectKernelLogs=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw

[Install]
WantedBy=multi-user.target
`
