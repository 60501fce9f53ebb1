//go:build linux

// Package linux is tetherd's system configuration on Linux: the policy
// routing that sends the machine's traffic into the TUN, DNS, the firewall
// mark that keeps the tunnel's own socket out of the tunnel, and the
// privilege check of `tetherd up`. It talks netlink (never the ip
// command); only the systemd-resolved DNS mode runs resolvectl.
//
// The routing follows wg-quick: the routes live in a private table, and
// three consecutive rule priorities send everything that is not marked
// into that table, with exceptions (Exclude) and an optional LAN bypass
// ahead of it. See Up for the exact rules and routes.
//
// Every change is journaled before it is made (Config.JournalDir), so that
// Down can restore the system after the process was killed, and Up does so
// before configuring anew.
//
// All files of this package are Linux-only; cmd/tetherd selects it in a
// Linux-only file, so no twin exists for other systems.
package linux
