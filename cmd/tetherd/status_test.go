package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherd/tetherd/daemon"
)

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	st := daemon.Status{State: "connected", Peer: "tether://10.0.0.2:8443?token=REDACTED", TUN: "tether0",
		ConnectedSince: now.Add(-90 * time.Second), RTTMillis: 1.25, BytesUp: 3 << 20, BytesDown: 5 << 30,
		RateUp: 2048, RateDown: 0, TCPFlows: 3, UDPFlows: 1, Reconnects: 2, LastError: "keepalive: nothing received for 15s",
		TCPRefused: 4, TCPDeferred: 9}
	var b bytes.Buffer
	printStatus(&b, st, now)
	for _, want := range []string{"connected to tether://10.0.0.2:8443?token=REDACTED", "(1m30s)", "tether0", "1.2 ms",
		"3.0 MiB (2.0 KiB/s)", "5.0 GiB (0 B/s)", "3 TCP, 1 UDP", "reconnects  2", "last error  keepalive",
		"4 TCP refused or unreachable", "deferred    9 TCP SYNs dropped"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, controlSocket)
	// No tetherd up: a clear error.
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb}
	if code := c.run(context.Background(), []string{"status", "--socket", sock}); code != 1 || !strings.Contains(errb.String(), "no tetherd up or proxy is running") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(daemon.Status{State: "reconnecting", Peer: "tether://p:1", Reconnects: 4})
	})}
	go srv.Serve(ln)
	defer srv.Close()
	out.Reset()
	if code := c.run(context.Background(), []string{"status", "--socket", sock}); code != 0 || !strings.Contains(out.String(), "reconnecting to tether://p:1") {
		t.Fatalf("exit %d: %q", code, out.String())
	}
	out.Reset()
	if code := c.run(context.Background(), []string{"status", "--json", "--socket", sock}); code != 0 || !strings.Contains(out.String(), `"reconnects":4`) {
		t.Fatalf("--json: exit %d: %q", code, out.String())
	}
}
