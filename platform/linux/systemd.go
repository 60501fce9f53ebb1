//go:build linux

package linux

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// DefaultUnitDir is where Install writes the unit.
const DefaultUnitDir = "/etc/systemd/system"

// UnitName is the name of the systemd service.
const UnitName = "tetherd.service"

// UnitOptions are the paths a unit or launchd job runs tetherd with.
type UnitOptions struct {
	// Exe is the absolute path of the tetherd binary.
	Exe string
	// Config is the absolute path of the configuration file.
	Config string
}

// unitTemplate is the service. Every sandboxing line is there because
// `tetherd up` (and `tetherd down` in ExecStopPost) works under it; the
// comments say why each allowance is needed.
var unitTemplate = template.Must(template.New("unit").Parse(`# Written by 'tetherd install'; remove with 'tetherd uninstall'.
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
ExecStart={{.Exe}} up --config {{.Config}}
# Restores routes, rules and DNS from the journal if up died without doing so;
# after a clean stop it finds no journal and does nothing.
ExecStopPost={{.Exe}} down --config {{.Config}}
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
`))

// SystemdUnit returns the text of tetherd.service, which runs
// `EXE up --config CONFIG` as a Type=notify service.
func SystemdUnit(o UnitOptions) (string, error) {
	exe, err := unitArg("executable", o.Exe)
	if err != nil {
		return "", err
	}
	cfg, err := unitArg("configuration", o.Config)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := unitTemplate.Execute(&b, struct{ Exe, Config string }{exe, cfg}); err != nil {
		return "", err
	}
	return b.String(), nil
}

// unitArg checks that p is an absolute path and quotes it for ExecStart=:
// '%' and '$' are doubled (specifiers and variables), and a path with a space,
// quote or backslash is put in double quotes with C escapes.
func unitArg(what, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("the %s path %q is not absolute", what, p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("the %s path %q has a control character", what, p)
		}
	}
	p = strings.NewReplacer("%", "%%", "$", "$$").Replace(p)
	if !strings.ContainsAny(p, " \"'\\;") {
		return p, nil
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`, nil
}

// InstallOptions say what Install and Uninstall write and remove.
type InstallOptions struct {
	UnitOptions
	// UnitDir is the directory of the unit file; default DefaultUnitDir.
	UnitDir string

	// Tests replace these: run runs systemctl, euid returns the effective
	// user id.
	run  runner
	euid func() int
}

// ErrNotInstalled is returned by Uninstall when there is no unit file.
var ErrNotInstalled = errors.New("tetherd is not installed as a systemd service")

func (o *InstallOptions) defaults() {
	if o.UnitDir == "" {
		o.UnitDir = DefaultUnitDir
	}
	if o.run == nil {
		// enable --now waits until the service sent READY=1 (or failed).
		o.run = execRunner{timeout: 2 * time.Minute}
	}
	if o.euid == nil {
		o.euid = os.Geteuid
	}
}

// Install writes the unit to UnitDir/tetherd.service and starts it:
// `systemctl daemon-reload`, then `systemctl enable --now tetherd`. It needs
// root.
func Install(o InstallOptions) error {
	o.defaults()
	if o.euid() != 0 {
		return errors.New("installing the systemd service needs root: run it with sudo")
	}
	unit, err := SystemdUnit(o.UnitOptions)
	if err != nil {
		return err
	}
	path := filepath.Join(o.UnitDir, UnitName)
	if err := writeFileAtomic(path, []byte(unit), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := o.run.run("systemctl", "daemon-reload"); err != nil {
		return err
	}
	if err := o.run.run("systemctl", "enable", "--now", "tetherd"); err != nil {
		return fmt.Errorf("%w (see: journalctl -u tetherd)", err)
	}
	return nil
}

// Uninstall stops and disables the service (`systemctl disable --now
// tetherd`; stopping runs `tetherd down`), removes the unit file and runs
// `systemctl daemon-reload`. It returns ErrNotInstalled when there is no unit
// file. It needs root.
func Uninstall(o InstallOptions) error {
	o.defaults()
	if o.euid() != 0 {
		return errors.New("removing the systemd service needs root: run it with sudo")
	}
	path := filepath.Join(o.UnitDir, UnitName)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: no %s", ErrNotInstalled, path)
	}
	if err := o.run.run("systemctl", "disable", "--now", "tetherd"); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return o.run.run("systemctl", "daemon-reload")
}

// writeFileAtomic writes data to a temporary file next to path and renames
// it over path.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Notify sends state (e.g. "READY=1", "STOPPING=1") to the service manager
// over $NOTIFY_SOCKET, as sd_notify(3) does. It does nothing when the
// variable is unset, i.e. when not run by systemd as a Type=notify service.
// A name starting with '@' is an abstract socket.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET %q is not a unix socket", name)
	}
	// The net package turns a leading '@' into the abstract namespace's NUL.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
