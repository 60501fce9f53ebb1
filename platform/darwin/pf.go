package darwin

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// PFAnchor is the pf anchor that holds tetherd's DNS filter while the
// tunnel is up. macOS's own /etc/pf.conf evaluates every anchor under
// com.apple/ (its line `anchor "com.apple/*"`), so rules loaded there
// apply without touching /etc/pf.conf; the number sorts it among Apple's
// own (e.g. 200.AirDrop, 250.ApplicationFirewall). Check it by hand with
// `sudo pfctl -a com.apple/250.tetherd -sr`.
const PFAnchor = "com.apple/250.tetherd"

// dnsPorts are blocked outside the tunnel: DNS (53, UDP and TCP) and DNS
// over TLS (853/tcp; 853/udp is DNS over QUIC). 5353, mDNS, is not: local
// discovery (Bonjour, .local names) must keep working, and its multicast
// never leaves the link.
var dnsPorts = []uint16{53, 853}

// pfRules is the ruleset of PFAnchor: DNS leaves only through tun and
// lo0, and through the tunnel's own connections in peers if one of them
// uses a DNS port (they are not DNS, and must not be cut); any other
// packet to a DNS port is refused at once ("block return": a TCP reset
// or an ICMP unreachable, so that resolvers fail over without waiting).
// Every rule is quick, so the first that matches decides and the rest of
// pf's rules (Apple's, the user's) do not see these packets. Nothing but
// packets to DNS ports is matched, so nothing else changes.
func pfRules(tun string, peers []netip.AddrPort) string {
	ports := make([]string, len(dnsPorts))
	for i, p := range dnsPorts {
		ports[i] = strconv.Itoa(int(p))
	}
	dns := "port { " + strings.Join(ports, " ") + " }"
	lines := []string{
		"# tetherd: DNS only through " + tun + " (see docs/macos.md); removed when tetherd stops",
		"pass out quick on lo0 proto { udp tcp } from any to any " + dns,
		"pass out quick on " + tun + " proto { udp tcp } from any to any " + dns,
	}
	for _, p := range peers {
		if slices.Contains(dnsPorts, p.Port()) {
			lines = append(lines, fmt.Sprintf("pass out quick proto tcp from any to %s port %d", p.Addr(), p.Port()))
		}
	}
	lines = append(lines, "block return out quick proto { udp tcp } from any to any "+dns, "")
	return strings.Join(lines, "\n")
}

// pfChanges are the changes that install the DNS filter: load PFAnchor,
// then take a reference on pf being enabled (`pfctl -E`, whose token
// `pfctl -X` gives back: pf stops when the last reference goes, and
// stays enabled if someone else enabled it). The token is known only
// once pfctl -E has run: apply records the undo then (see pfEnable).
func pfChanges(tun string, peers []netip.AddrPort) []change {
	flush := command{Name: pfctlCmd, Args: []string{"-a", PFAnchor, "-F", "rules"}}
	return []change{
		{
			What: fmt.Sprintf("pf anchor %s: DNS (ports %v) only through %s", PFAnchor, dnsPorts, tun),
			Do:   command{Name: pfctlCmd, Args: []string{"-a", PFAnchor, "-f", "-"}, Stdin: pfRules(tun, peers)},
			Undo: &flush,
		},
		{What: "pf reference (pfctl -E) keeping pf enabled", Do: command{Name: pfctlCmd, Args: []string{"-E"}}, PFEnable: true},
	}
}

// pfTokenLine is how pfctl -E prints the reference it took, e.g.
// "Token : 15093789424541785233" (on standard error, which Runner
// returns with standard output).
var pfTokenLine = regexp.MustCompile(`(?m)^Token\s*:\s*([0-9]+)\s*$`)

// parsePFToken returns the token that pfctl -E printed.
func parsePFToken(out []byte) (string, error) {
	m := pfTokenLine.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("pfctl -E printed no token: %q", strings.TrimSpace(string(out)))
	}
	return string(m[1]), nil
}

// pfReleaseCommand gives back the reference of token.
func pfReleaseCommand(token string) command {
	return command{Name: pfctlCmd, Args: []string{"-X", token}}
}

// pfTokenGone reports whether err is pfctl -X finding the reference gone:
// pf is not running (ENOENT: someone ran pfctl -d, which drops every
// reference) or the token is unknown (EINVAL: the same, and pf enabled
// again since). Either way there is nothing left to give back.
func pfTokenGone(err error) bool {
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.HasPrefix(ce.Command, pfctlCmd+" -X ") {
		return false
	}
	return strings.Contains(ce.Output, "No such file or directory") || strings.Contains(ce.Output, "Invalid argument")
}

// checkPFCommand accepts only the pfctl command lines that Up journals:
// a journal is data, and must not be able to make Down disable pf or
// flush someone else's rules.
func checkPFCommand(c command) error {
	a := c.Args
	switch {
	case slices.Equal(a, []string{"-a", PFAnchor, "-f", "-"}),
		slices.Equal(a, []string{"-a", PFAnchor, "-F", "rules"}),
		slices.Equal(a, []string{"-E"}):
		return nil
	case len(a) == 2 && a[0] == "-X" && isDigits(a[1]):
		return nil
	}
	return fmt.Errorf("journal names %s; only the anchor %s and pf references are tetherd's", c, PFAnchor)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// pfAnchorEvaluated reports whether the main ruleset, as `pfctl -s rules`
// prints it, evaluates the anchors under com.apple/ (and so PFAnchor).
// The stock /etc/pf.conf does; one that was replaced may not, and then
// the filter is loaded but never applied.
func pfAnchorEvaluated(out []byte) bool {
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(strings.TrimSpace(line), `anchor "com.apple/*"`) {
			return true
		}
	}
	return false
}

// PeerEndpoints returns the endpoints of the tunnel's own connection, for
// Config.Peers: each of addrs (the peer's resolved addresses) at the port
// of the WebSocket URL wsURL, or its scheme's default port (wss 443,
// ws 80).
func PeerEndpoints(wsURL string, addrs []netip.Addr) ([]netip.AddrPort, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, fmt.Errorf("peer URL: %w", err)
	}
	var port uint64
	switch p := u.Port(); {
	case p != "":
		if port, err = strconv.ParseUint(p, 10, 16); err != nil || port == 0 {
			return nil, fmt.Errorf("peer URL: port %q", p)
		}
	case u.Scheme == "wss" || u.Scheme == "https":
		port = 443
	case u.Scheme == "ws" || u.Scheme == "http":
		port = 80
	default:
		return nil, fmt.Errorf("peer URL: no port for scheme %q", u.Scheme)
	}
	out := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		out[i] = netip.AddrPortFrom(a.Unmap(), uint16(port))
	}
	return out, nil
}
