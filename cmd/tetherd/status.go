package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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

// printStatus writes the status for people. Its strings go through printable: the
// last error can quote what the peer sent (a close or GOAWAY reason).
func printStatus(w io.Writer, st daemon.Status, now time.Time) {
	st.Mode, st.State, st.Peer, st.TUN = printable(st.Mode), printable(st.State), printable(st.Peer), printable(st.TUN)
	st.Listen, st.LastError = printable(st.Listen), printable(st.LastError)
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

// printable returns s with what a terminal would not print as text escaped Go-style
// (\x1b, \u2028, \xff for a byte that is not UTF-8), so that no string from the daemon
// (or through it from the peer) can move the cursor or recolour the terminal.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == utf8.RuneError || !unicode.IsPrint(r):
			if r < 0x80 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// printableLines is printable for each line of a text of several (errors.Join).
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}
