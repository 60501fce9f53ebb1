package darwin

import (
	"fmt"
	"strings"
	"testing"
)

// The parsers below read the output of route(8) and pfctl(8). The fuzz targets check
// that no output makes them panic, and that what they accept is what such output can
// mean: a route of the family asked about, an interface name, a numeric token; and
// that the result, printed the way route(8) prints it, parses back to itself.

// FuzzParseRouteGet covers `route -n get default`.
func FuzzParseRouteGet(f *testing.F) {
	f.Add(getDefault4)
	f.Add(getDefault6)
	f.Add("    gateway: link#14\n  interface: utun3\n")
	f.Add("interface:\n")
	f.Add("gateway: ::ffff:1.2.3.4\ninterface: en0\n")
	f.Fuzz(func(t *testing.T, out string) {
		d, err := parseRouteGet([]byte(out))
		if err != nil {
			return
		}
		checkIfname(t, out, d.Interface)
		if d.Gateway.Is4In6() {
			t.Fatalf("%q: gateway %v is an IPv4-mapped address", out, d.Gateway)
		}
		var b strings.Builder
		if d.Gateway.IsValid() {
			fmt.Fprintf(&b, "    gateway: %s\n", d.Gateway)
		}
		fmt.Fprintf(&b, "  interface: %s\n", d.Interface)
		again, err := parseRouteGet([]byte(b.String()))
		if err != nil || *again != *d {
			t.Fatalf("%q parsed to %v; printed again, %q parses to %v, %v", out, d, b.String(), again, err)
		}
	})
}

// FuzzParseRouteInfo covers `route -n get ADDRESS`.
func FuzzParseRouteInfo(f *testing.F) {
	f.Add(getDefault4, false)
	f.Add(getLAN, false)
	f.Add(getDefault6, true)
	f.Add("destination: 10.1\n       mask: 255.255.0.0\n  interface: en0\n", false)
	f.Add("destination: 2001:db8:1::\n       mask: ffff:ffff:ffff:ffff::\n  interface: en0\n", true)
	f.Add("destination: fe80::1%en0\n  interface: en0\n", true)
	f.Add("destination: ::1\n  interface: lo0\n", false)
	f.Add("destination: 10.0.0.1\n  interface: en0\n", true)
	f.Fuzz(func(t *testing.T, out string, v6 bool) {
		ri, err := parseRouteInfo([]byte(out), v6)
		if err != nil {
			return
		}
		checkIfname(t, out, ri.Interface)
		if !ri.Dst.IsValid() || ri.Dst.Addr().Is6() != v6 || ri.Dst.Addr().Zone() != "" || ri.Dst != ri.Dst.Masked() {
			t.Fatalf("%q (v6 %v) parsed to destination %v", out, v6, ri.Dst)
		}
		printed := fmt.Sprintf("destination: %s\n       mask: %s\n  interface: %s\n", ri.Dst.Addr(), maskString(ri.Dst.Bits(), v6), ri.Interface)
		again, err := parseRouteInfo([]byte(printed), v6)
		if err != nil || *again != *ri {
			t.Fatalf("%q parsed to %v; printed again, %q parses to %v, %v", out, ri, printed, again, err)
		}
	})
}

// maskString is a netmask of bits leading ones, as route(8) prints it.
func maskString(bits int, v6 bool) string {
	n := 4
	if v6 {
		n = 16
	}
	m := make([]byte, n)
	for i := range bits {
		m[i/8] |= 0x80 >> (i % 8)
	}
	if v6 {
		var b strings.Builder
		for i := 0; i < 16; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			fmt.Fprintf(&b, "%x", uint16(m[i])<<8|uint16(m[i+1]))
		}
		return b.String()
	}
	return fmt.Sprintf("%d.%d.%d.%d", m[0], m[1], m[2], m[3])
}

func checkIfname(t *testing.T, out, name string) {
	t.Helper()
	if name == "" || name != strings.TrimSpace(name) || strings.ContainsAny(name, "\r\n") {
		t.Fatalf("%q parsed to interface %q", out, name)
	}
}

// FuzzParsePFToken covers `pfctl -E`: a token is a decimal number, which pfctl -X
// gets back as one argument.
func FuzzParsePFToken(f *testing.F) {
	f.Add("pf enabled\nToken : 15093789424541785233\n")
	f.Add("No ALTQ support in kernel\nToken : 1")
	f.Add("Token : \n")
	f.Add("Token : 12 34\n")
	f.Fuzz(func(t *testing.T, out string) {
		tok, err := parsePFToken([]byte(out))
		if err != nil {
			return
		}
		if tok == "" || strings.Trim(tok, "0123456789") != "" {
			t.Fatalf("%q parsed to token %q", out, tok)
		}
	})
}
