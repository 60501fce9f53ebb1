//go:build linux

package linux

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestJournalStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "tetherd")
	s, err := openJournalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	if j, err := s.read(); j != nil || err != nil {
		t.Fatalf("empty store: %v, %v", j, err)
	}
	zero := 0
	j := &journal{
		Version: journalVersion, PID: 42, Created: time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC),
		TUN: "tun0", TUNIndex: 5, MTU: &mtuChange{From: 1500, To: 1280}, SetUp: true,
		Addrs: []netip.Prefix{netip.MustParsePrefix("100.100.100.1/30")}, Table: 7170,
		Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		Rules: []ruleSpec{
			{Family: 4, Priority: 7170, To: netip.MustParsePrefix("203.0.113.0/24"), Table: 254},
			{Family: 6, Priority: 7171, Table: 254, SuppressPrefixlen: &zero},
			{Family: 4, Priority: 7172, Not: true, FwMark: 0x7170, Table: 7170},
		},
		DNS: &dnsJournal{Mode: DNSResolvConf, Path: "/etc/resolv.conf", Existed: true, Original: []byte("nameserver 192.0.2.1\n\x00binary\xff"), Perm: 0o644},
	}
	if err := s.write(j); err != nil {
		t.Fatal(err)
	}
	got, err := s.read()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, j)
	}
	for path, perm := range map[string]os.FileMode{dir: 0o700, s.path(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != perm {
			t.Errorf("%s: %v, %v; want mode %v", path, fi.Mode(), err, perm)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}

	if _, err := openJournalStore(dir); err == nil || !strings.Contains(err.Error(), "another tetherd is running") {
		t.Errorf("second open while locked: %v", err)
	}
	if _, err := Down(dir, Options{}); err == nil {
		t.Error("Down while locked succeeded")
	}
	if err := s.remove(); err != nil {
		t.Fatal(err)
	}
	if err := s.remove(); err != nil {
		t.Errorf("second remove: %v", err)
	}
	s.release()
	s2, err := openJournalStore(dir)
	if err != nil {
		t.Fatalf("open after release: %v", err)
	}
	s2.release()
}

func TestJournalCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, journalName), []byte(`{"version":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Down(dir, Options{}); err == nil || !strings.Contains(err.Error(), "parse journal") {
		t.Errorf("Down with a corrupt journal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, journalName)); err != nil {
		t.Error("a corrupt journal was removed")
	}
}

func TestDownNothing(t *testing.T) {
	for _, dir := range []string{filepath.Join(t.TempDir(), "absent"), t.TempDir()} {
		if lines, err := Down(dir, Options{}); lines != nil || err != nil {
			t.Errorf("Down(%s) = %q, %v; want nil, nil", dir, lines, err)
		}
	}
}
