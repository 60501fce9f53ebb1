package transport

import (
	"bytes"
	"testing"
)

// FuzzParseResolvConf checks the resolv.conf reader of the peer's DNS resolver: every
// address it returns is a plain (unmapped, zone-less) IP address on port 53, at most
// one per nameserver line.
func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"nameserver 127.0.0.53\noptions edns0\nsearch lan\n",
		"nameserver fe80::1%wlan0\nnameserver ::ffff:10.0.0.1\n",
		"# nameserver 1.1.1.1\nnameserver\tbad\n nameserver 9.9.9.9 extra\n",
		"nameserver 1.2.3.4\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out := parseResolvConf(data)
		if len(out) > bytes.Count(data, []byte("nameserver")) {
			t.Fatalf("%d addresses from %d nameserver words", len(out), bytes.Count(data, []byte("nameserver")))
		}
		for _, ap := range out {
			if ip := ap.Addr(); ap.Port() != 53 || !ip.IsValid() || ip.Is4In6() || ip.Zone() != "" {
				t.Fatalf("%q gave %v", data, ap)
			}
		}
	})
}
