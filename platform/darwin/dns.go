package darwin

import (
	"net/netip"
	"strconv"
	"strings"
)

// ServiceID is the made-up network service under which tetherd publishes
// its DNS servers in the SystemConfiguration dynamic store. It names no
// network service of the user's (those live under Setup:/ and are never
// touched); it only gives tetherd one key of its own to set and remove.
const ServiceID = "F9ABDD37-5E1A-41A4-8B59-EEDD7A8928B7"

// DNSKey is the dynamic store key that holds tetherd's DNS configuration
// while the tunnel is up: `scutil --dns` then lists its servers first.
const DNSKey = "State:/Network/Service/" + ServiceID + "/DNS"

// dnsSearchOrder sorts tetherd's resolver before the services' own: their
// default resolvers appear with orders of 100000 and more in
// `scutil --dns`, and lower comes first.
const dnsSearchOrder = 1

// setDNSScript is the scutil script that publishes servers as a default
// resolver:
//
//   - ServerAddresses are the tunnel's resolvers;
//   - the empty supplemental match domain matches every name, which makes
//     the entry a resolver for all queries rather than for a domain;
//   - SearchOrder puts it ahead of the resolvers of the network services,
//     so that unscoped queries go to the tunnel;
//
// and then shows the key, so that a silent failure of set (scutil exits 0
// whatever happens) is seen.
func setDNSScript(servers []netip.Addr) string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.String()
	}
	return strings.Join([]string{
		"open",
		"d.init",
		"d.add ServerAddresses * " + strings.Join(addrs, " "),
		`d.add SupplementalMatchDomains * ""`,
		"d.add SearchOrder # " + strconv.Itoa(dnsSearchOrder),
		"set " + DNSKey,
		"show " + DNSKey,
		"quit",
		"",
	}, "\n")
}

// removeDNSScript is the scutil script that removes tetherd's key (and
// so its resolver) from the dynamic store.
func removeDNSScript() string {
	return strings.Join([]string{"open", "remove " + DNSKey, "quit", ""}, "\n")
}

// scutilFailed returns the line where scutil reported a failure, if any:
// it prints "  set: failed (...)" and the like and still exits 0.
func scutilFailed(out []byte) (string, bool) {
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "failed") || strings.Contains(line, "No such key") {
			return strings.TrimSpace(line), true
		}
	}
	return "", false
}
