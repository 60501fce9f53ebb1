package daemon

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tetherd/tetherd/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeConfig writes content to dir/c.yaml with mode 0600 and returns its path.
func writeConfig(t testing.TB, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// WriteFile keeps the mode of an existing file, and the umask may drop bits.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigGood(t *testing.T) {
	tests := []struct {
		name, yaml string
		check      func(t *testing.T, c *Config)
	}{
		{"empty", "", func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("empty file: got %+v, want the defaults", c)
			}
		}},
		{"comments only", "# nothing here\n\n", func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("got %+v, want the defaults", c)
			}
		}},
		{"empty sections", "serve:\nlog:\nlimits: {}\n", func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("got %+v, want the defaults", c)
			}
		}},
		{"everything", `
serve:
  listen: "[::]:9443"
  path: /t/v1
  token: abcdefghijklmnopqrstuvwxyz
  state_dir: /var/lib/tetherd
  insecure_plaintext: true
  hosts: [phone.example, 203.0.113.7, "[2001:db8::1]"]
  dial_timeout: 300ms
  udp_idle_timeout: 1h30m
  policy:
    allow: [10.0.0.0/8, 192.0.2.1, "2001:db8::/32"]
    deny:
      - 10.1.0.0/16
    allow_loopback: true
    allow_link_local: true
    allow_ports: [80, "443", 8000-8999]
    deny_ports: ["25"]
log:
  level: debug
  format: json
limits:
  initial_window: 1MiB
  max_window: 32 MiB
  session_window: 128mib
  max_frame: 16384
  write_buffer: 1000kB
  dgram_queue: 1MB
  max_streams: 100
  max_pending_opens: 10
  keepalive: 1s
  keepalive_timeout: 3s
`, func(t *testing.T, c *Config) {
			s := c.Serve
			if s.Listen != "[::]:9443" || s.Path != "/t/v1" || s.Token != "abcdefghijklmnopqrstuvwxyz" ||
				s.StateDir != "/var/lib/tetherd" || !s.InsecurePlaintext || len(s.Hosts) != 3 ||
				s.DialTimeout != Duration(300*time.Millisecond) || s.UDPIdleTimeout != Duration(90*time.Minute) {
				t.Errorf("serve = %+v", s)
			}
			if c.Log != (LogConfig{Level: "debug", Format: "json"}) {
				t.Errorf("log = %+v", c.Log)
			}
			want := &transport.Config{
				InitialWindow: 1 << 20, MaxWindow: 32 << 20, SessionWindow: 128 << 20, MaxFrame: 16384,
				WriteBuffer: 1000e3, DgramQueue: 1e6, MaxStreams: 100, MaxPendingOpens: 10,
				MaxPendingOpensPerHost: 10, // the default 64, at most max_pending_opens
				KeepAlive:              time.Second, KeepAliveTimeout: 3 * time.Second,
			}
			if got, err := c.Limits.Transport(); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Transport() = %+v, %v; want %+v", got, err, want)
			}
			p, err := s.Policy()
			if err != nil {
				t.Fatal(err)
			}
			wantP := &transport.Policy{
				Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32")},
				Deny:  []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, AllowLoopback: true, AllowLinkLocal: true,
				AllowPorts: []transport.PortRange{{First: 80, Last: 80}, {First: 443, Last: 443}, {First: 8000, Last: 8999}},
				DenyPorts:  []transport.PortRange{{First: 25, Last: 25}},
			}
			if !reflect.DeepEqual(p, wantP) {
				t.Errorf("Policy() = %+v, want %+v", p, wantP)
			}
			if err := p.Check(netip.MustParseAddr("10.2.3.4"), 8080); err != nil {
				t.Errorf("allowed destination refused: %v", err)
			}
			if err := p.Check(netip.MustParseAddr("10.1.3.4"), 80); err == nil {
				t.Error("denied network allowed")
			}
		}},
		{"zero limits mean transport defaults", "limits:\n  initial_window: 0\n  max_streams: 0\n  keepalive: 0s\n", func(t *testing.T, c *Config) {
			if got, err := c.Limits.Transport(); err != nil || got.InitialWindow != 0 || got.MaxStreams != 0 {
				t.Errorf("Transport() = %+v, %v", got, err)
			}
		}},
		{"anchors", "serve:\n  hosts: &h [a.example]\n  policy:\n    allow: [10.0.0.0/8]\n", func(t *testing.T, c *Config) {
			if len(c.Serve.Hosts) != 1 {
				t.Errorf("hosts = %v", c.Serve.Hosts)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadConfig(writeConfig(t, t.TempDir(), tt.yaml))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after LoadConfig: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadConfigBad(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error, after the directory
	}{
		{"unknown top-level key", "serve: {}\nserver:\n  listen: x\n",
			[]string{`c.yaml:2: server: unknown key "server"; did you mean "serve"?`}},
		{"unknown key, no suggestion", "foo: 1\n",
			[]string{`c.yaml:1: foo: unknown key "foo"; known keys here: peer, token, token_file, tun, routes, dns, journal_dir, control_socket, metrics, serve, log, limits`}},
		{"unknown nested key", "serve:\n  policy:\n    allow_loopbak: true\n",
			[]string{`c.yaml:3: serve.policy.allow_loopbak: unknown key "allow_loopbak"; did you mean "allow_loopback"?`}},
		{"wrong type bool", "serve:\n  insecure_plaintext: maybe\n",
			[]string{`c.yaml:2: serve.insecure_plaintext: want true or false, got "maybe"`}},
		{"wrong type int", "limits:\n  max_streams: lots\n",
			[]string{`c.yaml:2: limits.max_streams: want an integer, got "lots"`}},
		{"scalar for list", "serve:\n  hosts: phone.example\n",
			[]string{`c.yaml:2: serve.hosts: want a list, got "phone.example"`}},
		{"scalar for section", "serve: 5\n", []string{`c.yaml:1: serve: want a mapping, got 5`}},
		{"mapping for string", "serve:\n  listen:\n    host: x\n", []string{`c.yaml:3: serve.listen: want a string, got a mapping`}},
		{"list at top", "- a\n", []string{`c.yaml:1: want a mapping, got a list`}},
		{"several type errors", "serve:\n  listen: 1\n  insecure_plaintext: 2\nlimits:\n  max_streams: x\n  bogus: 1\n", []string{
			`c.yaml:3: serve.insecure_plaintext: want true or false, got 2`,
			`c.yaml:5: limits.max_streams: want an integer, got "x"`,
			`c.yaml:6: limits.bogus: unknown key "bogus"`,
		}},
		{"bad CIDR, block list", `serve:
  listen: 0.0.0.0:8443
  policy:
    allow_loopback: false
    deny:
      - 10.0.0.0/8
      - 10.0.0.0/33
`, []string{`c.yaml:7: serve.policy.deny[1]: invalid CIDR "10.0.0.0/33"`}},
		{"bad CIDR, flow list", "serve:\n  policy:\n    allow: [10.0.0.0/8, nonsense]\n",
			[]string{`c.yaml:3: serve.policy.allow[1]: invalid CIDR "nonsense"`}},
		{"bad ports", "serve:\n  policy:\n    allow_ports: [80, 9000-80]\n    deny_ports:\n      - http\n      - 70000\n", []string{
			`c.yaml:3: serve.policy.allow_ports[1]: invalid port range "9000-80"`,
			`c.yaml:5: serve.policy.deny_ports[0]: invalid port range "http"`,
			`c.yaml:6: serve.policy.deny_ports[1]: invalid port range "70000"`,
		}},
		{"serve limits", "serve:\n  max_sessions: -1\n  auth_failure_burst: -2\n  relay_buffers: 1KiB\n  max_unauthenticated_conns: 4\n  max_unauthenticated_per_source: 9\n", []string{
			`c.yaml:2: serve.max_sessions: must not be negative`,
			`c.yaml:3: serve.auth_failure_burst: want -1 (off), 0 (the default) or more`,
			`c.yaml:4: serve.relay_buffers: want at least 64KiB`,
			`c.yaml:6: serve.max_unauthenticated_per_source: 9 is more than max_unauthenticated_conns (4)`,
		}},
		{"relative control socket", "control_socket: run/control.sock\n",
			[]string{`c.yaml:1: control_socket: must be an absolute path, not "run/control.sock"`}},
		{"bad metrics address", "metrics:\n  listen: localhost\n",
			[]string{`c.yaml:2: metrics.listen: invalid address "localhost": want host:port`}},
		{"unknown metrics key", "metrics:\n  listen: 127.0.0.1:9100\n  path: /m\n",
			[]string{`c.yaml:3: metrics.path: unknown key "path"`}},
		{"duration without unit", "serve:\n  dial_timeout: 10\n",
			[]string{`c.yaml:2: serve.dial_timeout: duration 10 has no unit: write it as "10s"`}},
		{"bad duration", "limits:\n  keepalive: soon\n",
			[]string{`c.yaml:2: limits.keepalive: invalid duration "soon"`}},
		{"negative duration", "serve:\n  udp_idle_timeout: -1s\n",
			[]string{`c.yaml:2: serve.udp_idle_timeout: duration "-1s" is negative`}},
		{"duration as list", "serve:\n  udp_idle_timeout: [1s]\n",
			[]string{`c.yaml:2: serve.udp_idle_timeout: want a duration such as "10s" or "2m", got a list`}},
		{"bad size", "limits:\n  max_window: 16 megs\n",
			[]string{`c.yaml:2: limits.max_window: invalid size "16 megs"`}},
		{"negative size", "limits:\n  dgram_queue: -1\n",
			[]string{`c.yaml:2: limits.dgram_queue: invalid size "-1"`}},
		{"fractional size", "limits:\n  max_frame: 1.5KiB\n",
			[]string{`c.yaml:2: limits.max_frame: invalid size "1.5KiB"`}},
		{"huge size", "limits:\n  max_frame: 99999999999GiB\n",
			[]string{`c.yaml:2: limits.max_frame: size "99999999999GiB" is too large`}},
		{"size out of range", "limits:\n  max_frame: 2MiB\n",
			[]string{`c.yaml:2: limits.max_frame: 2MiB out of range [1KiB, 1048566]`}},
		{"window order", "limits:\n  initial_window: 2MiB\n  max_window: 1MiB\n",
			[]string{`c.yaml:3: limits.max_window: 1MiB out of range [initial_window (2MiB)`}},
		{"keepalive order, key not in file", "limits:\n  keepalive: 1m\n",
			[]string{`c.yaml: limits.keepalive_timeout: 15s is shorter than keepalive (1m)`}},
		{"negative streams", "limits:\n  max_streams: -1\n", []string{`c.yaml:2: limits.max_streams: must be positive`}},
		{"negative opens per host", "limits:\n  max_pending_opens_per_host: -1\n", []string{`c.yaml:2: limits.max_pending_opens_per_host: must be positive`}},
		{"token and token_file", "serve:\n  token: abc\n  token_file: /x\n",
			[]string{`c.yaml:3: serve.token_file: token and token_file are mutually exclusive`}},
		{"token with space", "serve:\n  token: \"a b\"\n",
			[]string{`c.yaml:2: serve.token: token contains white space`}},
		{"log", "log:\n  level: verbose\n  format: xml\n", []string{
			`c.yaml:2: log.level: unknown level "verbose": want debug, info, warn or error`,
			`c.yaml:3: log.format: unknown format "xml": want auto, console or json`,
		}},
		{"path", "serve:\n  path: tether\n", []string{`c.yaml:2: serve.path: invalid path "tether": must start with "/"`}},
		{"path taken", "serve:\n  path: /healthz\n", []string{`c.yaml:2: serve.path: path "/healthz" is taken`}},
		{"path pattern", "serve:\n  path: /{x}\n", []string{`c.yaml:2: serve.path: invalid path "/{x}"`}},
		{"listen", "serve:\n  listen: nonsense\n", []string{`c.yaml:2: serve.listen: invalid address "nonsense"`}},
		{"listen port", "serve:\n  listen: \":99999\"\n", []string{`c.yaml:2: serve.listen: invalid port "99999"`}},
		{"host", "serve:\n  hosts:\n    - ok.example\n    - bad host\n",
			[]string{`c.yaml:4: serve.hosts[1]: "bad host" is neither an IP address nor a host name`}},
		{"syntax", "serve:\n  listen: [\n", []string{`c.yaml:2: did not find expected node content`}},
		{"tab", "serve:\n\tlisten: x\n", []string{`c.yaml:2: found character that cannot start any token`}},
		{"duplicate key", "serve:\n  listen: a:1\n  listen: b:2\n", []string{`c.yaml:3: serve.listen: duplicate key (first at line 2)`}},
		{"flow list of wrong types", "serve:\n  hosts: [a, {b: 1}, c, [d]]\n", []string{
			`c.yaml:2: serve.hosts[1]: want a string, got a mapping`,
			`c.yaml:2: serve.hosts[3]: want a string, got a list`,
		}},
		{"many problems", "serve:\n  policy:\n    deny: [" + strings.Repeat("x, ", 30) + "]\n", append(
			slices.Repeat([]string{`c.yaml:3: serve.policy.deny[`}, 19), `c.yaml: and 11 more problems`)},
		{"two documents", "serve: {}\n---\nlog: {}\n", []string{`c.yaml:2: a second YAML document is not allowed`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, t.TempDir(), tt.yaml)
			c, err := LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig succeeded: %+v", c)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, filepath.Dir(path)+"/"+w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", msg, w)
				}
			}
			if n := strings.Count(msg, "\n") + 1; n != len(tt.want) {
				t.Errorf("error has %d lines, want %d:\n%s", n, len(tt.want), msg)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.File != path {
				t.Errorf("error is not a *ConfigError for %s: %#v", path, err)
			}
		})
	}
}

func TestLoadConfigPermissions(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, "log:\n  level: debug\n")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) || !strings.Contains(err.Error(), "group or others") {
			t.Errorf("mode %04o: err = %v, want a refusal that says chmod 600 %s", mode, err, path)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadConfig(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	quoted := filepath.Join(dir, "my config.yaml")
	if err := os.WriteFile(quoted, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(quoted, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(quoted); err == nil || !strings.Contains(err.Error(), "chmod 600 '"+quoted+"'") {
		t.Errorf("path with a space: %v", err)
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "etc")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenPath := filepath.Join(sub, "token")
	if err := os.WriteFile(tokenPath, []byte("s3cret-token-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A relative token_file is relative to the configuration file.
	cfgPath := filepath.Join(sub, "c.yaml")
	if err := os.WriteFile(cfgPath, []byte("serve:\n  token_file: token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Serve.TokenFile != tokenPath {
		t.Errorf("token_file = %q, want %q", c.Serve.TokenFile, tokenPath)
	}
	if tok, err := c.Serve.ReadToken(); err != nil || tok != "s3cret-token-value" {
		t.Errorf("ReadToken = %q, %v", tok, err)
	}

	for _, tc := range []struct {
		content string
		mode    os.FileMode
		want    string // "" = no error
		token   string
	}{
		{"abc\r\n", 0o600, "", "abc"},
		{"abc", 0o400, "", "abc"},
		{"abc\n", 0o640, "chmod 600 " + tokenPath, ""},
		{"\n", 0o600, "token is empty", ""},
		{"two words\n", 0o600, "white space", ""},
		{"abc\n\n", 0o600, "white space", ""},
		{strings.Repeat("x", 5000), 0o600, "larger than", ""},
	} {
		if err := os.WriteFile(tokenPath, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tokenPath, tc.mode); err != nil {
			t.Fatal(err)
		}
		tok, err := c.Serve.ReadToken()
		switch {
		case tc.want == "" && (err != nil || tok != tc.token):
			t.Errorf("%q: ReadToken = %q, %v; want %q", tc.content, tok, err, tc.token)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q mode %04o: err = %v, want %q", tc.content, tc.mode, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "two words"):
			t.Errorf("error shows the token: %v", err)
		}
	}
	if tok, err := (&ServeConfig{}).ReadToken(); tok != "" || err != nil {
		t.Errorf("no token configured: %q, %v", tok, err)
	}
	if tok, err := (&ServeConfig{Token: "inline"}).ReadToken(); tok != "inline" || err != nil {
		t.Errorf("inline token: %q, %v", tok, err)
	}
}

func TestLoadOrCreateToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	tok, err := LoadOrCreateToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(tok) {
		t.Errorf("token %q is not 32 bytes of base64url", tok)
	}
	fi, err := os.Stat(filepath.Join(dir, TokenFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, %v", di, err)
	}
	again, err := LoadOrCreateToken(dir)
	if err != nil || again != tok {
		t.Errorf("second call: %q, %v; want %q", again, err, tok)
	}
	other, err := LoadOrCreateToken(t.TempDir())
	if err != nil || other == tok {
		t.Errorf("another directory: %q, %v", other, err)
	}
	// A damaged token file is reported, not silently replaced.
	if err := os.WriteFile(filepath.Join(dir, TokenFileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateToken(dir); err == nil {
		t.Error("empty token file accepted")
	}
}

// TestExampleConfig loads config.yaml from the repository root: it must be valid,
// hold exactly the defaults, and mention every key.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Git checkouts are 0644, which LoadConfig refuses.
	c, err := LoadConfig(writeConfig(t, t.TempDir(), string(data)))
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	nilEmptySlices(reflect.ValueOf(c).Elem())
	if !reflect.DeepEqual(c, DefaultConfig()) {
		t.Errorf("config.yaml differs from DefaultConfig():\n got %+v\nwant %+v", c, DefaultConfig())
	}
	var keys []string
	var collect func(t reflect.Type)
	collect = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			keys = append(keys, name)
			if f.Type.Kind() == reflect.Struct && f.Type.NumMethod() == 0 {
				collect(f.Type)
			}
		}
	}
	collect(reflect.TypeFor[Config]())
	for _, k := range keys {
		if !regexp.MustCompile(`(?m)^ *(# )?` + regexp.QuoteMeta(k) + `:`).Match(data) {
			t.Errorf("config.yaml does not document %q", k)
		}
	}
	if !regexp.MustCompile(`(?m)^  # token_file:`).Match(data) {
		t.Error("config.yaml: token_file must be commented out")
	}
}

// nilEmptySlices sets the empty slices in the struct v to nil ("hosts: []" is nil in
// DefaultConfig).
func nilEmptySlices(v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.Slice && f.Len() == 0:
			f.SetZero()
		case f.Kind() == reflect.Struct:
			nilEmptySlices(f)
		}
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
	}{
		{"0", 0}, {"65536", 65536}, {"256KiB", 256 << 10}, {"16MiB", 16 << 20}, {"1GiB", 1 << 30},
		{"16 mib", 16 << 20}, {"500kB", 500e3}, {"10MB", 10e6}, {"1gb", 1e9}, {"12B", 12}, {" 7 KiB ", 7 << 10},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1.5MiB", "16M", "16 megs", "0x10", "9223372036854775808", "9999999999GiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %v, want an error", in, got)
		}
	}
	for s, want := range map[Size]string{0: "0", 1000: "1000", 1024: "1KiB", 256 << 10: "256KiB", 16 << 20: "16MiB", 3 << 30: "3GiB", 1536: "1536"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second: "10s", 2 * time.Minute: "2m", 90 * time.Minute: "1h30m", time.Hour: "1h",
		300 * time.Millisecond: "300ms", 61 * time.Second: "1m1s",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := DefaultConfig()
	c.Serve.PolicyConfig.Deny = []string{"10.0.0.0/8", "10.0.0.0/33"}
	c.Log.Level = "loud"
	err := c.Validate()
	want := "serve.policy.deny[1]: invalid CIDR \"10.0.0.0/33\"\nlog.level: unknown level \"loud\": want debug, info, warn or error"
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want\n%s", err, want)
	}
	if _, err := c.Serve.Policy(); err == nil || !strings.Contains(err.Error(), "deny[1]") {
		t.Errorf("Policy = %v", err)
	}
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "serve.listen") {
		t.Errorf("zero Config: %v, want a complaint about serve.listen", err)
	}
}

func TestResolveStateDir(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/xdg/state")
	t.Setenv("HOME", "/home/u")
	for _, tc := range []struct{ dir, xdg, want string }{
		{"", "/xdg/state", "/xdg/state/tetherd"},
		{"", "relative/ignored", "/home/u/.local/state/tetherd"},
		{"", "", "/home/u/.local/state/tetherd"},
		{"/srv/tetherd", "/xdg/state", "/srv/tetherd"},
		{"~/tetherd", "", "/home/u/tetherd"},
	} {
		t.Setenv("XDG_STATE_HOME", tc.xdg)
		got, err := (&ServeConfig{StateDir: tc.dir}).ResolveStateDir()
		if err != nil || got != tc.want {
			t.Errorf("state_dir %q, XDG_STATE_HOME %q: %q, %v; want %q", tc.dir, tc.xdg, got, err, tc.want)
		}
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "")
	if got, err := (&ServeConfig{}).ResolveStateDir(); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Errorf("no HOME: %q, %v", got, err)
	}
}

func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		cfg      LogConfig
		terminal bool
		want     string // regexp of the output of one Info and one Debug call
	}{
		{LogConfig{Level: "info", Format: "auto"}, false, `^\{"level":"info","time":"\d{4}-\d\d-\d\dT[0-9:.]+[-+Z0-9]*","msg":"hello","k":"v"\}\n$`},
		{LogConfig{Level: "debug", Format: "auto"}, true, `^\d{4}-\d\d-\d\dT\S+\tINFO\thello\t\{"k": "v"\}\n\S+\tDEBUG\tdetail\n$`},
		{LogConfig{Level: "warn", Format: "console"}, false, `^$`},
		{LogConfig{Level: "debug", Format: "json"}, true, `^\{"level":"info".*\n\{"level":"debug".*"msg":"detail"\}\n$`},
	} {
		var buf bytes.Buffer
		log, err := newLogger(tc.cfg, tc.terminal, zapcore.AddSync(&buf))
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello", zap.String("k", "v"))
		log.Debug("detail")
		if !regexp.MustCompile(tc.want).MatchString(buf.String()) {
			t.Errorf("%+v terminal=%v: output\n%q\ndoes not match %s", tc.cfg, tc.terminal, buf.String(), tc.want)
		}
		if strings.Contains(buf.String(), "\x1b[") {
			t.Errorf("%+v: colors in the output", tc.cfg)
		}
	}
	if _, err := NewLogger(LogConfig{Level: "trace"}, false); err == nil {
		t.Error("level trace accepted")
	}
	if _, err := NewLogger(LogConfig{Level: "info", Format: "xml"}, false); err == nil {
		t.Error("format xml accepted")
	}
}

// FuzzLoadConfig: no input may make LoadConfig panic, and whatever it accepts must be
// valid and convertible.
func FuzzLoadConfig(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join("..", "config.yaml")); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"", "serve: 5\n", "- a\n", "serve:\n  policy:\n    deny: [10.0.0.0/8, 10.0.0.0/33]\n",
		"limits:\n  max_window: 1KiB\n", "serve:\n  dial_timeout: 10\n", "a: &a [*a]\n",
		"serve: {}\n---\nlog: {}\n", "serve:\n  listen: [\n", "<<: {serve: {listen: x}}\n",
		"serve:\n  hosts: !!binary aGVsbG8=\n", "limits: {max_streams: 1e3, keepalive: !!int 5}\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir() // one per worker process, whose inputs run one at a time
	f.Fuzz(func(t *testing.T, data []byte) {
		path := writeConfig(t, dir, string(data))
		c, err := LoadConfig(path)
		if err != nil {
			if c != nil {
				t.Fatal("config and error both returned")
			}
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error does not start with the file name: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
		if _, err := c.Serve.Policy(); err != nil {
			t.Fatalf("Policy: %v", err)
		}
		if _, err := c.Limits.Transport(); err != nil {
			t.Fatalf("Transport: %v", err)
		}
	})
}
