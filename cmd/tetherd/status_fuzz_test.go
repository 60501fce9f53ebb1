package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tetherd/tetherd/daemon"
)

// checkPrintable fails when out holds anything but printable text and newlines: no
// escape sequence from the daemon's answer (or the peer's words in it) reaches the
// terminal.
func checkPrintable(t *testing.T, in []byte, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("%q printed invalid UTF-8: %q", in, out)
	}
	for _, r := range out {
		if r != '\n' && !unicode.IsPrint(r) {
			t.Fatalf("%q printed %U: %q", in, r, out)
		}
	}
}

// FuzzPrintStatus: whatever JSON the control socket answers, `tetherd status`
// prints it as text without a panic and without control characters.
func FuzzPrintStatus(f *testing.F) {
	f.Add([]byte(`{"mode":"up","state":"connected","peer":"tether://10.0.0.2:8443?token=REDACTED","tun":"tether0","connected_since":"2026-11-22T09:00:00Z","rtt_ms":1.2,"bytes_up":1,"tcp_flows":3,"reconnects":2}`))
	f.Add([]byte(`{"state":"reconnecting","peer":"x","last_error":"transport: session: peer closed: \u001b[2J\u001b]0;owned\u0007"}`))
	f.Add([]byte(`{"last_error":"\xff\xfe","tun":"t\tun","listen":"\u2028"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var st daemon.Status
		if json.Unmarshal(in, &st) != nil {
			return
		}
		var b bytes.Buffer
		printStatus(&b, st, time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
		checkPrintable(t, in, b.String())
	})
}

// FuzzPrintFlows: the same for `tetherd flows`.
func FuzzPrintFlows(f *testing.F) {
	f.Add([]byte(`[{"id":1,"proto":"tcp","src":"10.255.77.1:41720","dst":"198.51.100.10:443","started":"2026-11-23T08:59:00Z","bytes_out":10,"bytes_in":20}]`))
	f.Add([]byte(`[{"id":2,"proto":"udp\u001b[31m","src":"a\tb","dst":"host\r\n:53"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var flows []daemon.Flow
		if json.Unmarshal(in, &flows) != nil {
			return
		}
		var b bytes.Buffer
		printFlows(&b, flows, time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
		checkPrintable(t, in, b.String())
	})
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"keepalive: nothing received for 15s": "keepalive: nothing received for 15s",
		"ümlaut ok":                           "ümlaut ok",
		"\x1b[2Jgone":                         `\x1b[2Jgone`,
		"bell\a":                              `bell\x07`,
		"bad \xff byte":                       `bad \xff byte`,
		"line\u2028sep":                       `line\u2028sep`,
		"tab\there":                           `tab\x09here`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	if got := printableLines("one\x1b\ntwo"); got != `one\x1b`+"\ntwo" {
		t.Errorf("printableLines: %q", got)
	}
	var b bytes.Buffer
	printStatus(&b, daemon.Status{State: "reconnecting", LastError: "peer closed: \x1b]0;title\a"}, time.Now())
	if !strings.Contains(b.String(), `peer closed: \x1b]0;title\x07`) {
		t.Errorf("status printed %q", b.String())
	}
}
