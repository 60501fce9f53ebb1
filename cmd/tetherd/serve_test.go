package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// lineWriter hands every complete line written to it to a channel.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte
	lines   chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
}

// servedPeer is a `tetherd serve` running in this process.
type servedPeer struct {
	lines  chan string
	logs   *observer.ObservedLogs
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startServe runs `tetherd serve args...` in a goroutine; it is stopped at the end of
// the test if the test does not stop it.
func startServe(t *testing.T, args ...string) *servedPeer {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	p := &servedPeer{lines: make(chan string, 100), logs: logs, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	c := &cli{
		stdout: &lineWriter{lines: p.lines},
		stderr: p.stderr,
		newLogger: func(cfg daemon.LogConfig) (*zap.Logger, error) {
			return zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zapcore.DebugLevel)).Core())), nil
		},
	}
	go func() { p.done <- runServe(ctx, c, args) }()
	t.Cleanup(func() {
		if err := p.stop(t); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return p
}

// line returns the next line serve printed.
func (p *servedPeer) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case err := <-p.done:
		p.done <- err
		t.Fatalf("serve ended before printing a URI: %v\nstderr: %s", err, p.stderr)
	case <-time.After(20 * time.Second):
		t.Fatal("serve printed no URI within 20s")
	}
	return ""
}

// waitLog waits for a log entry with message msg.
func (p *servedPeer) waitLog(t *testing.T, msg string) observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if e := p.logs.FilterMessage(msg).All(); len(e) > 0 {
			return e[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q log entry", msg)
	return observer.LoggedEntry{}
}

// stop cancels serve's context and returns what runServe returned.
func (p *servedPeer) stop(t *testing.T) error {
	p.once.Do(func() {
		p.cancel()
		select {
		case p.err = <-p.done:
		case <-time.After(30 * time.Second):
			p.err = errors.New("serve did not return within 30s of cancel")
		}
	})
	return p.err
}

// echoServer listens on loopback and echoes every connection until the test ends.
func echoServer(t *testing.T) wire.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return wire.AddrFromAddrPort(netip.MustParseAddrPort(ln.Addr().String()))
}

// checkEcho opens a stream through s to dst and checks that it echoes.
func checkEcho(t *testing.T, s *transport.Session, dst wire.Addr) {
	t.Helper()
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatalf("OpenTCP %v: %v", dst, err)
	}
	defer st.Close()
	msg := []byte("hello through the tether\n")
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// writeFile writes a file with mode 0600 whatever the umask.
func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const loopbackConfig = "serve:\n  policy:\n    allow_loopback: true\nlog:\n  level: debug\n"

// TestServeEndToEnd does what a new user does: start serve, paste the URI it prints
// into a client, reach a destination through it; then restart it and check the URI
// stays the same.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), loopbackConfig)
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", stateDir, "--config", cfg)
	uri := p.line(t)
	uriRE := regexp.MustCompile(`^tether://127\.0\.0\.1:(\d+)\?token=([A-Za-z0-9_-]{43})&pin=(sha256:[A-Za-z0-9_-]{43})$`)
	m := uriRE.FindStringSubmatch(uri)
	if m == nil {
		t.Fatalf("serve printed %q, want tether://127.0.0.1:PORT?token=…&pin=sha256:…", uri)
	}
	port, token, pin := m[1], m[2], m[3]
	if port == "0" {
		t.Fatal("the URI shows port 0, not the bound port")
	}
	serving := p.waitLog(t, "serving")
	if got := serving.ContextMap()["listen"]; got != "127.0.0.1:"+port {
		t.Errorf("serving log: listen = %v", got)
	}
	select {
	case l := <-p.lines:
		t.Errorf("a second line for a loopback listener: %q", l)
	default:
	}

	// The state directory holds what keeps the URI stable.
	if b, err := os.ReadFile(filepath.Join(stateDir, "token")); err != nil || strings.TrimSpace(string(b)) != token {
		t.Errorf("state token: %q, %v", b, err)
	}
	cert, err := transport.LoadOrCreateCertificate(stateDir, nil)
	if err != nil || transport.SPKIPin(cert.Leaf) != pin {
		t.Errorf("the pin is not the state directory's certificate: %v", err)
	}
	for name, want := range map[string]os.FileMode{"token": 0o600, "key.pem": 0o600, "": 0o700} {
		if fi, err := os.Stat(filepath.Join(stateDir, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s/%s: %v, %v; want mode %04o", stateDir, name, fi, err, want)
		}
	}

	s, err := transport.Dial(ctxT(t), uri, nil)
	if err != nil {
		t.Fatalf("Dial %s: %v", uri, err)
	}
	defer s.Close()
	checkEcho(t, s, echoServer(t))

	// A wrong token is refused before the upgrade.
	bad := strings.Replace(uri, token, "not-the-token", 1)
	if _, err := transport.Dial(ctxT(t), bad, nil); err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), token) {
		t.Errorf("wrong token: %v, want a 401 error that does not show the token", err)
	}

	// The HTTP side: a description at /, a health check, nothing else.
	tlsConf, err := transport.PinnedTLSConfig(nil, pin)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tlsConf}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "https://127.0.0.1:" + port
	for _, tc := range []struct {
		path, body string
		code       int
	}{
		{"/", "tetherd peer (tether.v1): connect with 'tetherd up tether://…'\n", 200},
		{"/healthz", "ok\n", 200},
		{"/nope", "404 page not found\n", 404},
		{"/tether", "", http.StatusUpgradeRequired},
	} {
		resp, err := hc.Get(base + tc.path)
		if err != nil {
			t.Errorf("GET %s: %v", tc.path, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || tc.body != "" && string(b) != tc.body {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, b, tc.code, tc.body)
		}
		if tc.code == 200 && resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", tc.path, resp.Header.Get("Content-Type"))
		}
		if resp.ProtoMajor != 1 {
			t.Errorf("GET %s over %s: the peer must speak HTTP/1.1 only", tc.path, resp.Proto)
		}
	}

	// Shutdown is graceful: the open session gets GOAWAY and ends without an error.
	if err := p.stop(t); err != nil {
		t.Fatalf("serve returned %v after cancel", err)
	}
	select {
	case <-s.Done():
		if err := s.Err(); err != nil {
			t.Errorf("client session ended with %v, want a clean close", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("client session still open after the peer stopped")
	}
	for _, msg := range []string{"shutting down", "stopped"} {
		if p.logs.FilterMessage(msg).Len() != 1 {
			t.Errorf("no %q log entry", msg)
		}
	}
	if p.stderr.String() != "" {
		t.Errorf("serve wrote to stderr: %q", p.stderr)
	}

	// A restart with the same state directory prints the same URI.
	p2 := startServe(t, "--listen", "127.0.0.1:"+port, "--state-dir", stateDir, "--config", cfg)
	if again := p2.line(t); again != uri {
		t.Errorf("after a restart serve printed\n%s\nwant the same URI\n%s", again, uri)
	}
	p2.waitLog(t, "serving")
	s2, err := transport.Dial(ctxT(t), uri, nil)
	if err != nil {
		t.Fatalf("Dial after restart: %v", err)
	}
	checkEcho(t, s2, echoServer(t))
	s2.Close()
	if err := p2.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestServeDefaultPolicy: without allow_loopback, the peer refuses its own loopback.
func TestServeDefaultPolicy(t *testing.T) {
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "warn")
	s, err := transport.Dial(ctxT(t), p.line(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.OpenTCP(ctxT(t), echoServer(t))
	var se *transport.StreamError
	if !errors.As(err, &se) || se.Code != wire.CodeDenied {
		t.Errorf("OpenTCP to the peer's loopback: %v, want DENIED", err)
	}
}

func TestServeTokenSources(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, filepath.Join(dir, "tok"), "from-the-token-file-0123456789\n")
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), "serve:\n  token_file: tok\n")
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "s1"), "--config", cfg)
	if l := p.line(t); !strings.Contains(l, "?token=from-the-token-file-0123456789&") {
		t.Errorf("token_file: %s", l)
	}
	if e := p.waitLog(t, "serving"); e.ContextMap()["token"] != "token_file "+tokenFile {
		t.Errorf("serving log: token = %v", e.ContextMap()["token"])
	}
	// --token overrides the file; a short one draws a warning.
	p2 := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "s2"), "--config", cfg, "--token", "a+b/c")
	l := p2.line(t)
	if !strings.Contains(l, "?token=a%2Bb%2Fc&") {
		t.Errorf("--token: %s", l)
	}
	p2.waitLog(t, "serving")
	if p2.logs.FilterMessageSnippet("the token is short").Len() != 1 {
		t.Error("no warning about a short token")
	}
	s, err := transport.Dial(ctxT(t), l, nil)
	if err != nil {
		t.Fatalf("Dial with an escaped token: %v", err)
	}
	s.Close()
}

func TestServePlaintext(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), loopbackConfig)
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", dir, "--config", cfg, "--insecure-plaintext")
	l := p.line(t)
	if !regexp.MustCompile(`^ws://127\.0\.0\.1:\d+/tether\?token=[A-Za-z0-9_-]{43}$`).MatchString(l) {
		t.Fatalf("plaintext serve printed %q, want ws://127.0.0.1:PORT/tether?token=…", l)
	}
	p.waitLog(t, "serving")
	if p.logs.FilterMessageSnippet("TLS must be terminated by a reverse proxy").FilterLevelExact(zapcore.WarnLevel).Len() != 1 {
		t.Error("no warning that TLS must be terminated by a reverse proxy")
	}
	if _, err := os.Stat(filepath.Join(dir, "key.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plaintext serve created a key: %v", err)
	}
	s, err := transport.Dial(ctxT(t), l, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEcho(t, s, echoServer(t))
}

// TestCLI checks exit statuses and messages of the command line.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	open644 := filepath.Join(dir, "open.yaml")
	if err := os.WriteFile(open644, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open644, 0o644)
	badCIDR := writeFile(t, filepath.Join(dir, "bad.yaml"), "serve:\n  policy:\n    deny:\n      - 10.0.0.0/33\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	state := []string{"--state-dir", filepath.Join(dir, "state")}

	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string // regexps; "" means must be empty
	}{
		{nil, 2, "", `^Usage: tetherd <command> \[flags\]\n`},
		{[]string{"help"}, 0, `(?s)^Usage: tetherd <command>.*\n  serve .*\n  version .*\n  help `, ""},
		{[]string{"--help"}, 0, `^Usage: tetherd <command>`, ""},
		{[]string{"help", "serve"}, 0, `(?s)^Usage: tetherd serve \[flags\]\n.*--host NAME\n.*--insecure-plaintext\n.*--listen ADDR\n`, ""},
		{[]string{"serve", "-h"}, 0, `^Usage: tetherd serve`, ""},
		{[]string{"help", "nope"}, 2, "", `^tetherd: unknown command "nope"`},
		{[]string{"version"}, 0, `^tetherd dev \(go1\.\S+, \w+/\w+\)\n$`, ""},
		{[]string{"version", "x"}, 2, "", `^tetherd version: unexpected argument "x"\nRun 'tetherd help version' for usage.\n$`},
		{[]string{"nosuch"}, 2, "", `(?s)^tetherd: unknown command "nosuch"\n\nUsage: tetherd`},
		{[]string{"up"}, 2, "", `(?s)^tetherd up: no peer: give the tether:// line`},
		{[]string{"serve", "--bogus"}, 2, "", `^flag provided but not defined: -bogus\nRun 'tetherd help serve' for usage.\n$`},
		{[]string{"serve", "extra"}, 2, "", `^tetherd serve: unexpected argument "extra"`},
		{[]string{"serve", "--token", ""}, 2, "", `^tetherd serve: --token must not be empty`},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, 1, "", `^tetherd: config file: open .*missing.yaml: no such file or directory\n$`},
		{[]string{"serve", "--config", open644}, 1, "", `^tetherd: config file .*open.yaml is accessible by group or others \(mode 0644\); fix it with: chmod 600 .*open.yaml\n$`},
		{[]string{"serve", "--config", badCIDR}, 1, "", `^tetherd: .*bad.yaml:4: serve.policy.deny\[0\]: invalid CIDR "10.0.0.0/33"\n$`},
		{[]string{"serve", "--listen", "nonsense"}, 1, "", `^tetherd: --listen: invalid address "nonsense"`},
		{[]string{"serve", "--host", "ok.example", "--host", "bad host"}, 1, "", `^tetherd: --host: "bad host" is neither`},
		{[]string{"serve", "--log-level", "loud"}, 1, "", `^tetherd: --log-level: unknown level "loud"`},
		{append([]string{"serve", "--listen", busy.Addr().String()}, state...), 1, "", `^tetherd: listen tcp 127.0.0.1:\d+: bind: address already in use\n$`},
	} {
		var stdout, stderr syncBuffer
		c := &cli{stdout: &stdout, stderr: &stderr, newLogger: func(cfg daemon.LogConfig) (*zap.Logger, error) {
			return zaptest.NewLogger(t), nil
		}}
		code := c.run(ctxT(t), tc.args)
		if code != tc.code {
			t.Errorf("tetherd %q: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout.String(), stderr.String())
		}
		for _, out := range []struct{ name, got, want string }{{"stdout", stdout.String(), tc.stdout}, {"stderr", stderr.String(), tc.stderr}} {
			if out.want == "" && out.got != "" || !regexp.MustCompile(out.want).MatchString(out.got) {
				t.Errorf("tetherd %q: %s\n%s\ndoes not match %s", tc.args, out.name, out.got, out.want)
			}
		}
	}
}

func TestAdvertisedHosts(t *testing.T) {
	machine := func() ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range []string{"fd00::2", "192.0.2.2", "fe80::1", "127.0.0.1", "169.254.1.1", "10.0.0.5", "2001:db8::7", "::ffff:198.51.100.1"} {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	}
	loopbackOnly := func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("fe80::1")}, nil }
	failing := func() ([]netip.Addr, error) { return nil, errors.New("netlink: permission denied") }
	for _, tc := range []struct {
		listen  string
		extra   []string
		ifaddrs func() ([]netip.Addr, error)
		want    []string
		warning string
	}{
		{"127.0.0.1", nil, machine, []string{"127.0.0.1"}, ""},
		{"localhost", []string{"phone.example"}, machine, []string{"phone.example", "localhost"}, ""},
		{"192.0.2.2", []string{"192.0.2.2"}, machine, []string{"192.0.2.2"}, ""},
		{"0.0.0.0", nil, machine, []string{"192.0.2.2", "10.0.0.5", "198.51.100.1"}, ""},
		{"0.0.0.0", []string{"phone.example", "10.0.0.5"}, machine, []string{"phone.example", "10.0.0.5", "192.0.2.2", "198.51.100.1"}, ""},
		{"::", []string{"[fd00::2]"}, machine, []string{"fd00::2", "192.0.2.2", "10.0.0.5", "198.51.100.1", "2001:db8::7"}, ""},
		{"", nil, machine, []string{"192.0.2.2", "10.0.0.5", "198.51.100.1", "fd00::2", "2001:db8::7"}, ""},
		{"0.0.0.0", nil, loopbackOnly, []string{"127.0.0.1"}, "no network address found besides loopback"},
		{"0.0.0.0", []string{"phone.example"}, loopbackOnly, []string{"phone.example"}, ""},
		{"0.0.0.0", nil, failing, []string{"127.0.0.1"}, "cannot list the network addresses (netlink: permission denied): pass --host"},
	} {
		got, warning := advertisedHosts(tc.listen, tc.extra, tc.ifaddrs)
		if !slices.Equal(got, tc.want) || !strings.Contains(warning, tc.warning) || (tc.warning == "") != (warning == "") {
			t.Errorf("advertisedHosts(%q, %q) = %q, %q; want %q, %q", tc.listen, tc.extra, got, warning, tc.want, tc.warning)
		}
	}
}

// buildBinary builds tetherd into a directory every user may read.
func buildBinary(t *testing.T) (bin, dir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	dir, err = os.MkdirTemp("", "tetherd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "tetherd")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, dir
}

// process is a tetherd binary running serve.
type process struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	exited chan struct{}
}

func startProcess(t *testing.T, cred *syscall.Credential, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), lines: make(chan string, 100), stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "HOME=/nonexistent")
	p.cmd.Stderr = p.stderr
	if cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *process) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-p.exited:
		t.Fatalf("tetherd exited (%v) before printing a URI\nstderr: %s", p.cmd.ProcessState, p.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("tetherd printed no URI within 20s\nstderr: %s", p.stderr)
	}
	return ""
}

// signal sends sig and returns the exit status, or fails when the process does not
// exit within timeout.
func (p *process) signal(t *testing.T, sig os.Signal, timeout time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("tetherd still running %v after %v\nstderr: %s", timeout, sig, p.stderr)
	}
	return -1
}

func (p *process) waitStderr(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr has no %q:\n%s", s, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBinary runs the built binary: SIGTERM stops it gracefully with status 0, a
// second signal during a shutdown that waits for a stream exits at once, and (as root)
// it runs as user nobody.
func TestBinary(t *testing.T) {
	bin, dir := buildBinary(t)
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), loopbackConfig)
	state := filepath.Join(dir, "state")
	args := []string{"serve", "--listen", "127.0.0.1:0", "--state-dir", state, "--config", cfg}

	t.Run("SIGTERM", func(t *testing.T) {
		p := startProcess(t, nil, bin, args...)
		s, err := transport.Dial(ctxT(t), p.line(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkEcho(t, s, echoServer(t))
		if code := p.signal(t, syscall.SIGTERM, 15*time.Second); code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0\nstderr: %s", code, p.stderr)
		}
		for _, want := range []string{`"msg":"serving"`, `"msg":"shutting down","reason":"received terminated"`, `"msg":"stopped"`} {
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("stderr has no %s:\n%s", want, p.stderr)
			}
		}
	})

	t.Run("second signal", func(t *testing.T) {
		p := startProcess(t, nil, bin, args...)
		s, err := transport.Dial(ctxT(t), p.line(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// A stream to a destination that never closes keeps the shutdown waiting.
		st, err := s.OpenTCP(ctxT(t), echoServer(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		p.waitStderr(t, `"msg":"shutting down"`)
		start := time.Now()
		if code := p.signal(t, syscall.SIGTERM, 5*time.Second); code != 128+int(syscall.SIGTERM) {
			t.Errorf("exit status %d after a second signal, want %d", code, 128+int(syscall.SIGTERM))
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the second signal took %v to end tetherd", d)
		}
		if !strings.Contains(p.stderr.String(), "tetherd: received terminated again: exiting at once") {
			t.Errorf("stderr: %s", p.stderr)
		}
	})

	t.Run("nobody", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("not root: cannot switch to user nobody")
		}
		const nobody = 65534
		home := filepath.Join(dir, "nobody")
		if err := os.Mkdir(home, 0o700); err != nil {
			t.Fatal(err)
		}
		nobodyCfg := writeFile(t, filepath.Join(home, "c.yaml"), loopbackConfig)
		for _, p := range []string{home, nobodyCfg} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
		stateDir := filepath.Join(home, "state")
		p := startProcess(t, &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, bin,
			"serve", "--listen", "127.0.0.1:0", "--state-dir", stateDir, "--config", nobodyCfg)
		s, err := transport.Dial(ctxT(t), p.line(t), nil)
		if err != nil {
			t.Fatalf("Dial the peer running as nobody: %v\nstderr: %s", err, p.stderr)
		}
		defer s.Close()
		checkEcho(t, s, echoServer(t))
		if code := p.signal(t, syscall.SIGTERM, 15*time.Second); code != 0 {
			t.Errorf("exit status %d, want 0\nstderr: %s", code, p.stderr)
		}
		if strings.Contains(p.stderr.String(), "running as root") {
			t.Error("the process ran as root")
		}
		for _, name := range []string{"", "token", "key.pem", "cert.pem"} {
			fi, err := os.Stat(filepath.Join(stateDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != nobody {
				t.Errorf("%s/%s is not owned by nobody: %+v", stateDir, name, fi.Sys())
			}
		}
	})
}
