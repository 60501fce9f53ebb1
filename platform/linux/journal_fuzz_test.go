//go:build linux

package linux

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodJournal is a journal as Up writes it (JSON).
const goodJournal = `{"version":1,"pid":42,"created":"2026-11-22T07:00:00Z","tun":"tun0","tun_index":5,
"addrs":["100.100.100.1/30"],"table":7170,"routes":["0.0.0.0/0","::/0"],
"rules":[{"family":4,"priority":7170,"to":"203.0.113.0/24","table":254},
{"family":4,"priority":7172,"not":true,"fwmark":29040,"table":7170}],
"dns":{"mode":"resolvconf","path":"/etc/resolv.conf","existed":true,"original":"bmFtZXNlcnZlciAxOTIuMC4yLjEK","perm":420}}`

// A damaged journal must not make Down delete what is not tetherd's: these are
// refused with a reason. (Only read here: Down on a journal that passed would act
// on this machine's network namespace.)
func TestJournalDangerousValuesRefused(t *testing.T) {
	for _, c := range []struct{ name, old, new string }{
		{"table missing (0 matches every table in the flush)", `"table":7170,"routes"`, `"routes"`},
		{"main table", `"table":7170,"routes"`, `"table":254,"routes"`},
		{"local table", `"table":7170,"routes"`, `"table":255,"routes"`},
		{"no TUN", `"tun":"tun0",`, `"tun":"",`},
		{"TUN name with a slash", `"tun":"tun0",`, `"tun":"../x",`},
		{"rule at priority 0 (the local rule)", `"priority":7172,`, `"priority":0,`},
		{"rule at the main rule's priority", `"priority":7172,`, `"priority":32766,`},
		{"rule into another table", `"fwmark":29040,"table":7170`, `"fwmark":29040,"table":100`},
		{"resolv.conf path not clean", `"path":"/etc/resolv.conf"`, `"path":"/etc/../etc/resolv.conf"`},
		{"unknown DNS mode", `"mode":"resolvconf"`, `"mode":"hosts"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := strings.Replace(goodJournal, c.old, c.new, 1)
			if bad == goodJournal {
				t.Fatalf("case does not apply: %q", c.old)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, journalName), []byte(bad), 0o600); err != nil {
				t.Fatal(err)
			}
			j, err := (&journalStore{dir: dir}).read()
			if err == nil || !strings.Contains(err.Error(), "not one tetherd wrote") {
				t.Fatalf("read: %+v, %v; want a refusal", j, err)
			}
		})
	}
	// The journal they all come from is accepted.
	var j journal
	if err := json.Unmarshal([]byte(goodJournal), &j); err != nil {
		t.Fatal(err)
	}
	if err := j.validate(); err != nil {
		t.Fatalf("a journal as Up writes it: %v", err)
	}
}

// FuzzJournal: whatever journal.json holds, reading it never panics, and what it
// accepts names no reserved table or rule priority and survives a write and a read
// unchanged (as JSON).
func FuzzJournal(f *testing.F) {
	f.Add([]byte(goodJournal))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"tun":"t","tun_index":1,"table":1,"rules":[{"family":6,"priority":1,"table":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, journalName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := openJournalStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.release()
		j, err := s.read()
		if err != nil {
			if !strings.Contains(err.Error(), filepath.Join(dir, journalName)) {
				t.Fatalf("error does not name the journal: %v", err)
			}
			return
		}
		switch j.Table {
		case 0, 253, 254, 255:
			t.Fatalf("accepted table %d", j.Table)
		}
		for _, r := range j.Rules {
			if r.Priority <= 0 || r.Priority >= 32766 || (r.Table != j.Table && r.Table != 254) {
				t.Fatalf("accepted rule %+v", r)
			}
		}
		if err := s.write(j); err != nil {
			t.Fatal(err)
		}
		again, err := s.read()
		if err != nil {
			t.Fatalf("a journal it accepted, written back, is refused: %v", err)
		}
		// Compared as written (an empty list and none are the same journal).
		b1, _ := json.Marshal(j)
		b2, _ := json.Marshal(again)
		if string(b1) != string(b2) {
			t.Fatalf("round trip changed the journal:\n%s\n%s", b1, b2)
		}
	})
}
