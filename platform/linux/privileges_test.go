//go:build linux

package linux

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckPrivileges(t *testing.T) {
	netAdmin := func() (uint64, error) { return 1 << unix.CAP_NET_ADMIN, nil }
	none := func() (uint64, error) { return 1 << unix.CAP_NET_RAW, nil }
	missing := filepath.Join(t.TempDir(), "tun")
	for _, tc := range []struct {
		name string
		dev  string
		caps func() (uint64, error)
		want string
	}{
		{"no CAP_NET_ADMIN", "/dev/null", none, "tetherd up needs CAP_NET_ADMIN: run it with sudo"},
		{"no device", missing, netAdmin, missing + " is missing: modprobe tun"},
		{"not a device", t.TempDir(), netAdmin, "is not a character device"},
		{"capget fails", "/dev/null", func() (uint64, error) { return 0, errors.New("EPERM") }, "read process capabilities: EPERM"},
		{"fine", "/dev/null", netAdmin, ""},
	} {
		err := checkPrivileges(tc.dev, tc.caps)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := checkPrivileges("", none); err == nil || err.Error() != "tetherd up needs CAP_NET_ADMIN: run it with sudo" {
		t.Errorf("exact message: %v", err)
	}
}

// TestCheckPrivilegesHere checks the real capability read: as root it
// passes where /dev/net/tun exists.
func TestCheckPrivilegesHere(t *testing.T) {
	caps, err := effectiveCaps()
	if err != nil {
		t.Fatal(err)
	}
	err = CheckPrivileges(filepath.Join(t.TempDir(), "tun"))
	if caps&(1<<unix.CAP_NET_ADMIN) == 0 {
		if err == nil || err.Error() != "tetherd up needs CAP_NET_ADMIN: run it with sudo" {
			t.Errorf("without CAP_NET_ADMIN: %v", err)
		}
		return
	}
	if err == nil {
		t.Error("missing device not reported")
	}
}
