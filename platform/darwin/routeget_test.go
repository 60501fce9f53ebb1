package darwin

import (
	"net/netip"
	"testing"
)

func TestParseRouteGet(t *testing.T) {
	for _, tc := range []struct {
		out, want string
	}{
		{getDefault4, "via 192.168.1.1 dev en0"},
		{getDefault6, "via fe80::1%en0 dev en0"},
		{"   route to: default\ndestination: default\n       mask: default\n    gateway: link#14\n  interface: utun3\n", "dev utun3"},
	} {
		d, err := parseRouteGet([]byte(tc.out))
		if err != nil {
			t.Fatal(err)
		}
		if got := d.String(); got != tc.want {
			t.Errorf("parsed %s, want %s", got, tc.want)
		}
	}
	if _, err := parseRouteGet([]byte("route: bad address: x\n")); err == nil {
		t.Error("garbage parsed")
	}
	if _, err := parseRouteGet([]byte("interface: en\r0\n")); err == nil {
		t.Error("an interface name with a carriage return parsed") // found by FuzzParseRouteGet
	}
}

func TestParseRouteInfo(t *testing.T) {
	for _, tc := range []struct {
		out  string
		v6   bool
		want string
	}{
		{getDefault4, false, "0.0.0.0/0 en0"},
		{getLAN, false, "192.168.1.0/24 en0"},
		{"destination: 10.1\n       mask: 255.255.0.0\n  interface: en0\n", false, "10.1.0.0/16 en0"},
		{"   route to: 192.168.1.1\ndestination: 192.168.1.1\n  interface: en0\n      flags: <UP,HOST,DONE,LLINFO,WASCLONED,IFSCOPE,IFREF>\n", false, "192.168.1.1/32 en0"},
		{getDefault6, true, "::/0 en0"},
		{"destination: 2001:db8:1::\n       mask: ffff:ffff:ffff:ffff::\n  interface: en0\n", true, "2001:db8:1::/64 en0"},
	} {
		ri, err := parseRouteInfo([]byte(tc.out), tc.v6)
		if err != nil {
			t.Fatal(err)
		}
		if got := ri.Dst.String() + " " + ri.Interface; got != tc.want {
			t.Errorf("parsed %s, want %s", got, tc.want)
		}
	}
	if _, err := parseRouteInfo([]byte("interface: en0\n"), false); err == nil {
		t.Error("no destination parsed")
	}
	if _, err := parseRouteInfo([]byte("destination: ::1\n  interface: lo0\n"), false); err == nil {
		t.Error("an IPv6 destination parsed as an IPv4 route") // found by FuzzParseRouteInfo
	}
}

func TestSetDNSScript(t *testing.T) {
	got := setDNSScript([]netip.Addr{netip.MustParseAddr("10.255.77.2")})
	golden(t, "dns_set.golden", got)
	golden(t, "dns_remove.golden", removeDNSScript())
}

func TestScutilFailed(t *testing.T) {
	if _, failed := scutilFailed([]byte(scutilShow)); failed {
		t.Error("success taken for a failure")
	}
	if line, failed := scutilFailed([]byte("  set: failed (no write access)\n")); !failed || line != "set: failed (no write access)" {
		t.Errorf("failure: %q, %v", line, failed)
	}
}
