package darwin

import (
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// dnsQueries are the packets the DNS filter is about, and what pf must do
// with each while the tunnel is up.
var dnsQueries = []struct {
	name, ifname, proto, dst, want string
}{
	{"scoped query to the LAN resolver", "en0", "udp", "192.168.1.1:53", "block"},
	{"scoped query over TCP", "en0", "tcp", "192.168.1.1:53", "block"},
	{"LAN resolver over IPv6", "en0", "udp", "[fe80::1]:53", "block"},
	{"DNS over TLS outside", "en0", "tcp", "1.1.1.1:853", "block"},
	{"DNS over QUIC outside", "en0", "udp", "1.1.1.1:853", "block"},
	{"another link", "en7", "udp", "172.20.10.1:53", "block"},
	{"the tunnel's resolver", "utun7", "udp", "10.255.77.2:53", "pass"},
	{"the tunnel's IPv6 resolver", "utun7", "tcp", "[fd74:6574:6865:7264::53]:53", "pass"},
	{"a local resolver", "lo0", "udp", "127.0.0.1:53", "pass"},
	{"mDNS", "en0", "udp", "224.0.0.251:5353", "pass"},
	{"mDNS over IPv6", "en0", "udp", "[ff02::fb]:5353", "pass"},
	{"the tunnel's own connection", "en0", "tcp", "203.0.113.7:8443", "pass"},
	{"other traffic to the router", "en0", "tcp", "192.168.1.1:80", "pass"},
}

// While up, no DNS query leaves outside the utun, and everything else
// does as before; after Close, and after a crash and Down, pf is as it
// was (here: disabled, no rules).
func TestFakeMacDNSFilter(t *testing.T) {
	m := newFakeMac()
	check := func(when string, up bool) {
		t.Helper()
		for _, q := range dnsQueries {
			want := q.want
			if !up {
				want = "pass"
			}
			if got := m.pf.verdict(q.ifname, q.proto, netip.MustParseAddrPort(q.dst)); got != want {
				t.Errorf("%s: %s (%s %s on %s): %s, want %s", when, q.name, q.proto, q.dst, q.ifname, got, want)
			}
		}
	}
	check("before Up", false)
	dir := t.TempDir()
	r, err := Up(fullConfig(dir), m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	check("while up", true)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	check("after Close", false)

	r, err = Up(fullConfig(dir), m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	crash(t, r)
	m.destroyTUN()
	check("after a crash, before Down", true) // the filter outlives tetherd: no leak meanwhile
	if _, err := Down(dir, m.options(t)); err != nil {
		t.Fatal(err)
	}
	check("after Down", false)
	if s := m.state(); strings.Contains(s, "pf ") {
		t.Errorf("pf state left:\n%s", s)
	}
}

// pf that someone else enabled stays enabled, with their reference, when
// tetherd stops; and dns.mode off loads nothing.
func TestFakeMacPFEnabledBefore(t *testing.T) {
	m := newFakeMac()
	m.pf.pfctl("pfctl -E", []string{"-E"}, "") // e.g. the application firewall's
	before := m.state()
	if !strings.Contains(before, "pf running") {
		t.Fatalf("setup:\n%s", before)
	}
	r, err := Up(fullConfig(t.TempDir()), m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.pf.verdict("en0", "udp", netip.MustParseAddrPort("192.168.1.1:53")); got != "block" {
		t.Errorf("scoped query while up: %s", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := m.state(); got != before {
		t.Errorf("after Close:\n%s\nwant:\n%s", got, before)
	}

	cfg := fullConfig(t.TempDir())
	cfg.DNSMode = DNSOff
	r, err = Up(cfg, m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.state(); strings.Contains(got, "pf anchor") || strings.Count(got, "pf token") != 1 {
		t.Errorf("dns.mode off loaded pf rules:\n%s", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// A peer listening on a DNS port keeps its connection, over TCP only,
// and only to its own addresses.
func TestFakeMacPeerOnDNSPort(t *testing.T) {
	m := newFakeMac()
	cfg := fullConfig(t.TempDir())
	cfg.Peers = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:53"), netip.MustParseAddrPort("[2001:db8::7]:853")}
	r, err := Up(cfg, m.options(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, q := range []struct{ proto, dst, want string }{
		{"tcp", "203.0.113.7:53", "pass"},
		{"tcp", "[2001:db8::7]:853", "pass"},
		{"udp", "203.0.113.7:53", "block"},
		{"tcp", "[2001:db8::7]:53", "block"},
		{"tcp", "192.168.1.1:53", "block"},
	} {
		if got := m.pf.verdict("en0", q.proto, netip.MustParseAddrPort(q.dst)); got != q.want {
			t.Errorf("%s %s: %s, want %s", q.proto, q.dst, got, q.want)
		}
	}
}

func TestPFRulesGolden(t *testing.T) {
	golden(t, "pf_rules_peer_dns_port.golden", pfRules("utun3", []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.7:53"),
		netip.MustParseAddrPort("[2001:db8::7]:853"),
		netip.MustParseAddrPort("198.51.100.9:443"), // not a DNS port: no rule
	}))
}

func TestParsePFToken(t *testing.T) {
	for out, want := range map[string]string{
		pfctlEnabled:                            "15093789424541785233",
		"pf already enabled\nToken : 42\n":      "42",
		"pf enabled\r\nToken:7\r\n":             "7",
		"pf enabled\n":                          "",
		"Token : abc\n":                         "",
		"No ALTQ support in kernel\nToken : \n": "",
	} {
		got, err := parsePFToken([]byte(out))
		if got != want || (err == nil) != (want != "") {
			t.Errorf("%q: %q, %v; want %q", out, got, err, want)
		}
	}
}

func TestPFTokenGone(t *testing.T) {
	for _, tc := range []struct {
		cmd, out string
		want     bool
	}{
		{pfctlCmd + " -X 42", "pfctl: DIOCSTOPREF: No such file or directory", true},
		{pfctlCmd + " -X 42", "pfctl: DIOCSTOPREF: Invalid argument", true},
		{pfctlCmd + " -X 42", "pfctl: Operation not permitted", false},
		{pfctlCmd + " -a " + PFAnchor + " -F rules", "Invalid argument", false},
	} {
		err := &CommandError{Command: tc.cmd, Output: tc.out}
		if got := alreadyGone(err); got != tc.want {
			t.Errorf("%s: %q: %v", tc.cmd, tc.out, got)
		}
	}
}

// A journal may name only the pfctl commands that Up writes.
func TestCheckPFCommand(t *testing.T) {
	for _, args := range [][]string{
		{"-a", PFAnchor, "-f", "-"}, {"-a", PFAnchor, "-F", "rules"}, {"-E"}, {"-X", "15093789424541785233"},
	} {
		if err := checkPFCommand(command{Name: pfctlCmd, Args: args}); err != nil {
			t.Errorf("%v refused: %v", args, err)
		}
	}
	for _, args := range [][]string{
		{"-d"}, {"-F", "all"}, {"-a", "com.apple/200.AirDrop", "-F", "rules"}, {"-a", PFAnchor, "-F", "all"},
		{"-f", "/etc/pf.conf"}, {"-X", "1;rm"}, {"-X", ""}, {"-a", PFAnchor, "-f", "/tmp/x"},
	} {
		if err := checkPFCommand(command{Name: pfctlCmd, Args: args}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// Without a token from pfctl -E, Up fails and rolls everything back,
// the anchor included.
func TestUpPFNoToken(t *testing.T) {
	m := newFakeMac()
	before := m.state()
	f := &fakeRunner{respond: func(line, stdin string) ([]byte, error) {
		if line == pfctlCmd+" -E" {
			return []byte("pf enabled\n"), nil
		}
		return m.respond(line, stdin)
	}}
	opts := m.options(t)
	opts.Runner = f
	if _, err := Up(fullConfig(t.TempDir()), opts); err == nil || !strings.Contains(err.Error(), "no token") || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("Up: %v", err)
	}
	if got := m.state(); got != before {
		t.Errorf("after the failed Up:\n%s\nwant:\n%s", got, before)
	}
}

// A main ruleset without anchor "com.apple/*" (a replaced /etc/pf.conf)
// is reported: the filter would apply to nothing.
func TestUpWarnsAnchorNotEvaluated(t *testing.T) {
	m := newFakeMac()
	f := &fakeRunner{respond: func(line, stdin string) ([]byte, error) {
		if line == pfctlCmd+" -s rules" {
			return []byte("block drop in all\npass out all flags S/SA keep state\n"), nil
		}
		return m.respond(line, stdin)
	}}
	core, logs := observer.New(zap.WarnLevel)
	opts := m.options(t)
	opts.Runner, opts.Logger = f, zap.New(core)
	r, err := Up(fullConfig(t.TempDir()), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if logs.FilterMessageSnippet(`no anchor "com.apple/*"`).Len() != 1 {
		t.Errorf("no warning; logged %v", logs.All())
	}
	if pfAnchorEvaluated([]byte(pfctlMainRules)) != true {
		t.Error("the stock ruleset is not recognised")
	}
}

func TestPeerEndpoints(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("::ffff:198.51.100.1"), netip.MustParseAddr("2001:db8::7")}
	for _, tc := range []struct{ url, want string }{
		{"wss://phone.example:8443/tether", "203.0.113.7:8443 198.51.100.1:8443 [2001:db8::7]:8443"},
		{"wss://phone.example/tether", "203.0.113.7:443 198.51.100.1:443 [2001:db8::7]:443"},
		{"ws://[2001:db8::7]/", "203.0.113.7:80 198.51.100.1:80 [2001:db8::7]:80"},
		{"wss://203.0.113.7:53/tether", "203.0.113.7:53 198.51.100.1:53 [2001:db8::7]:53"},
		{"wss://h:0/", ""},
		{"wss://h:99999/", ""},
		{"ftp://h/", ""},
	} {
		eps, err := PeerEndpoints(tc.url, addrs)
		var got []string
		for _, e := range eps {
			got = append(got, e.String())
		}
		if g := strings.Join(got, " "); g != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("%s: %q, %v; want %q", tc.url, g, err, tc.want)
		}
	}
}

// Down refuses a journal whose pfctl command is not one of tetherd's
// (here: disabling pf for everyone), and runs nothing.
func TestDownRefusesOtherPFCommands(t *testing.T) {
	dir := t.TempDir()
	store, err := openJournalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	j := &journal{Version: journalVersion, OS: "darwin", TUN: testTUN, Changes: []change{
		{What: "x", Do: command{Name: pfctlCmd, Args: []string{"-E"}}, Undo: &command{Name: pfctlCmd, Args: []string{"-d"}}},
	}}
	if err := store.write(j); err != nil {
		t.Fatal(err)
	}
	if err := store.release(); err != nil {
		t.Fatal(err)
	}
	f := &fakeRunner{}
	alive := false
	if _, err := Down(dir, testOptions(t, f, &alive)); err == nil || !strings.Contains(err.Error(), "pfctl -d") {
		t.Errorf("Down: %v", err)
	}
	if len(f.lines) != 0 {
		t.Errorf("commands were run:\n%s", f.transcript())
	}
}
