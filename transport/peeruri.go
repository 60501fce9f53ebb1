package transport

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// peerURIDefaultPath is the WebSocket path used for a tether:// URI that
// names no path.
const peerURIDefaultPath = "/tether"

// peerURIRedacted replaces the token in PeerURI.Redacted.
const peerURIRedacted = "REDACTED"

// spkiPinPrefix is the algorithm prefix of every pin.
const spkiPinPrefix = "sha256:"

// PeerURI is a parsed peer address.
//
// The zero value is not a usable address; obtain one from ParsePeerURI.
type PeerURI struct {
	URL   string // the WebSocket URL to dial: "wss://host:port/path" or "ws://host:port/path"
	Token string // bearer token, "" if none
	Pin   string // "sha256:<base64url, no padding, of sha256(SPKI DER)>", "" if none
}

// ParsePeerURI parses the peer address a client is given.
//
// Accepted forms:
//
//	tether://HOST:PORT[/PATH][?token=TOKEN][&pin=sha256:PIN]
//	wss://HOST[:PORT][/PATH][?QUERY]   (https:// is an alias)
//	ws://HOST[:PORT][/PATH][?QUERY]    (http:// is an alias)
//
// A tether:// URI becomes the URL wss://HOST:PORT/PATH, with PATH defaulting
// to /tether; its port is required and token and pin are its only query
// parameters. For ws:// and wss:// the token and pin query parameters are
// moved out of the URL into Token and Pin, and the other query parameters are
// left in the URL unchanged. IPv6 addresses must be written in brackets
// ("tether://[fd00::1]:8443"). A pin requires TLS, so it is refused with
// ws://. Surrounding white space is ignored; white space or control
// characters inside are an error (they must be %-escaped).
//
// Errors start with "peer URI: " and never contain the token.
func ParsePeerURI(s string) (*PeerURI, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, peerURIErrorf("empty")
	}
	if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, peerURIErrorf("contains white space or control characters; %%-escape them (a space is %%20)")
	}
	// Split off the fragment and the query by hand, so that url.Parse never
	// sees the query: its errors quote their input, which would leak the
	// token.
	rest, fragment, _ := strings.Cut(s, "#")
	if fragment != "" {
		return nil, peerURIErrorf("a fragment (#...) is not allowed; a literal '#' in the token must be written %%23")
	}
	base, rawQuery, _ := strings.Cut(rest, "?")

	rawScheme, _, ok := strings.Cut(base, "://")
	if !ok {
		return nil, peerURIErrorf("missing scheme; want tether://HOST:PORT?token=..., wss://... or ws://...")
	}
	if !peerURIValidScheme(rawScheme) {
		return nil, peerURIErrorf("invalid scheme; want tether://, wss:// or ws://")
	}
	var wsScheme string
	tether := false
	switch scheme := strings.ToLower(rawScheme); scheme {
	case "tether":
		tether = true
		wsScheme = "wss"
	case "wss", "https":
		wsScheme = "wss"
	case "ws", "http":
		wsScheme = "ws"
	default:
		return nil, peerURIErrorf("unsupported scheme %q; want tether, wss or ws (https and http are aliases)", scheme)
	}

	u, err := url.Parse(base)
	if err != nil {
		// Report only the inner error: url.Error quotes the whole input.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, peerURIErrorf("%s", strings.TrimPrefix(err.Error(), "net/url: "))
	}
	if u.Opaque != "" {
		// Not reachable with "://" present, but cheap to guard.
		return nil, peerURIErrorf("want %s://HOST...", rawScheme)
	}
	if u.User != nil {
		return nil, peerURIErrorf("user information (...@) is not supported; pass a bearer token as ?token=")
	}

	host, port, err := peerURIHostPort(u.Host, tether)
	if err != nil {
		return nil, err
	}

	path, rawPath := u.Path, u.RawPath
	if tether && path == "" {
		path, rawPath = peerURIDefaultPath, ""
	}

	token, pin, kept, err := parsePeerQuery(rawQuery, tether)
	if err != nil {
		return nil, err
	}
	if pin != "" && wsScheme == "ws" {
		return nil, peerURIErrorf("pin needs TLS; use wss:// or tether:// instead of %s://", strings.ToLower(rawScheme))
	}

	hostport := host
	if strings.Contains(host, ":") {
		hostport = "[" + host + "]"
	}
	if port != "" {
		hostport = net.JoinHostPort(host, port)
	}
	out := url.URL{
		Scheme:   wsScheme,
		Host:     hostport,
		Path:     path,
		RawPath:  rawPath,
		RawQuery: kept,
	}
	return &PeerURI{URL: out.String(), Token: token, Pin: pin}, nil
}

// peerURIHostPort validates the host[:port] part of a peer URI and returns
// the bare host (without brackets) and the port ("" if none).
func peerURIHostPort(hostport string, needPort bool) (host, port string, err error) {
	if hostport == "" {
		return "", "", peerURIErrorf("missing host")
	}
	bracketed := strings.HasPrefix(hostport, "[")
	if bracketed {
		end := strings.LastIndex(hostport, "]")
		if end < 0 {
			return "", "", peerURIErrorf("missing ']' after IPv6 address")
		}
		host = hostport[1:end]
		switch rest := hostport[end+1:]; {
		case rest == "" || rest == ":":
		case rest[0] == ':':
			port = rest[1:]
		default:
			return "", "", peerURIErrorf("unexpected text after ']' in host")
		}
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() {
			return "", "", peerURIErrorf("invalid IPv6 address %q in brackets", host)
		}
		if zone := addr.Zone(); zone != "" && !peerURIValidHostName(zone) {
			return "", "", peerURIErrorf("invalid IPv6 zone %q", zone)
		}
	} else {
		host = hostport
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			host, port = hostport[:i], hostport[i+1:]
		}
		if strings.Contains(host, ":") {
			return "", "", peerURIErrorf("IPv6 address must be in brackets, as in tether://[fd00::1]:8443")
		}
		if host == "" {
			return "", "", peerURIErrorf("missing host")
		}
		if !peerURIValidHostName(host) {
			return "", "", peerURIErrorf("invalid host %q", host)
		}
	}
	if port == "" {
		if needPort {
			if bracketed {
				host = "[" + host + "]"
			}
			return "", "", peerURIErrorf("tether:// needs a port, as in tether://%s:8443", host)
		}
		return host, "", nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '0' {
		return "", "", peerURIErrorf("invalid port %q; want 1-65535", port)
	}
	return host, port, nil
}

// peerURIValidHostName reports whether s is a plausible host name or IPv4
// address: ASCII letters, digits, '-', '.' and '_'.
func peerURIValidHostName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return s != ""
}

// peerURIValidScheme reports whether s has the syntax of a URI scheme
// (RFC 3986, section 3.1).
func peerURIValidScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// parsePeerQuery extracts token and pin from a raw query string. For
// tether:// URIs (strict) any other parameter is an error; otherwise the
// other parameters are returned unchanged, joined by '&', in kept.
func parsePeerQuery(rawQuery string, strict bool) (token, pin, kept string, err error) {
	var keep []string
	seenToken, seenPin := false, false
	for _, part := range strings.Split(rawQuery, "&") {
		if part == "" {
			continue
		}
		if strings.Contains(part, ";") {
			// Neither Go's net/url nor this parser treats ';' as a separator;
			// refuse it rather than silently mis-split (or leak) a token.
			return "", "", "", peerURIErrorf("';' in query; separate parameters with '&' (a literal ';' must be written %%3B)")
		}
		rawKey, rawValue, _ := strings.Cut(part, "=")
		key, kerr := url.QueryUnescape(rawKey)
		if kerr != nil {
			if strict {
				return "", "", "", peerURIErrorf("a query parameter name is not valid %%-encoding")
			}
			keep = append(keep, part)
			continue
		}
		switch key {
		case "token":
			if seenToken {
				return "", "", "", peerURIErrorf("duplicate query parameter %q", key)
			}
			seenToken = true
			if token, err = parsePeerToken(rawValue); err != nil {
				return "", "", "", err
			}
		case "pin":
			if seenPin {
				return "", "", "", peerURIErrorf("duplicate query parameter %q", key)
			}
			seenPin = true
			v, verr := url.QueryUnescape(rawValue)
			if verr != nil {
				return "", "", "", peerURIErrorf("pin is not valid %%-encoding")
			}
			if _, perr := decodeSPKIPin(v); perr != nil {
				return "", "", "", peerURIErrorf("%v", perr)
			}
			pin = v
		default:
			if strict {
				return "", "", "", peerURIErrorf("unknown query parameter %q; tether:// accepts only token and pin", key)
			}
			keep = append(keep, part)
		}
	}
	return token, pin, strings.Join(keep, "&"), nil
}

// parsePeerToken decodes and checks the raw value of a token query
// parameter. Its errors never contain the value.
func parsePeerToken(rawValue string) (string, error) {
	v, err := url.QueryUnescape(rawValue)
	if err != nil {
		return "", peerURIErrorf("token is not valid %%-encoding")
	}
	if v == "" {
		return "", peerURIErrorf("token is empty")
	}
	if !utf8.ValidString(v) {
		return "", peerURIErrorf("token is not valid UTF-8")
	}
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "", peerURIErrorf("token contains white space or control characters (a literal '+' must be written %%2B)")
		}
	}
	return v, nil
}

// decodeSPKIPin checks that pin is "sha256:" followed by the unpadded
// base64url encoding of 32 bytes, and returns those bytes. Its errors have
// no prefix and do not quote the pin.
func decodeSPKIPin(pin string) ([]byte, error) {
	enc, ok := strings.CutPrefix(pin, spkiPinPrefix)
	if !ok {
		return nil, errors.New(`pin must start with "sha256:"`)
	}
	want := base64.RawURLEncoding.EncodedLen(sha256.Size)
	if strings.ContainsAny(enc, "+/= ") {
		return nil, fmt.Errorf(`pin must be "sha256:" and %d unpadded base64url characters (A-Z a-z 0-9 - _), not standard base64`, want)
	}
	if len(enc) != want {
		return nil, fmt.Errorf(`pin must be "sha256:" and %d unpadded base64url characters, got %d characters after "sha256:"`, want, len(enc))
	}
	sum, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil || len(sum) != sha256.Size {
		return nil, errors.New(`pin is not valid base64url after "sha256:"`)
	}
	return sum, nil
}

// peerURIErrorf returns an error whose text starts with "peer URI: ".
// Callers must never pass the token.
func peerURIErrorf(format string, args ...any) error {
	return fmt.Errorf("peer URI: "+format, args...)
}

// String returns u as a peer URI that ParsePeerURI parses back to a value
// equal to u. When u.URL can be written as a tether:// URI (a wss:// URL with
// an explicit port, a path and no query), the result is that tether:// URI,
// so the result for a parsed tether:// URI is its canonical form; otherwise it
// is u.URL with the token and pin appended as query parameters.
//
// The result contains the token; use Redacted for logs.
func (u *PeerURI) String() string {
	if u == nil {
		return ""
	}
	return u.format(u.Token)
}

// Redacted is like String but with the token, if any, replaced by
// "REDACTED", for use in logs and error messages.
func (u *PeerURI) Redacted() string {
	if u == nil {
		return ""
	}
	token := u.Token
	if token != "" {
		token = peerURIRedacted
	}
	return u.format(token)
}

// format implements String and Redacted.
func (u *PeerURI) format(token string) string {
	if rest, ok := strings.CutPrefix(u.URL, "wss://"); ok {
		hostport, path := rest, ""
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			hostport, path = rest[:i], rest[i:]
		}
		if path != "" && !strings.ContainsAny(rest, "?#") {
			if path == peerURIDefaultPath {
				path = ""
			}
			candidate := "tether://" + hostport + path
			// Use the tether:// form only if it means the same URL.
			if p, err := ParsePeerURI(candidate); err == nil && p.URL == u.URL {
				return candidate + peerURIQuery(token, u.Pin)
			}
		}
	}
	q := peerURIQuery(token, u.Pin)
	if q != "" && strings.Contains(u.URL, "?") {
		q = "&" + q[1:]
	}
	return u.URL + q
}

// FormatPeerURI returns the tether:// URI for a server listening on hostport
// ("host:port" or "[ipv6]:port", as net.JoinHostPort builds it) and serving
// WebSocket connections on path, with the given token and pin ("" for none).
// The path is omitted when it is "" or the default "/tether"; token and pin are
// query-escaped.
func FormatPeerURI(hostport, path, token, pin string) string {
	var p string
	if path != "" {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		if path != peerURIDefaultPath {
			p = (&url.URL{Path: path}).EscapedPath()
		}
	}
	return "tether://" + hostport + p + peerURIQuery(token, pin)
}

// peerURIQuery returns "?token=...&pin=..." with the empty ones left out, or
// "" when both are empty.
func peerURIQuery(token, pin string) string {
	var parts []string
	if token != "" {
		parts = append(parts, "token="+peerURIQueryEscape(token))
	}
	if pin != "" {
		parts = append(parts, "pin="+peerURIQueryEscape(pin))
	}
	if len(parts) == 0 {
		return ""
	}
	return "?" + strings.Join(parts, "&")
}

// peerURIQueryEscape is url.QueryEscape, except that ':' (which is allowed
// in a query) is left as it is, so that pins read "pin=sha256:...".
func peerURIQueryEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "%3A", ":")
}
