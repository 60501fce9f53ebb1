package transport

import (
	"encoding/base64"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzFormatPeerURI checks the contract between `tetherd serve`, which prints
// FormatPeerURI, and `tetherd up`, which parses it: whenever the parts are what serve
// can hold (a host name or IP address, a port, a path of plain segments, a token of
// printable characters, a well-formed pin), the URI parses back to exactly those
// parts; and whatever the parts, a URI that parses says what was formatted.
// FuzzParsePeerURI covers arbitrary strings.
func FuzzFormatPeerURI(f *testing.F) {
	pin := "sha256:" + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	f.Add("192.0.2.1", uint16(8443), "", "tok", pin)
	f.Add("fd00::1", uint16(8443), "/p/q", "a+b/c=d&e", pin)
	f.Add("fe80::1%eth0", uint16(1), "/tether", "x", "")
	f.Add("phone.local", uint16(65535), "/a b", "tok%20en", "sha256:short")
	f.Add("", uint16(0), "p", "", "")
	f.Add("h", uint16(9), "/~._-", "tok?#[]", pin)
	f.Fuzz(func(t *testing.T, host string, port uint16, path, token, pin string) {
		hostport := net.JoinHostPort(strings.ReplaceAll(host, "%", "%25"), strconv.Itoa(int(port)))
		s := FormatPeerURI(hostport, path, token, pin)
		u, err := ParsePeerURI(s)
		if err != nil {
			if servable(host, port, path, token, pin) {
				t.Fatalf("FormatPeerURI(%q, %q, %q, %q) = %q does not parse: %v", hostport, path, token, pin, s, err)
			}
			return
		}
		if u.Token != token || u.Pin != pin {
			t.Fatalf("%q parsed to token %q pin %q, want %q %q", s, u.Token, u.Pin, token, pin)
		}
		wantPath := path
		if wantPath == "" {
			wantPath = "/tether"
		} else if !strings.HasPrefix(wantPath, "/") {
			wantPath = "/" + wantPath
		}
		if servable(host, port, path, token, pin) && !strings.HasSuffix(u.URL, ":"+strconv.Itoa(int(port))+wantPath) {
			t.Fatalf("%q parsed to URL %q, want the port and path %d%s", s, u.URL, port, wantPath)
		}
	})
}

// servable reports whether serve could print a URI from these parts.
func servable(host string, port uint16, path, token, pin string) bool {
	if port == 0 || token == "" {
		return false
	}
	if a, err := netip.ParseAddr(host); err != nil {
		if !peerURIValidHostName(host) {
			return false
		}
	} else if a.Zone() != "" && !peerURIValidHostName(a.Zone()) {
		return false
	}
	if path != "" {
		if !strings.HasPrefix(path, "/") || path == "/" {
			return false
		}
		for _, seg := range strings.Split(path[1:], "/") {
			if seg == "" || seg == "." || seg == ".." || strings.Trim(seg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~") != "" {
				return false
			}
		}
	}
	for _, r := range token {
		if r <= ' ' || r == 0x7f || r == '\ufffd' {
			return false
		}
	}
	if pin != "" {
		if _, err := decodeSPKIPin(pin); err != nil {
			return false
		}
	}
	return true
}
