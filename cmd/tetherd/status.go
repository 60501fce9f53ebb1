package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tetherd/tetherd/daemon"
)

func runStatus(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "status", "[flags]", `Show what the running 'tetherd up' (or 'tetherd proxy') is doing: the peer, since
when it is connected, round-trip time, traffic and rates, open flows, reconnects and
the last error. The status of up needs root.`)
	asJSON := fs.Bool("json", false, "print the status as JSON, for programs")
	configPath := fs.String("config", "", "read control_socket and journal_dir from the YAML configuration `FILE`")
	socket := fs.String("socket", "", "the control `SOCKET` (default: control.sock in journal_dir, /run/tetherd, else the proxy's)")
	if err := fs.parse(args); err != nil {
		return err
	}
	socks, err := candidateSockets(*socket, *configPath)
	if err != nil {
		return err
	}
	var st daemon.Status
	raw, err := fetchControl(ctx, socks, "/status", &st)
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

// printStatus writes the status for people.
func printStatus(w io.Writer, st daemon.Status, now time.Time) {
	var b strings.Builder
	what := "tetherd is up"
	if st.Mode == "proxy" {
		what = "tetherd proxy is running"
	}
	if st.State == "connected" {
		fmt.Fprintf(&b, "%s: connected to %s since %s (%s)\n", what, st.Peer,
			st.ConnectedSince.Local().Format("15:04:05"), now.Sub(st.ConnectedSince).Round(time.Second))
	} else {
		fmt.Fprintf(&b, "%s, but reconnecting to %s\n", what, st.Peer)
	}
	row := func(k, v string) { fmt.Fprintf(&b, "  %-11s %s\n", k, v) }
	if st.TUN != "" {
		row("device", st.TUN)
	}
	if st.Listen != "" {
		row("listening", st.Listen)
	}
	if st.State == "connected" {
		row("rtt", fmt.Sprintf("%.1f ms", st.RTTMillis))
	}
	row("up", fmt.Sprintf("%s (%s/s)", bytesString(float64(st.BytesUp)), bytesString(st.RateUp)))
	row("down", fmt.Sprintf("%s (%s/s)", bytesString(float64(st.BytesDown)), bytesString(st.RateDown)))
	row("flows", fmt.Sprintf("%d TCP, %d UDP open (%d TCP, %d UDP since start)", st.TCPFlows, st.UDPFlows, st.TCPFlowsTotal, st.UDPFlowsTotal))
	if st.TCPRefused > 0 || st.UDPDropped > 0 {
		row("failed", fmt.Sprintf("%d TCP refused or unreachable, %d UDP datagrams dropped", st.TCPRefused, st.UDPDropped))
	}
	if st.TCPDeferred > 0 {
		row("deferred", fmt.Sprintf("%d TCP SYNs dropped while their host held its share of connects in progress", st.TCPDeferred))
	}
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
