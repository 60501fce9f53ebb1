//go:build linux

package linux

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// resolvConfMarker is the first line of a resolv.conf written by tetherd.
// The original is restored only while this line is still there.
const resolvConfMarker = "# written by tetherd; the original is restored when it stops"

// resolvedSocket is systemd-resolved's varlink socket (systemd >= 246); it
// accepts connections while resolved runs.
const resolvedSocket = "/run/systemd/resolve/io.systemd.Resolve"

// runner runs an external command. Only the systemd-resolved mode uses
// one, for resolvectl; tests substitute a fake that records the commands.
type runner interface {
	run(name string, args ...string) error
}

// execRunner runs commands with os/exec and a timeout (resolvectl waits
// for D-Bus, which can hang).
type execRunner struct{ timeout time.Duration }

func (r execRunner) run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// resolvedManages reports whether systemd-resolved is running and
// resolvConf is one of its files (a symlink into /run/systemd/resolve/, or
// its stub listener 127.0.0.53 as the name server): only then does
// configuring resolved change what the system's resolver asks.
func resolvedManages(resolvConf string) bool {
	c, err := net.DialTimeout("unix", resolvedSocket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	if target, err := filepath.EvalSymlinks(resolvConf); err == nil && strings.HasPrefix(target, "/run/systemd/resolve/") {
		return true
	}
	b, err := os.ReadFile(resolvConf)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "nameserver" && f[1] == "127.0.0.53" {
			return true
		}
	}
	return false
}

// planDNS decides the DNS change for cfg (defaults applied) and records
// what restores it; nil means DNS is left alone.
func planDNS(cfg Config, e *env) (*dnsJournal, error) {
	if len(cfg.DNS) == 0 || cfg.DNSMode == DNSOff {
		return nil, nil
	}
	mode := cfg.DNSMode
	if mode == DNSAuto {
		mode = DNSResolvConf
		if e.resolvedActive(cfg.ResolvConf) {
			mode = DNSResolved
		}
	}
	switch mode {
	case DNSResolved:
		return &dnsJournal{Mode: DNSResolved, Link: cfg.TUN, Servers: cfg.DNS, Domains: []string{"~."}, DefaultRoute: true}, nil
	case DNSResolvConf:
		d := &dnsJournal{Mode: DNSResolvConf, Path: cfg.ResolvConf, Servers: cfg.DNS, Perm: 0o644}
		b, err := os.ReadFile(cfg.ResolvConf)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", cfg.ResolvConf, err)
		default:
			fi, err := os.Stat(cfg.ResolvConf)
			if err != nil {
				return nil, fmt.Errorf("stat %s: %w", cfg.ResolvConf, err)
			}
			if hasMarker(b) {
				return nil, fmt.Errorf("%s was written by tetherd but no journal says what it replaced: restore it by hand", cfg.ResolvConf)
			}
			d.Existed, d.Original, d.Perm = true, b, fi.Mode().Perm()
		}
		return d, nil
	}
	return nil, fmt.Errorf("DNS mode %q", mode)
}

// applyDNS makes the change planned in d.
func applyDNS(d *dnsJournal, e *env) error {
	switch d.Mode {
	case DNSResolved:
		args := []string{"dns", d.Link}
		for _, s := range d.Servers {
			args = append(args, s.String())
		}
		if err := e.run.run("resolvectl", args...); err != nil {
			return err
		}
		if err := e.run.run("resolvectl", append([]string{"domain", d.Link}, d.Domains...)...); err != nil {
			return err
		}
		if d.DefaultRoute {
			if err := e.run.run("resolvectl", "default-route", d.Link, "yes"); err != nil {
				return err
			}
		}
		return nil
	case DNSResolvConf:
		if err := writeInPlace(d.Path, resolvConfContent(d.Original, d.Servers), d.Perm); err != nil {
			return fmt.Errorf("rewrite %s: %w", d.Path, err)
		}
		return nil
	}
	return fmt.Errorf("unknown DNS mode %q in journal", d.Mode)
}

// restoreDNS undoes d. linkPresent says whether the TUN that d configured
// still exists (systemd-resolved forgets a link's settings when it goes).
func restoreDNS(d *dnsJournal, linkPresent bool, e *env) (lines []string, err error) {
	switch d.Mode {
	case DNSResolved:
		if !linkPresent {
			return []string{fmt.Sprintf("systemd-resolved: %s is gone, and its DNS settings with it", d.Link)}, nil
		}
		if err := e.run.run("resolvectl", "revert", d.Link); err != nil {
			return nil, fmt.Errorf("revert systemd-resolved settings of %s: %w", d.Link, err)
		}
		return []string{fmt.Sprintf("reverted the systemd-resolved DNS settings of %s", d.Link)}, nil
	case DNSResolvConf:
		return restoreResolvConf(d)
	}
	return nil, fmt.Errorf("unknown DNS mode %q in journal", d.Mode)
}

func restoreResolvConf(d *dnsJournal) ([]string, error) {
	cur, err := os.ReadFile(d.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !d.Existed:
		return []string{fmt.Sprintf("%s: absent as before, nothing to restore", d.Path)}, nil
	case errors.Is(err, fs.ErrNotExist):
		return []string{fmt.Sprintf("%s: left alone: it was removed by something else since tetherd rewrote it", d.Path)}, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", d.Path, err)
	case d.Existed && bytes.Equal(cur, d.Original):
		return []string{fmt.Sprintf("%s: unchanged, nothing to restore", d.Path)}, nil
	case d.Existed && !hasMarker(cur) && interruptedRewrite(cur, d.Original, resolvConfContent(d.Original, d.Servers)):
		// A tetherd killed while writing the file (or while restoring it): not
		// something else's content, so the original goes back.
		if err := writeInPlace(d.Path, d.Original, d.Perm); err != nil {
			return nil, fmt.Errorf("restore %s: %w", d.Path, err)
		}
		return []string{fmt.Sprintf("restored %s (%d bytes) over an interrupted rewrite", d.Path, len(d.Original))}, nil
	case !hasMarker(cur):
		return []string{fmt.Sprintf("%s: left alone: something else rewrote it since tetherd did (its first line is no longer tetherd's marker)", d.Path)}, nil
	case !d.Existed:
		if err := os.Remove(d.Path); err != nil {
			return nil, fmt.Errorf("remove %s: %w", d.Path, err)
		}
		return []string{fmt.Sprintf("removed %s (it did not exist before)", d.Path)}, nil
	}
	if err := writeInPlace(d.Path, d.Original, d.Perm); err != nil {
		return nil, fmt.Errorf("restore %s: %w", d.Path, err)
	}
	if fi, err := os.Stat(d.Path); err == nil && fi.Mode().Perm() != d.Perm {
		if err := os.Chmod(d.Path, d.Perm); err != nil {
			return nil, fmt.Errorf("restore mode of %s: %w", d.Path, err)
		}
	}
	return []string{fmt.Sprintf("restored %s (%d bytes)", d.Path, len(d.Original))}, nil
}

// resolvConfContent is the file written in resolv.conf mode: the marker,
// one nameserver line per server, and the search, domain and options
// lines of the original (search domains only append suffixes; the
// queries still go to the tunnel's servers).
func resolvConfContent(original []byte, servers []netip.Addr) []byte {
	var b bytes.Buffer
	b.WriteString(resolvConfMarker + "\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	sc := bufio.NewScanner(bytes.NewReader(original))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// interruptedRewrite reports whether cur is what a rewrite of the original
// with ours, or of ours with the original, leaves when it is killed midway:
// by writeInPlace, some first bytes of the new content over the old; by
// earlier versions (truncate, then write), a prefix of the new content.
func interruptedRewrite(cur, original, ours []byte) bool {
	return overwrittenPart(cur, ours, original) || overwrittenPart(cur, original, ours) ||
		bytes.HasPrefix(ours, cur) || bytes.HasPrefix(original, cur)
}

// overwrittenPart reports whether cur == x[:k] + y[k:] for some k (y[k:] being
// empty when k is past its end).
func overwrittenPart(cur, x, y []byte) bool {
	for k := 0; k <= len(x) && k <= len(cur); k++ {
		if !bytes.Equal(cur[:k], x[:k]) {
			return false
		}
		rest := []byte{}
		if k < len(y) {
			rest = y[k:]
		}
		if bytes.Equal(cur[k:], rest) {
			return true
		}
	}
	return false
}

func hasMarker(b []byte) bool {
	first, _, _ := bytes.Cut(b, []byte("\n"))
	return string(first) == resolvConfMarker
}

// writeInPlace replaces the contents of path without replacing the file:
// /etc/resolv.conf is a bind mount inside `ip netns exec`, and renaming
// over a mount point fails (EBUSY) or would only hide it. It writes over
// the old bytes first and cuts the file to length last, so a process killed
// half-way leaves data[:k] followed by the old bytes from k on — never an
// empty file — which interruptedWrite recognizes.
func writeInPlace(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, perm)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Truncate(int64(len(data)))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
