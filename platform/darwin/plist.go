package darwin

// This file has no build constraint so that the launchd job can be rendered
// and tested on any system; launchd.go installs it on macOS.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"path/filepath"
	"strings"
)

// Label is the launchd label of the tetherd job.
const Label = "dev.tetherd"

// DefaultPlistPath is where Install writes the job.
const DefaultPlistPath = "/Library/LaunchDaemons/" + Label + ".plist"

// LogPath receives the job's standard error (tetherd logs to stderr).
const LogPath = "/var/log/tetherd.log"

// UnitOptions are the paths the launchd job runs tetherd with.
type UnitOptions struct {
	// Exe is the absolute path of the tetherd binary.
	Exe string
	// Config is the absolute path of the configuration file.
	Config string
}

// LaunchdPlist returns the property list of the launchd daemon that runs
// `EXE up --config CONFIG` at boot and restarts it when it exits with a
// failure. The job has no clean-up step of its own: `tetherd up` restores
// a stale journal before anything else.
func LaunchdPlist(o UnitOptions) (string, error) {
	for _, p := range []struct{ what, path string }{{"executable", o.Exe}, {"configuration", o.Config}} {
		// filepath.IsAbs would accept only the host's notion of absolute.
		if !strings.HasPrefix(p.path, "/") || filepath.Clean(p.path) != p.path {
			return "", fmt.Errorf("the %s path %q is not a clean absolute path", p.what, p.path)
		}
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by 'tetherd install'; remove with 'tetherd uninstall'. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + Label + `</string>
	<!-- At start, tetherd up first restores what a tetherd that did not stop
	     cleanly left (routes, DNS; from its journal): no separate clean-up. -->
	<key>ProgramArguments</key>
	<array>
		<string>` + escape(o.Exe) + `</string>
		<string>up</string>
		<string>--config</string>
		<string>` + escape(o.Config) + `</string>
	</array>
	<key>RunAtLoad</key>
	<true/>
	<!-- Restart after a failure; a clean exit (tetherd up was stopped) stays stopped. -->
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>StandardErrorPath</key>
	<string>` + LogPath + `</string>
</dict>
</plist>
`)
	return b.String(), nil
}

func escape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to a bytes.Buffer cannot fail
	return b.String()
}
