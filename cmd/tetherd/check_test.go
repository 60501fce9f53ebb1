package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := (&cli{stdout: &out, stderr: &errb}).run(context.Background(), append([]string{"check"}, args...))
		return code, out.String(), errb.String()
	}

	tokenFile := writeFile(t, filepath.Join(dir, "token"), "s3cret-token\n")
	good := writeFile(t, filepath.Join(dir, "good.yaml"), `peer: "tether://192.0.2.1:8443?token=abc&pin=sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
token_file: token
routes:
  exclude: [10.0.0.0/8]
metrics:
  listen: 127.0.0.1:9470
`)
	code, out, errs := run("--config", good)
	if code != 0 {
		t.Fatalf("valid config: exit %d: %s", code, errs)
	}
	for _, want := range []string{good + ": valid", "tether://192.0.2.1:8443", "tether0, MTU 1500", "except 10.0.0.0/8", "LAN bypass on",
		"http://127.0.0.1:9470/metrics", "/run/tetherd/control.sock (up)"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "abc") || strings.Contains(out, "s3cret") {
		t.Errorf("check printed a token:\n%s", out)
	}

	// A bad value: file, line and key.
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "tun:\n  mtu: 1500\nroutes:\n  include: [10.0.0.0/33]\n")
	if code, _, errs := run("--config", bad); code != 1 || !strings.Contains(errs, bad+":4: routes.include[0]") {
		t.Errorf("bad CIDR: exit %d, %q", code, errs)
	}
	// A config others can read: refused with the chmod that fixes it.
	os.Chmod(good, 0o644)
	if code, _, errs := run("--config", good); code != 1 || !strings.Contains(errs, "chmod 600") {
		t.Errorf("readable config: exit %d, %q", code, errs)
	}
	os.Chmod(good, 0o600)
	// The token file is checked too.
	os.Chmod(tokenFile, 0o640)
	if code, _, errs := run("--config", good); code != 1 || !strings.Contains(errs, "token_file") || !strings.Contains(errs, "chmod") {
		t.Errorf("readable token file: exit %d, %q", code, errs)
	}
	os.Remove(tokenFile)
	if code, _, errs := run("--config", good); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing token file: exit %d, %q", code, errs)
	}
	// No such file, and a stray argument.
	if code, _, errs := run("--config", filepath.Join(dir, "nope.yaml")); code != 1 || !strings.Contains(errs, "nope.yaml") {
		t.Errorf("missing config: exit %d, %q", code, errs)
	}
	if code, _, _ := run("extra"); code != 2 {
		t.Errorf("stray argument: exit %d, want 2", code)
	}
}
