package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/tetherd/tetherd/daemon"
)

// controlSocket is the name of the control socket in the journal directory.
const controlSocket = "control.sock"

func runStatus(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "status", "[flags]", `Show what the running 'tetherd up' is doing: the peer, since when it is connected,
round-trip time, traffic and rates, open flows, reconnects and the last error.`)
	asJSON := fs.Bool("json", false, "print the status as JSON, for programs")
	configPath := fs.String("config", "", "read journal_dir from the YAML configuration `FILE`")
	socket := fs.String("socket", "", "the control `SOCKET` (default: control.sock in journal_dir, /run/tetherd)")
	if err := fs.parse(args); err != nil {
		return err
	}
	path := *socket
	if path == "" {
		cfg, err := loadClientConfig(*configPath)
		if err != nil {
			return err
		}
		path = filepath.Join(cfg.JournalDir, controlSocket)
	}
	st, raw, err := fetchStatus(ctx, path)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := c.stdout.Write(raw)
		return err
	}
	printStatus(c.stdout, st, time.Now())
	return nil
}

// fetchStatus asks the control socket at path for the status.
func fetchStatus(ctx context.Context, path string) (daemon.Status, []byte, error) {
	var st daemon.Status
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://tetherd/status", nil)
	if err != nil {
		return st, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, nil, fmt.Errorf("no tetherd up is running (control socket %s: %v); status needs root", path, unwrapOp(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, nil, fmt.Errorf("control socket %s answered something else: %v", path, err)
	}
	return st, raw, nil
}

func unwrapOp(err error) error {
	var oe *net.OpError
	for e := err; e != nil; {
		if o, ok := e.(*net.OpError); ok {
			oe = o
			break
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	if oe != nil && oe.Err != nil {
		return oe.Err
	}
	return err
}

// printStatus writes the status for people.
func printStatus(w io.Writer, st daemon.Status, now time.Time) {
	var b strings.Builder
	if st.State == "connected" {
		fmt.Fprintf(&b, "tetherd is up: connected to %s since %s (%s)\n", st.Peer,
			st.ConnectedSince.Local().Format("15:04:05"), now.Sub(st.ConnectedSince).Round(time.Second))
	} else {
		fmt.Fprintf(&b, "tetherd is up, but reconnecting to %s\n", st.Peer)
	}
	row := func(k, v string) { fmt.Fprintf(&b, "  %-11s %s\n", k, v) }
	if st.TUN != "" {
		row("device", st.TUN)
	}
	if st.State == "connected" {
		row("rtt", fmt.Sprintf("%.1f ms", st.RTTMillis))
	}
	row("up", fmt.Sprintf("%s (%s/s)", bytesString(float64(st.BytesUp)), bytesString(st.RateUp)))
	row("down", fmt.Sprintf("%s (%s/s)", bytesString(float64(st.BytesDown)), bytesString(st.RateDown)))
	row("flows", fmt.Sprintf("%d TCP, %d UDP", st.TCPFlows, st.UDPFlows))
	row("reconnects", fmt.Sprint(st.Reconnects))
	if st.LastError != "" {
		row("last error", st.LastError)
	}
	io.WriteString(w, b.String())
}

// bytesString formats n bytes with a binary unit.
func bytesString(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
