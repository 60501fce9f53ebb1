package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseConfig decodes arbitrary YAML in memory (FuzzLoadConfig goes through a
// file) and checks what every consumer of a loaded configuration relies on: a config
// that loads gives client settings (tetherd up), a policy and limits (tetherd serve)
// without error, and validates again; a config that does not load fails with a
// *ConfigError whose every line names the file.
func FuzzParseConfig(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join("..", "config.yaml")); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"peer: tether://h:1?token=abc\ntun:\n  mtu: 1280\n",
		"routes:\n  include: [10.0.0.0/8, \"::/0\"]\n  exclude: [10.1.0.0/16]\n",
		"dns:\n  servers: [10.255.77.2, \"fd74::53\"]\n  hijack: true\n",
		"tun:\n  ipv4: 10.0.0.1/33\n",
		"tun:\n  ipv6: \"::ffff:1.2.3.4/120\"\n",
		"serve:\n  policy:\n    allow_ports: [\"1-65535\", \"0\"]\n",
		"limits:\n  keepalive: 1s\n  keepalive_timeout: 500ms\n",
		"peer: \"\\x00\"\n",
		"dns: {mode: resolved}\n",
	} {
		f.Add([]byte(s))
	}
	const file = "fuzz.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data, file)
		if err != nil {
			if c != nil {
				t.Fatal("config and error both returned")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T, want *ConfigError: %v", err, err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, file) {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		cs, err := c.Client()
		if err != nil {
			t.Fatalf("Client: %v", err)
		}
		for _, p := range append(append(cs.TUNAddrs, cs.Include...), cs.Exclude...) {
			if !p.IsValid() {
				t.Fatalf("Client returned an invalid prefix: %+v", cs)
			}
		}
		if _, err := c.Serve.Policy(); err != nil {
			t.Fatalf("Policy: %v", err)
		}
		if _, err := c.Limits.Transport(); err != nil {
			t.Fatalf("Transport: %v", err)
		}
	})
}

// FuzzReadTokenFile checks the token file reader: a token it returns is one a client
// can send in a header, and its errors never show the file's content.
func FuzzReadTokenFile(f *testing.F) {
	for _, s := range []string{"abcdefghijklmnopqrstuvwxyz0123456789-_AB\n", "tok en\n", "tok\r\n", "\n", "", "tok\n\n", "\xff\xfe", strings.Repeat("a", 1025)} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "token")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tok, err := ReadTokenFile(path)
		if err != nil {
			content := strings.TrimSpace(string(data))
			if len(content) >= 8 && strings.Contains(err.Error(), content) {
				t.Fatalf("error %q shows the file's content", err)
			}
			return
		}
		if checkToken(tok) != nil || strings.ContainsAny(tok, "\r\n") || tok == "" {
			t.Fatalf("ReadTokenFile returned a token a header cannot carry: %q", tok)
		}
		if !strings.HasPrefix(string(data), tok) {
			t.Fatalf("token %q is not the file's content %q", tok, data)
		}
	})
}
