// Package darwin is tetherd's system configuration on macOS: the routes
// that send the machine's traffic into the utun, the DNS servers of the
// tunnel as the system's default resolver, the binding that keeps the
// tunnel's own socket on the physical interface, the watcher of network
// changes, and the LaunchDaemon of `tetherd install`.
//
// The routing follows wg-quick on macOS: the default routes are left
// alone and the tunnel takes 0.0.0.0/1 + 128.0.0.0/1 and ::/1 + 8000::/1,
// which win by being more specific, while anything more specific still
// (the LAN, other VPNs) stays direct. The tunnel's own connection is
// bound to the default interface with IP_BOUND_IF (Binder), so the
// tunnel's routes do not apply to it; Exclude prefixes (the peer) get
// routes through the original default gateway as well. DNS goes into the
// SystemConfiguration dynamic store under a key of tetherd's own
// (DNSKey), never into the user's network services, and a pf anchor of
// tetherd's own (PFAnchor) refuses DNS leaving on any other interface,
// which catches the scoped queries and queries to the LAN's resolver that
// routes cannot. See Up for the exact
// commands, and docs/macos.md for what this does and does not cover.
//
// Every change is journaled before it is made (Config.JournalDir), so
// that Down can restore the system after the process was killed, and Up
// does so before configuring anew.
//
// All commands go through a Runner, and only a few small files need macOS
// (*_darwin.go, with *_other.go twins): the package builds and its tests
// run on Linux, where they compare the commands with golden files in
// testdata/.
package darwin
