package darwin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSettings(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		bypass bool
		bad    string
	}{
		{"auto", true, ""},
		{"off", true, ""},
		{"resolved", true, "dns.mode resolved"},
		{"resolvconf", true, "dns.mode resolvconf"},
		{"auto", false, "lan_bypass"},
	} {
		err := CheckSettings(tc.mode, tc.bypass)
		if (err == nil) != (tc.bad == "") || (err != nil && !strings.Contains(err.Error(), tc.bad)) {
			t.Errorf("CheckSettings(%q, %v) = %v, want an error about %q", tc.mode, tc.bypass, err, tc.bad)
		}
	}
}

func TestCheckExecutable(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "tetherd")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Root's files pass until someone else can write them.
		if err := CheckExecutable(exe); err != nil {
			t.Errorf("root-owned 0755 binary refused: %v", err)
		}
		if err := os.Chmod(exe, 0o775); err != nil {
			t.Fatal(err)
		}
		if err := CheckExecutable(exe); err == nil {
			t.Error("group-writable binary accepted")
		}
		if err := os.Chmod(exe, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(exe, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	// Owned by a user (the test's, or nobody's).
	if err := CheckExecutable(exe); err == nil || !strings.Contains(err.Error(), "someone other than root") {
		t.Errorf("user-owned binary: %v", err)
	}
	if err := CheckExecutable(filepath.Join(dir, "absent")); err == nil {
		t.Error("missing binary accepted")
	}
}
