package darwin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	f := &fakeRunner{}
	o := InstallOptions{
		UnitOptions: UnitOptions{Exe: "/usr/local/bin/tetherd", Config: "/etc/tetherd/config.yaml"},
		PlistPath:   filepath.Join(dir, Label+".plist"),
		Runner:      f,
		euid:        func() int { return 0 },
	}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(o.PlistPath)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("plist: %v %v", fi, err)
	}
	// Installing again replaces the loaded job.
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.PlistPath); !os.IsNotExist(err) {
		t.Errorf("plist left: %v", err)
	}
	if err := Uninstall(o); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("second Uninstall: %v", err)
	}
	want := strings.Join([]string{
		"$ /bin/launchctl bootstrap system " + o.PlistPath,
		"$ /bin/launchctl bootout system/dev.tetherd",
		"$ /bin/launchctl bootstrap system " + o.PlistPath,
		"$ /bin/launchctl bootout system/dev.tetherd",
		"",
	}, "\n")
	if got := f.transcript(); got != want {
		t.Errorf("commands:\n%s\nwant:\n%s", got, want)
	}

	o.euid = func() int { return 501 }
	if err := Install(o); err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("Install as a user: %v", err)
	}
}
