package darwin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// CheckSettings returns what macOS cannot do of tetherd's configuration:
// a dns.mode other than auto and off (resolved and resolvconf are Linux's),
// and routes.lan_bypass off (see Config.LANBypass). `tetherd up` and
// `tetherd install` check it first, so that the error names the settings.
func CheckSettings(dnsMode string, lanBypass bool) error {
	var errs []error
	switch dnsMode {
	case DNSAuto, DNSOff:
	default:
		errs = append(errs, fmt.Errorf("dns.mode %s is Linux-only; on macOS use auto (the SystemConfiguration dynamic store, and a pf filter that keeps DNS in the tunnel) or off (neither)", dnsMode))
	}
	if !lanBypass {
		errs = append(errs, errors.New("routes.lan_bypass: false is not supported on macOS: the networks the Mac is directly connected to always stay outside the tunnel there (see docs/macos.md)"))
	}
	return errors.Join(errs...)
}

// CheckExecutable refuses a binary that someone other than root could
// replace — the file or its directory owned by another user, or writable
// by group or others — since the LaunchDaemon runs it as root.
func CheckExecutable(exe string) error {
	for _, p := range []string{exe, filepath.Dir(exe)} {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: cannot tell its owner", p)
		}
		if st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%s (uid %d, mode %v) can be changed by someone other than root, and the daemon would run it as root: install the binary first, e.g. 'sudo install -m 755 %s /usr/local/bin/tetherd', then run 'sudo /usr/local/bin/tetherd install'", p, st.Uid, fi.Mode().Perm(), exe)
		}
	}
	return nil
}
