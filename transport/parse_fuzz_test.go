package transport

import (
	"fmt"
	"testing"

	"github.com/tetherd/tetherd/transport/wire"
)

// FuzzParseAddr: whatever "host:port" string an embedder passes to an Association is
// either refused with an error or becomes an address the wire can carry as it is:
// exactly one of an IP address (no zone, not IPv4-mapped) or a valid host name, which
// encodes and decodes to itself and prints as a string that parses back to it.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.1:53", "[2001:db8::1]:443", "[::ffff:192.0.2.1]:80", "[fe80::1%eth0]:53",
		"phone.local:8443", "a_b-c:0", "host:65536", "host:080", "host:+80", ":80", "[::1]", "x y:1", "1.2.3.4:5:6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			return
		}
		if a.IP.IsValid() == (a.Name != "") || a.IP.Zone() != "" || a.IP.Is4In6() || a.Name != "" && !wire.ValidName(a.Name) {
			t.Fatalf("ParseAddr(%q) = %+v", s, a)
		}
		b, err := wire.AppendAddr(nil, a)
		if err != nil {
			t.Fatalf("ParseAddr(%q) = %v, which does not encode: %v", s, a, err)
		}
		if got, n, err := wire.ParseAddr(b); err != nil || n != len(b) || got != a {
			t.Fatalf("ParseAddr(%q) = %v, which decodes as %v, %d, %v", s, a, got, n, err)
		}
		if again, err := ParseAddr(a.String()); err != nil || again != a {
			t.Fatalf("ParseAddr(%q) = %v, printed %q, which parses to %v, %v", s, a, a.String(), again, err)
		}
	})
}

// FuzzParsePortRange: a range from the peer's policy is ordered and prints as it
// is written in the configuration.
func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"80", "8000-8999", "0-65535", "443-80", "65536", "-1", "1-", "+1", "1--2", " 80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParsePortRange(s)
		if err != nil {
			return
		}
		if r.First > r.Last {
			t.Fatalf("ParsePortRange(%q) = %+v", s, r)
		}
		printed := fmt.Sprintf("%d-%d", r.First, r.Last)
		if r.First == r.Last {
			printed = fmt.Sprint(r.First)
		}
		if again, err := ParsePortRange(printed); err != nil || again != r {
			t.Fatalf("ParsePortRange(%q) = %+v, printed %q, which parses to %+v, %v", s, r, printed, again, err)
		}
	})
}
