package transport

import (
	"net/url"
	"strings"
	"testing"
)

const (
	// peerURITestPin is a well-formed pin (of no particular key).
	peerURITestPin = "sha256:RxxcQILFgnaP1MEO7f-SQpZe32gjbMeqckXSjDtO69o"
	// peerURITestPin2 is another well-formed pin.
	peerURITestPin2 = "sha256:2SmKENGwc1g33EvYXaxkGw887yekfl1TpU8vP1svz_o"
	// peerURITestToken is the token used in tests that check it never
	// appears in errors.
	peerURITestToken = "s3cr3t-T0ken_value"
)

func TestParsePeerURIAccepted(t *testing.T) {
	tests := []struct {
		in   string
		want PeerURI
	}{
		// tether://
		{"tether://example.com:8443?token=abc&pin=" + peerURITestPin,
			PeerURI{URL: "wss://example.com:8443/tether", Token: "abc", Pin: peerURITestPin}},
		{"tether://example.com:8443/custom/path?token=abc",
			PeerURI{URL: "wss://example.com:8443/custom/path", Token: "abc"}},
		{"tether://example.com:8443/",
			PeerURI{URL: "wss://example.com:8443/"}},
		{"tether://10.0.0.1:443",
			PeerURI{URL: "wss://10.0.0.1:443/tether"}},
		{"tether://10.0.0.1:443?",
			PeerURI{URL: "wss://10.0.0.1:443/tether"}},
		{"tether://10.0.0.1:443/tether?pin=" + peerURITestPin + "&token=x",
			PeerURI{URL: "wss://10.0.0.1:443/tether", Token: "x", Pin: peerURITestPin}},
		{"tether://[fd00::1]:8443?token=abc&pin=" + peerURITestPin,
			PeerURI{URL: "wss://[fd00::1]:8443/tether", Token: "abc", Pin: peerURITestPin}},
		{"tether://[::1]:1/p",
			PeerURI{URL: "wss://[::1]:1/p"}},
		{"tether://[fe80::1%25eth0]:8443",
			PeerURI{URL: "wss://[fe80::1%25eth0]:8443/tether"}},
		{"TETHER://Host.Example:8443",
			PeerURI{URL: "wss://Host.Example:8443/tether"}},
		{"  tether://h:1?token=abc\n",
			PeerURI{URL: "wss://h:1/tether", Token: "abc"}},
		{"tether://h:1?token=a%2Bb%2F%3D%3D",
			PeerURI{URL: "wss://h:1/tether", Token: "a+b/=="}},
		{"tether://h:1?token=abc&pin=sha256%3A" + strings.TrimPrefix(peerURITestPin, "sha256:"),
			PeerURI{URL: "wss://h:1/tether", Token: "abc", Pin: peerURITestPin}},
		{"tether://h:1/a%20b%2Fc",
			PeerURI{URL: "wss://h:1/a%20b%2Fc"}},
		{"tether://h:1?&token=abc&",
			PeerURI{URL: "wss://h:1/tether", Token: "abc"}},
		{"tether://h:1#",
			PeerURI{URL: "wss://h:1/tether"}},
		{"tether://h:65535",
			PeerURI{URL: "wss://h:65535/tether"}},

		// wss:// and https://
		{"wss://example.com/ws",
			PeerURI{URL: "wss://example.com/ws"}},
		{"wss://example.com",
			PeerURI{URL: "wss://example.com"}},
		{"wss://example.com:8443/ws?token=abc&pin=" + peerURITestPin,
			PeerURI{URL: "wss://example.com:8443/ws", Token: "abc", Pin: peerURITestPin}},
		{"wss://example.com/ws?a=1&token=abc&b=x%20y&pin=" + peerURITestPin + "&c",
			PeerURI{URL: "wss://example.com/ws?a=1&b=x%20y&c", Token: "abc", Pin: peerURITestPin}},
		{"wss://example.com/ws?Token=kept",
			PeerURI{URL: "wss://example.com/ws?Token=kept"}},
		{"https://example.com:443/ws?token=abc",
			PeerURI{URL: "wss://example.com:443/ws", Token: "abc"}},
		{"wss://[fd00::1]:8443/ws",
			PeerURI{URL: "wss://[fd00::1]:8443/ws"}},
		{"wss://[fd00::1]/ws",
			PeerURI{URL: "wss://[fd00::1]/ws"}},

		// ws:// and http://
		{"ws://127.0.0.1:8080/tether?token=abc",
			PeerURI{URL: "ws://127.0.0.1:8080/tether", Token: "abc"}},
		{"http://localhost:8080/x?y=z",
			PeerURI{URL: "ws://localhost:8080/x?y=z"}},
		{"WS://localhost",
			PeerURI{URL: "ws://localhost"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePeerURI(tt.in)
			if err != nil {
				t.Fatalf("ParsePeerURI(%q): %v", tt.in, err)
			}
			if *got != tt.want {
				t.Fatalf("ParsePeerURI(%q)\n got  %+v\n want %+v", tt.in, *got, tt.want)
			}
			// Every accepted value round-trips through String.
			again, err := ParsePeerURI(got.String())
			if err != nil {
				t.Fatalf("ParsePeerURI(String() = %q): %v", got.String(), err)
			}
			if *again != *got {
				t.Fatalf("round trip through %q\n got  %+v\n want %+v", got.String(), *again, *got)
			}
			if got.Token != "" && strings.Contains(got.Redacted(), "token="+url.QueryEscape(got.Token)) {
				t.Fatalf("Redacted() = %q contains the token", got.Redacted())
			}
		})
	}
}

func TestParsePeerURIRejected(t *testing.T) {
	tok := peerURITestToken
	tests := []struct {
		in      string
		wantErr string // substring of the error
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"example.com:8443", "missing scheme"},
		{"tether:example.com:8443", "missing scheme"},
		{"1tether://h:1", "invalid scheme"},
		{"ftp://h:1", `unsupported scheme "ftp"`},
		{"quic://h:1?token=" + tok, `unsupported scheme "quic"`},

		// port
		{"tether://example.com?token=" + tok, "needs a port"},
		{"tether://example.com:?token=" + tok, "needs a port"},
		{"tether://[fd00::1]?token=" + tok, "needs a port, as in tether://[fd00::1]:8443"},
		{"tether://example.com:0", `invalid port "0"`},
		{"tether://example.com:65536", `invalid port "65536"`},
		{"tether://example.com:08443", `invalid port "08443"`},
		{"tether://example.com:https", "invalid port"},
		{"wss://example.com:99999/x", `invalid port "99999"`},

		// host
		{"tether://:8443?token=" + tok, "missing host"},
		{"wss:///path?token=" + tok, "missing host"},
		{"tether://fd00::1:8443?token=" + tok, "in brackets"},
		{"tether://[fd00::1:8443?token=" + tok, "]"},
		{"tether://[10.0.0.1]:8443", "invalid"},
		{"tether://[nonsense]:8443", "invalid"},
		{"tether://[fe80::1%25a+b]:8443", "invalid IPv6 zone"},
		{"tether://[::%25\xbf]:1", "invalid IPv6 zone"},
		{"tether://[fd00::1]x:8443", ""},
		{"tether://exa mple.com:8443", ""},
		{"tether://exa$mple.com:8443", "invalid host"},
		{"tether://user@h:8443?token=" + tok, "user information"},
		{"wss://user:" + tok + "@h/x", "user information"},

		// query
		{"tether://h:1?token=" + tok + "&foo=bar", `unknown query parameter "foo"`},
		{"tether://h:1?Token=" + tok, `unknown query parameter "Token"`},
		{"tether://h:1?token=" + tok + "&token=" + tok, `duplicate query parameter "token"`},
		{"tether://h:1?pin=" + peerURITestPin + "&pin=" + peerURITestPin, `duplicate query parameter "pin"`},
		{"tether://h:1?token=", "token is empty"},
		{"tether://h:1?token", "token is empty"},
		{"tether://h:1?token=" + tok + "%zz", "token is not valid %-encoding"},
		{"tether://h:1?token=" + tok + "+x", "white space"},
		{"tether://h:1?token=" + tok + "%0A", "control characters"},
		{"tether://h:1?token=" + tok + " x", "white space"},
		{"tether://h:1?token=" + tok + "\tx", "white space"},
		{"tether://h:1/a b?token=" + tok, "white space"},
		{"ws://h/? &token=" + tok, "white space"},
		{"wss://h/x?a=\x7f&token=" + tok, "control characters"},
		{"tether://h:1?token=" + tok + "%FF", "UTF-8"},
		{"tether://h:1?token=" + tok + ";pin=" + peerURITestPin, "';' in query"},
		{"wss://h/x?a=1;token=" + tok, "';' in query"},
		{"tether://h:1?%zz=1&token=" + tok, "query parameter name"},
		{"tether://h:1?token=" + tok + "#frag", "fragment"},
		{"tether://h:1?token=" + tok[:4] + "#" + tok[4:], "fragment"},

		// pin
		{"tether://h:1?token=" + tok + "&pin=" + peerURITestPin[:len(peerURITestPin)-1], "got 42 characters"},
		{"tether://h:1?token=" + tok + "&pin=" + peerURITestPin + "A", "got 44 characters"},
		{"tether://h:1?token=" + tok + "&pin=" + peerURITestPin + "%3D", "not standard base64"},
		{"tether://h:1?token=" + tok + "&pin=sha256:" + strings.Repeat("%2B", 43), "not standard base64"},
		{"tether://h:1?token=" + tok + "&pin=" + strings.TrimPrefix(peerURITestPin, "sha256:"), `must start with "sha256:"`},
		{"tether://h:1?token=" + tok + "&pin=SHA256:" + strings.TrimPrefix(peerURITestPin, "sha256:"), `must start with "sha256:"`},
		{"tether://h:1?token=" + tok + "&pin=sha1:abc", `must start with "sha256:"`},
		{"tether://h:1?token=" + tok + "&pin=", `must start with "sha256:"`},
		// 'p' leaves non-zero trailing bits; strict decoding refuses it.
		{"tether://h:1?token=" + tok + "&pin=" + peerURITestPin[:len(peerURITestPin)-1] + "p", "not valid base64url"},
		{"tether://h:1?token=" + tok + "&pin=sha256:" + strings.Repeat("!", 43), "not valid base64url"},
		{"tether://h:1?token=" + tok + "&pin=sha256%3Ax%zz", "pin is not valid %-encoding"},

		// pin without TLS
		{"ws://h:1/x?token=" + tok + "&pin=" + peerURITestPin, "pin needs TLS"},
		{"http://h:1/x?pin=" + peerURITestPin, "pin needs TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePeerURI(tt.in)
			if err == nil {
				t.Fatalf("ParsePeerURI(%q) = %+v, want error containing %q", tt.in, *got, tt.wantErr)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "peer URI: ") {
				t.Errorf("error %q does not start with %q", msg, "peer URI: ")
			}
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tt.wantErr)
			}
			// Neither the token nor a large part of it may leak.
			for _, leak := range []string{tok, tok[:8], tok[len(tok)-8:]} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q contains (part of) the token %q", msg, leak)
				}
			}
		})
	}
}

func TestPeerURIString(t *testing.T) {
	tests := []struct {
		in, str, redacted string
	}{
		{"tether://h:1?token=abc&pin=" + peerURITestPin,
			"tether://h:1?token=abc&pin=" + peerURITestPin,
			"tether://h:1?token=REDACTED&pin=" + peerURITestPin},
		// Parameter order, an explicit default path and escaping are
		// canonicalized.
		{"tether://h:1/tether?pin=" + strings.Replace(peerURITestPin, ":", "%3A", 1) + "&token=abc",
			"tether://h:1?token=abc&pin=" + peerURITestPin,
			"tether://h:1?token=REDACTED&pin=" + peerURITestPin},
		{"tether://[fd00::1]:8443/p?token=a%2Bb",
			"tether://[fd00::1]:8443/p?token=a%2Bb",
			"tether://[fd00::1]:8443/p?token=REDACTED"},
		{"tether://h:1",
			"tether://h:1",
			"tether://h:1"},
		{"tether://h:1/",
			"tether://h:1/",
			"tether://h:1/"},
		// wss:// with an explicit port, a path and no other query
		// parameters has a tether:// form.
		{"wss://h:8443/ws?token=abc",
			"tether://h:8443/ws?token=abc",
			"tether://h:8443/ws?token=REDACTED"},
		// Otherwise the URL is kept and token and pin are appended.
		{"wss://h/ws?token=abc",
			"wss://h/ws?token=abc",
			"wss://h/ws?token=REDACTED"},
		{"wss://h:1?token=abc",
			"wss://h:1?token=abc",
			"wss://h:1?token=REDACTED"},
		{"wss://h:1/ws?a=b&token=abc&pin=" + peerURITestPin,
			"wss://h:1/ws?a=b&token=abc&pin=" + peerURITestPin,
			"wss://h:1/ws?a=b&token=REDACTED&pin=" + peerURITestPin},
		{"ws://h:1/ws?token=abc",
			"ws://h:1/ws?token=abc",
			"ws://h:1/ws?token=REDACTED"},
		{"ws://h:1/ws",
			"ws://h:1/ws",
			"ws://h:1/ws"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParsePeerURI(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := u.Redacted(); got != tt.redacted {
				t.Errorf("Redacted() = %q, want %q", got, tt.redacted)
			}
		})
	}

	var nilURI *PeerURI
	if nilURI.String() != "" || nilURI.Redacted() != "" {
		t.Error("nil *PeerURI does not format as \"\"")
	}
}

func TestFormatPeerURI(t *testing.T) {
	tests := []struct {
		hostport, path, token, pin string
		want                       string
	}{
		{"h:1", "", "", "", "tether://h:1"},
		{"h:1", "/tether", "", "", "tether://h:1"},
		{"h:1", "tether", "", "", "tether://h:1"},
		{"h:1", "/", "", "", "tether://h:1/"},
		{"h:1", "/x y", "", "", "tether://h:1/x%20y"},
		{"h:1", "ws", "", "", "tether://h:1/ws"},
		{"h:1", "", "abc", "", "tether://h:1?token=abc"},
		{"h:1", "", "", peerURITestPin, "tether://h:1?pin=" + peerURITestPin},
		{"[fd00::1]:8443", "/tether", "a+b/c=&d", peerURITestPin,
			"tether://[fd00::1]:8443?token=a%2Bb%2Fc%3D%26d&pin=" + peerURITestPin},
	}
	for _, tt := range tests {
		got := FormatPeerURI(tt.hostport, tt.path, tt.token, tt.pin)
		if got != tt.want {
			t.Errorf("FormatPeerURI(%q, %q, %q, %q) = %q, want %q", tt.hostport, tt.path, tt.token, tt.pin, got, tt.want)
			continue
		}
		u, err := ParsePeerURI(got)
		if err != nil {
			t.Errorf("ParsePeerURI(%q): %v", got, err)
			continue
		}
		if u.Token != tt.token || u.Pin != tt.pin {
			t.Errorf("ParsePeerURI(%q) = %+v, want token %q and pin %q", got, *u, tt.token, tt.pin)
		}
		if u.String() != got {
			t.Errorf("ParsePeerURI(%q).String() = %q", got, u.String())
		}
	}
}

// FuzzParsePeerURI checks that ParsePeerURI never panics, that its errors are
// prefixed and do not contain the token, and that every value it accepts
// round-trips through String.
func FuzzParsePeerURI(f *testing.F) {
	for _, s := range []string{
		"tether://example.com:8443?token=abc&pin=" + peerURITestPin,
		"tether://[fd00::1]:8443/p?token=a%2Bb",
		"tether://[fe80::1%25eth0]:8443",
		"tether://[::%25\xbf]:1",
		"tether://0:1/@",
		"ws://0? #",
		"tether://h:1/a%2Fb%20c?pin=" + peerURITestPin2,
		"tether://h:1?token=abc;def",
		"tether://h:1?foo=bar",
		"tether://h",
		"wss://example.com/ws?a=1&token=abc&b=2",
		"wss://h:1",
		"https://h:443/x?pin=" + peerURITestPin,
		"ws://h:1/x?token=abc",
		"http://[::1]:80/?token=x&pin=" + peerURITestPin,
		"ws://h:1/x?pin=" + peerURITestPin,
		"wss://u:p@h/x",
		"tether://h:1#x",
		"",
		"::",
		"tether://[",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParsePeerURI(s)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "peer URI: ") {
				t.Fatalf("ParsePeerURI(%q): error %q lacks the prefix", s, msg)
			}
			if tok := peerURITestRawToken(s); len(tok) >= 8 && strings.Count(s, tok) == 1 && strings.Contains(msg, tok) {
				t.Fatalf("ParsePeerURI(%q): error %q contains the token %q", s, msg, tok)
			}
			return
		}
		if u.Pin != "" && !strings.HasPrefix(u.URL, "wss://") {
			t.Fatalf("ParsePeerURI(%q) = %+v: pin without TLS", s, *u)
		}
		str := u.String()
		again, err := ParsePeerURI(str)
		if err != nil {
			t.Fatalf("ParsePeerURI(%q) = %+v; ParsePeerURI(String() = %q): %v", s, *u, str, err)
		}
		if *again != *u {
			t.Fatalf("ParsePeerURI(%q) = %+v; ParsePeerURI(String() = %q) = %+v", s, *u, str, *again)
		}
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), "tether://") && !strings.HasPrefix(str, "tether://") {
			t.Fatalf("ParsePeerURI(%q).String() = %q is not a tether:// URI", s, str)
		}
		if u.Token != "" && u.Token != peerURIRedacted {
			red, needle := u.Redacted(), "token="+peerURIQueryEscape(u.Token)
			if countParam(red, needle) > countParam(u.URL, needle) {
				t.Fatalf("Redacted() = %q contains the token %q", red, u.Token)
			}
		}
	})
}

// countParam counts the occurrences of needle, a "key=value" query parameter, in s
// that end where a parameter ends (at '&', '#' or the end of s): "token=R" is not
// in "token=REDACTED".
func countParam(s, needle string) int {
	n := 0
	for i := 0; ; {
		j := strings.Index(s[i:], needle)
		if j < 0 {
			return n
		}
		end := i + j + len(needle)
		if end == len(s) || s[end] == '&' || s[end] == '#' {
			n++
		}
		i = i + j + 1
	}
}

// peerURITestRawToken returns the raw value of the first token= parameter in
// the query of s, or "" if it has none or it contains escapes.
func peerURITestRawToken(s string) string {
	rest, _, _ := strings.Cut(s, "#")
	_, q, ok := strings.Cut(rest, "?")
	if !ok {
		return ""
	}
	for _, part := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(part, "token="); ok && !strings.ContainsAny(v, "%+") {
			return v
		}
	}
	return ""
}
