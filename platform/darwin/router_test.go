package darwin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Outputs of `route -n get` on macOS.
const (
	getDefault4 = `   route to: default
destination: default
       mask: default
    gateway: 192.168.1.1
  interface: en0
      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING,GLOBAL>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
`
	getDefault6 = `   route to: ::
destination: ::
       mask: default
    gateway: fe80::1%en0
  interface: en0
      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING,GLOBAL>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
`
	getLAN = `   route to: 192.168.1.50
destination: 192.168.1.0
       mask: 255.255.255.0
  interface: en0
      flags: <UP,DONE,CLONING,STATIC>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
`
	scutilShow = `<dictionary> {
  SearchOrder : 1
  ServerAddresses : <array> {
    0 : 10.255.77.2
    1 : fd74:6574:6865:7264::53
  }
  SupplementalMatchDomains : <array> {
    0 : 
  }
}
`
)

// What pfctl prints on macOS (standard error and output together): -E
// on a stock system, and -s rules of the stock /etc/pf.conf.
const (
	pfctlEnabled = `No ALTQ support in kernel
ALTQ related functions disabled
pf enabled
Token : 15093789424541785233
`
	pfctlMainRules = `No ALTQ support in kernel
ALTQ related functions disabled
scrub-anchor "com.apple/*" all fragment reassemble
anchor "com.apple/*" all
`
)

// world answers the commands of the router like a Mac with Wi-Fi (en0,
// gateway 192.168.1.1, IPv6 gateway fe80::1%en0) would.
type world struct {
	noIPv6  bool              // no IPv6 default route
	exists  map[string]bool   // route adds that find the route there
	fail    string            // a command line that fails
	lookups map[string]string // route get ADDR -> output; default route otherwise
	// lingering are routes of the utun still there after it was destroyed
	// (route get of the exact prefix finds them).
	lingering map[string]bool
}

func (w *world) respond(line, stdin string) ([]byte, error) {
	switch {
	case line == w.fail:
		return nil, routeError(line, "Network is unreachable")
	case w.exists[line]:
		return nil, routeError(line, "File exists")
	case line == routeCmd+" -n get -inet default":
		return []byte(getDefault4), nil
	case line == routeCmd+" -n get -inet6 default":
		if w.noIPv6 {
			return nil, routeError(line, "not in table")
		}
		return []byte(getDefault6), nil
	case strings.HasPrefix(line, routeCmd+" -n get ") && strings.Contains(line[strings.LastIndexByte(line, ' '):], "/"):
		// An exact prefix: a route of the tunnel, left or not.
		dst := line[strings.LastIndexByte(line, ' ')+1:]
		if !w.lingering[dst] {
			return nil, routeError(line, "not in table")
		}
		p := netip.MustParsePrefix(dst)
		mask := net.IP(net.CIDRMask(p.Bits(), p.Addr().BitLen())).String()
		return []byte(fmt.Sprintf("   route to: %s\ndestination: %s\n       mask: %s\n  interface: utun7\n      flags: <UP,DONE,STATIC>\n", p.Addr(), p.Addr(), mask)), nil
	case strings.HasPrefix(line, routeCmd+" -n get "):
		addr := line[strings.LastIndexByte(line, ' ')+1:]
		if out, ok := w.lookups[addr]; ok {
			return []byte(out), nil
		}
		if strings.Contains(addr, ":") {
			return []byte(strings.Replace(getDefault6, "route to: ::", "route to: "+addr, 1)), nil
		}
		return []byte(strings.Replace(getDefault4, "route to: default", "route to: "+addr, 1)), nil
	case line == scutilCmd && strings.Contains(stdin, "show "):
		return []byte(scutilShow), nil
	case line == pfctlCmd+" -E":
		return []byte(pfctlEnabled), nil
	case line == pfctlCmd+" -s rules":
		return []byte(pfctlMainRules), nil
	}
	return nil, nil
}

const (
	testTUN      = "utun7"
	testTUNIndex = 17
)

func fullConfig(dir string) Config {
	return Config{
		TUN:   testTUN,
		MTU:   1500,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.255.77.1/30"), netip.MustParsePrefix("fd74:6574:6865:7264::1/64")},
		Exclude: []netip.Prefix{
			netip.MustParsePrefix("203.0.113.7/32"),  // the peer, on the Internet
			netip.MustParsePrefix("2001:db8::7/128"), // the peer's IPv6 address
			netip.MustParsePrefix("192.168.1.50/32"), // on the LAN: direct already
		},
		LANBypass:  true,
		DNS:        []netip.Addr{netip.MustParseAddr("10.255.77.2"), netip.MustParseAddr("fd74:6574:6865:7264::53")},
		Peers:      []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:8443"), netip.MustParseAddrPort("[2001:db8::7]:8443")},
		JournalDir: dir,
	}
}

// testOptions returns Options with the fake runner and a utun that exists
// while *alive.
func testOptions(t *testing.T, f *fakeRunner, alive *bool) Options {
	return Options{
		Logger: zaptest.NewLogger(t),
		Runner: f,
		ifIndex: func(name string) (int, error) {
			if name == testTUN && *alive {
				return testTUNIndex, nil
			}
			return 0, errors.New("no such interface")
		},
	}
}

func newWorld() *world {
	return &world{
		exists:  map[string]bool{routeCmd + " -n add -inet6 fd74:6574:6865:7264::/64 -interface utun7": true},
		lookups: map[string]string{"192.168.1.50": getLAN},
	}
}

func TestUpClose(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	f := &fakeRunner{respond: w.respond}
	alive := true
	r, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "up.golden", f.transcript())

	// The journal is there, and knows that the IPv6 network route was
	// the kernel's.
	store := &journalStore{dir: dir}
	j, err := store.read()
	if err != nil || j == nil {
		t.Fatalf("journal: %v, %v", j, err)
	}
	if j.TUN != testTUN || j.TUNIndex != testTUNIndex || j.PID != os.Getpid() {
		t.Errorf("journal names %s (%d) of pid %d", j.TUN, j.TUNIndex, j.PID)
	}
	for _, c := range j.Changes {
		if strings.Contains(c.What, "fd74:6574:6865:7264::/64") && c.Undo != nil {
			t.Errorf("the kernel's route is in the journal to be undone: %+v", c)
		}
	}

	f.lines = nil
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	golden(t, "close.golden", f.transcript())
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, journalName)); !os.IsNotExist(err) {
		t.Errorf("journal left behind: %v", err)
	}
}

// Close after the utun was closed (what `tetherd up` does: the client
// closes the device first) removes only what outlives the utun.
func TestCloseTUNGone(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	f := &fakeRunner{respond: w.respond}
	alive := true
	r, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	f.lines = nil
	alive = false
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	golden(t, "close_tun_gone.golden", f.transcript())
}

// A tetherd that died leaves its journal; Down restores from it.
func TestDownAfterCrash(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	f := &fakeRunner{respond: w.respond}
	alive := true
	r, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	// The process dies: the kernel drops its lock and destroys its utun.
	crash(t, r)
	alive = false

	f.lines = nil
	lines, err := Down(dir, testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "journal of tetherd pid ") {
		t.Fatalf("reported %q", lines)
	}
	f.note("reported (after the journal's pid and date):")
	pid := strconv.Itoa(os.Getpid())
	for _, l := range lines[1:] {
		f.note("  %s", strings.ReplaceAll(strings.ReplaceAll(l, dir, "DIR"), pid, "PID"))
	}
	golden(t, "down.golden", f.transcript())

	// Nothing is left to do.
	lines, err = Down(dir, testOptions(t, f, &alive))
	if err != nil || lines != nil {
		t.Errorf("second Down: %q, %v", lines, err)
	}
}

// crash simulates the death of the process that owns r: its journal lock
// is released, and nothing is restored.
func crash(t *testing.T, r *Router) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.store.release(); err != nil {
		t.Fatal(err)
	}
	r.closed = true
}

// The next Up restores what a crashed one left, then configures anew.
func TestUpRestoresStale(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	f := &fakeRunner{respond: w.respond}
	alive := true
	r, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	crash(t, r)
	f.lines = nil
	r, err = Up(fullConfig(dir), testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	got := f.transcript()
	want := "$ " + routeCmd + " -n delete -inet 203.0.113.7/32 192.168.1.1\n"
	if !strings.Contains(got, want) || !strings.HasPrefix(got, "$ "+scutilCmd+"\n| open\n| remove "+DNSKey) {
		t.Errorf("the stale configuration was not restored first:\n%s", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// While one Up holds the journal, another fails and changes nothing.
func TestUpLocked(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	f := &fakeRunner{respond: w.respond}
	alive := true
	r, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f.lines = nil
	if _, err := Up(fullConfig(dir), testOptions(t, f, &alive)); err == nil || !strings.Contains(err.Error(), "another tetherd") {
		t.Errorf("second Up: %v", err)
	}
	if _, err := Down(dir, testOptions(t, f, &alive)); err == nil {
		t.Error("Down while Up runs succeeded")
	}
	if len(f.lines) != 0 {
		t.Errorf("commands were run:\n%s", f.transcript())
	}
}

// A step failing midway rolls back everything applied before it, in
// reverse order, and removes the journal.
func TestUpFailsMidway(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	w.fail = routeCmd + " -n add -inet6 ::/1 -interface utun7"
	f := &fakeRunner{respond: w.respond}
	alive := true
	_, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "Network is unreachable") {
		t.Fatalf("Up: %v", err)
	}
	golden(t, "up_fail_midway.golden", f.transcript())
	if _, err := os.Stat(filepath.Join(dir, journalName)); !os.IsNotExist(err) {
		t.Errorf("journal left behind: %v", err)
	}
}

// When the rollback fails too, the journal stays for `tetherd down`.
func TestUpRollbackFails(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	f := &fakeRunner{}
	f.respond = func(line, stdin string) ([]byte, error) {
		if strings.Contains(line, " -n add -inet 0.0.0.0/1 ") || strings.Contains(line, " -n delete -inet 203.0.113.7/32 ") {
			return nil, routeError(line, "Operation not permitted")
		}
		return w.respond(line, stdin)
	}
	alive := true
	_, err := Up(fullConfig(dir), testOptions(t, f, &alive))
	if err == nil || !strings.Contains(err.Error(), "kept for `tetherd down`") {
		t.Fatalf("Up: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, journalName)); err != nil {
		t.Errorf("journal: %v", err)
	}
}

// A split tunnel: Include only, no IPv6 default route, DNS off.
func TestUpInclude(t *testing.T) {
	dir := t.TempDir()
	w := newWorld()
	w.noIPv6 = true
	f := &fakeRunner{respond: w.respond}
	alive := true
	cfg := fullConfig(dir)
	cfg.MTU = 0
	cfg.Addrs = cfg.Addrs[:1]
	cfg.Include = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.1/12")}
	cfg.DNSMode = DNSOff
	r, err := Up(cfg, testOptions(t, f, &alive))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "up_include.golden", f.transcript())
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTunnelRoutes(t *testing.T) {
	for _, tc := range []struct {
		include []string
		want    string
	}{
		{nil, "0.0.0.0/1 128.0.0.0/1 ::/1 8000::/1"},
		{[]string{"0.0.0.0/0"}, "0.0.0.0/1 128.0.0.0/1 ::/1 8000::/1"},
		{[]string{"10.0.0.0/8"}, "10.0.0.0/8 ::/1 8000::/1"},
		{[]string{"10.0.0.0/8", "2001:db8::/32"}, "10.0.0.0/8 2001:db8::/32"},
		{[]string{"::/0", "10.0.0.0/8"}, "::/1 8000::/1 10.0.0.0/8"},
	} {
		var c Config
		for _, s := range tc.include {
			c.Include = append(c.Include, netip.MustParsePrefix(s))
		}
		var got []string
		for _, p := range c.tunnelRoutes() {
			got = append(got, p.String())
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("Include %v: routes %s, want %s", tc.include, g, tc.want)
		}
	}
}

func TestConfigRejects(t *testing.T) {
	ok := fullConfig(t.TempDir())
	for name, mod := range map[string]func(*Config){
		"no LAN bypass":  func(c *Config) { c.LANBypass = false },
		"not a utun":     func(c *Config) { c.TUN = "tether0" },
		"utun unit-less": func(c *Config) { c.TUN = "utun" },
		"MTU":            func(c *Config) { c.MTU = 100 },
		"DNS mode":       func(c *Config) { c.DNSMode = "resolved" },
		"exclude all":    func(c *Config) { c.Exclude = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} },
		"DNS server":     func(c *Config) { c.DNS = []netip.Addr{netip.IPv4Unspecified()} },
	} {
		c := ok
		mod(&c)
		f := &fakeRunner{}
		if _, err := Up(c, Options{Runner: f, Logger: zap.NewNop()}); err == nil || !strings.Contains(err.Error(), "invalid config") {
			t.Errorf("%s: Up: %v", name, err)
		}
		if len(f.lines) != 0 {
			t.Errorf("%s: commands were run", name)
		}
	}
}

func TestJournalDir(t *testing.T) {
	for in, want := range map[string]string{"": DefaultJournalDir, "/run/tetherd": DefaultJournalDir, "/tmp/j": "/tmp/j"} {
		if got := JournalDir(in); got != want {
			t.Errorf("JournalDir(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTUNName(t *testing.T) {
	for in, want := range map[string]string{"tether0": "utun", "utun": "utun", "utun9": "utun9", "utunx": "utun", "": "utun"} {
		if got := TUNName(in); got != want {
			t.Errorf("TUNName(%q) = %q, want %q", in, got, want)
		}
	}
}

// A journal naming another command is refused, not run.
func TestJournalRefusesOtherCommands(t *testing.T) {
	dir := t.TempDir()
	store, err := openJournalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	j := &journal{Version: journalVersion, OS: "darwin", TUN: testTUN, Changes: []change{
		{What: "x", Do: command{Name: routeCmd}, Undo: &command{Name: "/bin/rm", Args: []string{"-rf", "/"}}},
	}}
	if err := store.write(j); err != nil {
		t.Fatal(err)
	}
	if err := store.release(); err != nil {
		t.Fatal(err)
	}
	f := &fakeRunner{}
	alive := false
	if _, err := Down(dir, testOptions(t, f, &alive)); err == nil || !strings.Contains(err.Error(), "/bin/rm") {
		t.Errorf("Down: %v", err)
	}
	if len(f.lines) != 0 {
		t.Errorf("commands were run:\n%s", f.transcript())
	}
}

func TestDownNoJournal(t *testing.T) {
	f := &fakeRunner{}
	alive := false
	lines, err := Down(filepath.Join(t.TempDir(), "absent"), testOptions(t, f, &alive))
	if err != nil || lines != nil {
		t.Errorf("Down: %q, %v", lines, err)
	}
	lines, err = Down(t.TempDir(), testOptions(t, f, &alive))
	if err != nil || lines != nil {
		t.Errorf("Down: %q, %v", lines, err)
	}
}

// Routes of the utun that outlived it are removed by Down; those of
// another utun that took its name are not touched.
func TestDownLingeringRoutes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replaced bool
		golden   string
	}{
		{"utun gone", false, "down_lingering.golden"},
		{"name taken by another utun", true, "down_replaced.golden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := newWorld()
			w.lingering = map[string]bool{"0.0.0.0/1": true, "8000::/1": true}
			f := &fakeRunner{respond: w.respond}
			alive := true
			r, err := Up(fullConfig(dir), testOptions(t, f, &alive))
			if err != nil {
				t.Fatal(err)
			}
			crash(t, r)
			opts := testOptions(t, f, &alive)
			alive = false
			if tc.replaced {
				opts.ifIndex = func(string) (int, error) { return testTUNIndex + 1, nil }
			}
			f.lines = nil
			lines, err := Down(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			f.note("reported (after the journal's pid and date):")
			for _, l := range lines[1:] {
				f.note("  %s", strings.ReplaceAll(l, dir, "DIR"))
			}
			golden(t, tc.golden, f.transcript())
		})
	}
}
