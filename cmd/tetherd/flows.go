package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherd/tetherd/daemon"
)

func runFlows(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "flows", "[flags]", `List the flows the running 'tetherd up' (or 'tetherd proxy') carries now: protocol,
source, destination, bytes each way and age, oldest first. The ID is the "flow"
field of the log lines about the flow (log.level debug). Needs root for up.`)
	asJSON := fs.Bool("json", false, "print the flows as JSON, for programs")
	configPath := fs.String("config", "", "read control_socket and journal_dir from the YAML configuration `FILE`")
	socket := fs.String("socket", "", "the control `SOCKET` (default: as for 'tetherd status')")
	if err := fs.parse(args); err != nil {
		return err
	}
	socks, err := candidateSockets(*socket, *configPath)
	if err != nil {
		return err
	}
	var flows []daemon.Flow
	raw, err := fetchControl(ctx, socks, "/flows", &flows)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := c.stdout.Write(raw)
		return err
	}
	printFlows(c.stdout, flows, time.Now())
	return nil
}

// printFlows writes the flows as a table for people.
func printFlows(w io.Writer, flows []daemon.Flow, now time.Time) {
	if len(flows) == 0 {
		io.WriteString(w, "no open flows\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROTO\tSOURCE\tDESTINATION\tOUT\tIN\tAGE")
	for _, f := range flows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, printable(f.Proto), printable(f.Src), printable(f.Dst),
			bytesString(float64(f.BytesOut)), bytesString(float64(f.BytesIn)), ageString(now.Sub(f.Started)))
	}
	tw.Flush()
}

// ageString formats a flow's age to the second (or "0s").
func ageString(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		d = 0
	}
	s := d.String()
	// 1h2m0s reads better as 1h2m.
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}
