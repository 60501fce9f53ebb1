package darwin

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// upJournal is a journal as Up writes it: an address, a route into the utun, an
// Exclude route through an IPv6 link-local gateway and one through an interface, the
// pf anchor and reference, and the DNS key.
func upJournal() *journal {
	undo := func(name, stdin string, args ...string) *command {
		return &command{Name: name, Args: args, Stdin: stdin}
	}
	return &journal{Version: journalVersion, OS: "darwin", PID: 42, TUN: testTUN, TUNIndex: 9, Changes: []change{
		{What: "address", Do: command{Name: ifconfigCmd, Args: []string{testTUN, "inet", "10.255.77.1", "10.255.77.1", "netmask", "255.255.255.252", "alias"}},
			Undo: undo(ifconfigCmd, "", testTUN, "inet", "10.255.77.1", "-alias"), OnTUN: true},
		{What: "address6", Do: command{Name: ifconfigCmd, Args: []string{testTUN, "inet6", "fd74::1", "prefixlen", "64", "alias"}},
			Undo: undo(ifconfigCmd, "", testTUN, "inet6", "fd74::1", "-alias"), OnTUN: true},
		{What: "up", Do: command{Name: ifconfigCmd, Args: []string{testTUN, "up"}}, OnTUN: true},
		{What: "half", Do: command{Name: routeCmd, Args: []string{"-n", "add", "-inet", "0.0.0.0/1", "-interface", testTUN}},
			Undo: undo(routeCmd, "", "-n", "delete", "-inet", "0.0.0.0/1", "-interface", testTUN), OnTUN: true},
		{What: "exclude6", Do: command{Name: routeCmd, Args: []string{"-n", "add", "-inet6", "2001:db8::7/128", "fe80::1%en0"}},
			Undo: undo(routeCmd, "", "-n", "delete", "-inet6", "2001:db8::7/128", "fe80::1%en0"), Exclude: netip.MustParsePrefix("2001:db8::7/128")},
		{What: "exclude", Do: command{Name: routeCmd, Args: []string{"-n", "add", "-inet", "203.0.113.0/24", "-interface", "pdp_ip0"}},
			Undo: undo(routeCmd, "", "-n", "delete", "-inet", "203.0.113.0/24", "-interface", "pdp_ip0"), Exclude: netip.MustParsePrefix("203.0.113.0/24")},
		{What: "anchor", Do: command{Name: pfctlCmd, Args: []string{"-a", PFAnchor, "-f", "-"}, Stdin: "pass"},
			Undo: undo(pfctlCmd, "", "-a", PFAnchor, "-F", "rules")},
		{What: "pf", Do: command{Name: pfctlCmd, Args: []string{"-E"}}, Undo: undo(pfctlCmd, "", "-X", "123"), PFEnable: true},
		{What: "dns", Do: command{Name: scutilCmd, Stdin: setDNSScript([]netip.Addr{netip.MustParseAddr("10.255.77.2")})},
			Undo: undo(scutilCmd, removeDNSScript())},
	}}
}

// A damaged journal must not make Down run, as root, what Up never writes: each of
// these is refused with a reason, and the journal they come from is accepted.
func TestJournalRefusesForeignUndo(t *testing.T) {
	if err := upJournal().check(); err != nil {
		t.Fatalf("a journal as Up writes it: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(j *journal)
	}{
		{"not a utun", func(j *journal) { j.TUN = "en0" }},
		{"no interface", func(j *journal) { j.TUN = "" }},
		{"ifconfig on another interface", func(j *journal) { j.Changes[0].Undo.Args[0] = "en0" }},
		{"ifconfig down", func(j *journal) { j.Changes[0].Undo.Args = []string{testTUN, "down"} }},
		{"address of the other family", func(j *journal) { j.Changes[1].Undo.Args[2] = "10.0.0.1" }},
		{"an address undo not on the utun", func(j *journal) { j.Changes[0].OnTUN = false }},
		{"route flush", func(j *journal) { j.Changes[3].Undo.Args = []string{"-n", "flush"} }},
		{"the default route", func(j *journal) { j.Changes[3].Undo.Args[3] = "0.0.0.0/0" }},
		{"a tunnel route through another interface", func(j *journal) { j.Changes[3].Undo.Args[5] = "en0" }},
		{"an option for an interface", func(j *journal) { j.Changes[5].Undo.Args[5] = "-ifscope" }},
		{"a route that is not the Exclude prefix", func(j *journal) { j.Changes[5].Undo.Args[3] = "192.0.2.0/24" }},
		{"an Exclude gateway of the other family", func(j *journal) { j.Changes[4].Undo.Args[4] = "192.168.1.1" }},
		{"an extra route argument", func(j *journal) {
			j.Changes[4].Undo.Args = append(j.Changes[4].Undo.Args, "-reject")
		}},
		{"another scutil script", func(j *journal) {
			j.Changes[8].Undo.Stdin = "open\nremove State:/Network/Global/DNS\nquit\n"
		}},
		{"pfctl disabling pf", func(j *journal) { j.Changes[7].Undo.Args = []string{"-d"} }},
		{"a shell", func(j *journal) { j.Changes[8].Undo.Name = "/bin/sh" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := upJournal()
			c.edit(j)
			dir := t.TempDir()
			b, _ := json.Marshal(j)
			if err := os.WriteFile(filepath.Join(dir, journalName), b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := (&journalStore{dir: dir}).read()
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, journalName)) {
				t.Errorf("the error does not name the journal: %v", err)
			}
		})
	}
}

// FuzzJournal: whatever journal.json holds, reading it never panics, and what it
// accepts can only make Down touch the utun, routes of the utun or of an Exclude
// prefix (never a whole family's), tetherd's DNS key and pf anchor; and it survives
// a write and a read unchanged (as JSON).
func FuzzJournal(f *testing.F) {
	good, _ := json.Marshal(upJournal())
	f.Add(good)
	f.Add([]byte(`{"version":1,"os":"darwin","tun":"utun3"}`))
	f.Add([]byte(`{"version":1,"os":"darwin","tun":"utun3","changes":[{"what":"x","do":{"name":"/sbin/route","args":["-n","add"]},"undo":{"name":"/sbin/route","args":["-n","delete","-inet","10.0.0.0/8","-interface","utun3"]},"on_tun":true}]}`))
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
		if !strings.HasPrefix(j.TUN, "utun") {
			t.Fatalf("accepted the interface %q", j.TUN)
		}
		for _, c := range j.Changes {
			u := c.Undo
			if u == nil {
				continue
			}
			switch u.Name {
			case ifconfigCmd:
				if len(u.Args) == 0 || u.Args[0] != j.TUN || u.Args[len(u.Args)-1] != "-alias" {
					t.Fatalf("accepted %s", u)
				}
			case routeCmd:
				if len(u.Args) < 4 || u.Args[1] != "delete" {
					t.Fatalf("accepted %s", u)
				}
				p, err := netip.ParsePrefix(u.Args[3])
				if err != nil || p.Bits() == 0 || !c.OnTUN && p != c.Exclude || c.OnTUN && u.Args[len(u.Args)-1] != j.TUN {
					t.Fatalf("accepted %s (on the utun: %v, exclude %v)", u, c.OnTUN, c.Exclude)
				}
			case scutilCmd:
				if u.Stdin != removeDNSScript() {
					t.Fatalf("accepted scutil with %q", u.Stdin)
				}
			case pfctlCmd:
				if checkPFCommand(*u) != nil {
					t.Fatalf("accepted %s", u)
				}
			default:
				t.Fatalf("accepted %s", u)
			}
		}
		if err := s.write(j); err != nil {
			t.Fatal(err)
		}
		again, err := s.read()
		if err != nil {
			t.Fatalf("a journal it accepted, written back, is refused: %v", err)
		}
		b1, _ := json.Marshal(j)
		b2, _ := json.Marshal(again)
		if string(b1) != string(b2) {
			t.Fatalf("round trip changed the journal:\n%s\n%s", b1, b2)
		}
	})
}
