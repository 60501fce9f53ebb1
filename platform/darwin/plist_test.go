package darwin

import (
	"encoding/xml"
	"reflect"
	"strings"
	"testing"
)

// plistNode is one element of a property list, parsed generically.
type plistNode struct {
	XMLName xml.Name
	Text    string      `xml:",chardata"`
	Nodes   []plistNode `xml:",any"`
}

// dict returns the key/value pairs of a <dict>.
func dict(t *testing.T, n plistNode) map[string]plistNode {
	t.Helper()
	if n.XMLName.Local != "dict" || len(n.Nodes)%2 != 0 {
		t.Fatalf("not a dict of pairs: %+v", n)
	}
	m := map[string]plistNode{}
	for i := 0; i < len(n.Nodes); i += 2 {
		if n.Nodes[i].XMLName.Local != "key" {
			t.Fatalf("expected <key>, got <%s>", n.Nodes[i].XMLName.Local)
		}
		m[n.Nodes[i].Text] = n.Nodes[i+1]
	}
	return m
}

func TestLaunchdPlist(t *testing.T) {
	exe, cfg := "/usr/local/bin/tether&d", "/etc/tetherd/<config>.yaml"
	s, err := LaunchdPlist(UnitOptions{Exe: exe, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	var root plistNode
	if err := xml.Unmarshal([]byte(s), &root); err != nil {
		t.Fatalf("parse: %v\n%s", err, s)
	}
	if root.XMLName.Local != "plist" || len(root.Nodes) != 1 {
		t.Fatalf("root: %+v", root)
	}
	d := dict(t, root.Nodes[0])
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	if len(d) != 5 {
		t.Errorf("keys %q, want Label, ProgramArguments, RunAtLoad, KeepAlive, StandardErrorPath", keys)
	}
	if l := d["Label"]; l.XMLName.Local != "string" || l.Text != "dev.tetherd" {
		t.Errorf("Label: %+v", l)
	}
	var args []string
	for _, n := range d["ProgramArguments"].Nodes {
		if n.XMLName.Local != "string" {
			t.Errorf("ProgramArguments element <%s>", n.XMLName.Local)
		}
		args = append(args, n.Text)
	}
	if want := []string{exe, "up", "--config", cfg}; !reflect.DeepEqual(args, want) {
		t.Errorf("ProgramArguments %q, want %q", args, want)
	}
	if n := d["RunAtLoad"]; n.XMLName.Local != "true" {
		t.Errorf("RunAtLoad: <%s>", n.XMLName.Local)
	}
	ka := dict(t, d["KeepAlive"])
	if n := ka["SuccessfulExit"]; len(ka) != 1 || n.XMLName.Local != "false" {
		t.Errorf("KeepAlive: %+v", ka)
	}
	if n := d["StandardErrorPath"]; n.Text != "/var/log/tetherd.log" {
		t.Errorf("StandardErrorPath: %+v", n)
	}
	if !strings.Contains(s, `<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN"`) {
		t.Error("no plist DOCTYPE")
	}
}

func TestLaunchdPlistRejects(t *testing.T) {
	for _, o := range []UnitOptions{
		{Exe: "tetherd", Config: "/etc/tetherd/config.yaml"},
		{Exe: "/usr/local/bin/tetherd", Config: "config.yaml"},
		{Exe: "/usr/local/bin/../bin/tetherd", Config: "/etc/tetherd/config.yaml"},
	} {
		if _, err := LaunchdPlist(o); err == nil {
			t.Errorf("LaunchdPlist(%+v) succeeded", o)
		}
	}
}
