package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// socks5Connect opens a SOCKS5 CONNECT to dst through the proxy at addr.
func socks5Connect(t *testing.T, addr string, dst *net.TCPAddr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0, 1}
	req = append(req, dst.IP.To4()...)
	req = append(req, byte(dst.Port>>8), byte(dst.Port))
	c.Write(req)
	reply := make([]byte, 2+10)
	if _, err := io.ReadFull(c, reply); err != nil || reply[3] != 0 {
		t.Fatalf("socks reply %v, %v", reply, err)
	}
	return c
}

// TestProxyStatusFlowsAndMetrics runs `tetherd proxy` against a `tetherd serve` in this
// process and checks what status, flows and the metrics endpoint say about a live
// connection through it — found without --socket, as a user would run them.
func TestProxyStatusFlowsAndMetrics(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"),
		"--config", writeFile(t, filepath.Join(dir, "serve.yaml"), loopbackConfig))
	uri := p.line(t)

	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), "journal_dir: "+filepath.Join(dir, "journal")+"\n")
	listen, metrics := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	pc := &cli{stdout: io.Discard, stderr: io.Discard, newLogger: func(daemon.LogConfig) (*zap.Logger, error) {
		return zaptest.NewLogger(t), nil
	}}
	go func() {
		done <- runProxy(ctx, pc, []string{uri, "--listen", listen, "--metrics", metrics, "--config", cfg})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	}
	defer stop()
	sock := filepath.Join(dir, "run", "tetherd", "proxy.sock")
	// The socket is made by listen(2) with the umask's mode and then chmod'ed to
	// 0600 (in a directory only the owner can enter): wait for both.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(sock)
		if err == nil && fi.Mode().Perm() == 0o600 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy made no control socket of mode 0600: %v %v", fi, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("control socket directory mode: %v %v", fi, err)
	}

	echo := testnet.ServeTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
	c := socks5Connect(t, listen, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(echo.Port())})
	defer c.Close()
	c.Write(make([]byte, 4096))
	if _, err := io.ReadFull(c, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		cc := &cli{stdout: &out, stderr: &errb}
		if code := cc.run(context.Background(), args); code != 0 {
			t.Fatalf("tetherd %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return out.String()
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(run("status", "--json", "--config", cfg)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != "proxy" || st.State != "connected" || st.Listen != listen || st.TCPFlows != 1 || st.TCPFlowsTotal != 1 ||
		st.BytesUp < 4096 || st.BytesDown < 4096 || !strings.HasPrefix(st.Peer, "tether://127.0.0.1:") || strings.Contains(st.Peer, tokenOf(t, uri)) {
		t.Fatalf("status %+v", st)
	}
	if out := run("status", "--config", cfg); !strings.Contains(out, "tetherd proxy is running: connected to tether://127.0.0.1:") ||
		!strings.Contains(out, "listening   "+listen) {
		t.Errorf("status:\n%s", out)
	}
	out := run("flows", "--config", cfg)
	if !strings.Contains(out, "ID") || !strings.Contains(out, "tcp") || !strings.Contains(out, c.LocalAddr().String()) ||
		!strings.Contains(out, echo.String()) || !strings.Contains(out, "4.0 KiB") {
		t.Errorf("flows:\n%s", out)
	}
	var flows []daemon.Flow
	if err := json.Unmarshal([]byte(run("flows", "--json", "--config", cfg)), &flows); err != nil || len(flows) != 1 || flows[0].BytesOut != 4096 {
		t.Errorf("flows --json: %+v %v", flows, err)
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"tetherd_connected 1\n", `tetherd_flows{proto="tcp"} 1` + "\n", "go_goroutines "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	c.Close()
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	var errb bytes.Buffer
	if code := (&cli{stdout: io.Discard, stderr: &errb}).run(context.Background(), []string{"status", "--config", cfg}); code != 1 ||
		!strings.Contains(errb.String(), "no tetherd up or proxy is running") || !strings.Contains(errb.String(), sock) {
		t.Errorf("status after stop: exit %d, %q", code, errb.String())
	}
}

func TestPrintFlows(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printFlows(&b, nil, now)
	if b.String() != "no open flows\n" {
		t.Errorf("%q", b.String())
	}
	b.Reset()
	printFlows(&b, []daemon.Flow{
		{ID: 7, Proto: "tcp", Src: "10.255.77.1:40000", Dst: "198.51.100.10:443", Started: now.Add(-3725 * time.Second), BytesOut: 2048, BytesIn: 5 << 20},
		{ID: 12, Proto: "udp", Src: "[fd74:6574:6865:7264::1]:5353", Dst: "[2001:db8::1]:53", Started: now.Add(-2 * time.Second), BytesOut: 40, BytesIn: 0},
	}, now)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%q", b.String())
	}
	for i, want := range [][]string{
		{"ID", "PROTO", "SOURCE", "DESTINATION", "OUT", "IN", "AGE"},
		{"7", "tcp", "10.255.77.1:40000", "198.51.100.10:443", "2.0 KiB", "5.0 MiB", "1h2m5s"},
		{"12", "udp", "[fd74:6574:6865:7264::1]:5353", "[2001:db8::1]:53", "40 B", "0 B", "2s"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
	// Columns line up: DESTINATION starts at the same offset on every line.
	col := strings.Index(lines[0], "DESTINATION")
	if strings.Index(lines[1], "198.51") != col || strings.Index(lines[2], "[2001") != col {
		t.Errorf("columns not aligned:\n%s", b.String())
	}
}

func TestListenControlRefusesUnsafeDirectoryAndLiveSocket(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, err := listenControl(filepath.Join(open, "x.sock")); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("world-writable directory: %v", err)
	}
	sock := filepath.Join(dir, "priv", "x.sock")
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listenControl(sock); err == nil || !strings.Contains(err.Error(), "another tetherd is running") {
		t.Errorf("second listener on a live socket: %v", err)
	}
	ln.Close()
	// A stale socket (a crash) is replaced. Closing a Go listener removes its
	// socket file; leave one behind as a crash would.
	os.WriteFile(sock, nil, 0o600)
	ln, err = listenControl(sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
}

// tokenOf returns the token of a tether:// URI.
func tokenOf(t *testing.T, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil || u.Query().Get("token") == "" {
		t.Fatalf("no token in %q: %v", uri, err)
	}
	return u.Query().Get("token")
}

// TestServeMetrics: `tetherd serve --metrics` exposes the peer's counters: a refused
// token, and a session that carried a stream.
func TestServeMetrics(t *testing.T) {
	dir := t.TempDir()
	metrics := freePort(t)
	p := startServe(t, "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"), "--metrics", metrics,
		"--config", writeFile(t, filepath.Join(dir, "serve.yaml"), loopbackConfig))
	uri := p.line(t)
	bad := strings.Replace(uri, "token="+tokenOf(t, uri), "token=wrong", 1)
	if _, err := transport.Dial(ctxT(t), bad, nil); err == nil {
		t.Fatal("a wrong token was accepted")
	}
	s, err := transport.Dial(ctxT(t), uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	echo := testnet.ServeTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
	st, err := s.OpenTCP(ctxT(t), wire.AddrFromAddrPort(echo))
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("hello"))
	if _, err := io.ReadFull(st, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`tetherd_serve_refused_total{reason="token"} 1` + "\n",
		"tetherd_serve_sessions 1\n",
		`tetherd_serve_streams{kind="tcp"} 1` + "\n",
		`tetherd_serve_bytes_total{direction="up"} 5` + "\n",
		"go_goroutines ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
