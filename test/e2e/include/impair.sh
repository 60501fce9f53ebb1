# shellcheck shell=bash
# The impaired variant of lib.sh's topology, sourced by lib.sh (which provides the
# helpers and globals it uses).

# ---- the impaired variant: a MIDDLE namespace between LAPTOP and PHONE -------------
#
# tt_topology_up_impaired builds the same topology as tt_topology_up, with the same
# addresses, but the laptop<->phone link passes through a fourth namespace, MIDDLE,
# where test/impair (the impairment relay) delays, drops, reorders, duplicates or
# blackholes the packets (this kernel has no tc netem):
#
#   LAPTOP lan0 10.200.1.1/24 ── lan-l  MIDDLE  lan-p ── lan0 10.200.1.2/24 PHONE
#                                  │              │
#                  ip rule iif lan-l lookup 100   ip rule iif lan-p lookup 101
#                  table 100: default dev imp-a   table 101: default dev imp-b
#
# MIDDLE is a router that looks like a wire: it answers ARP and neighbour
# solicitation for the laptop on the phone's side and for the phone on the laptop's
# side (proxy entries, no delay), so LAPTOP and PHONE keep one /24 and /64 as on a
# hotspot, and the laptop's LAN bypass and the exclusion of the peer's address work
# as before. Everything from the laptop's side enters the TUN imp-a (direction a,
# laptop to phone), everything from the phone's side imp-b (direction b); the relay
# writes each packet back into the same device when due and the kernel forwards it
# by the main table (the phone, or the laptop; other destinations go to the phone,
# which does not forward, as before). imp-a and imp-b are persistent: while no relay
# runs, the link is a blackhole. Each forwarded packet's TTL drops by 2.
#
#   tt_topology_up_impaired     the four namespaces, then tt_impair_start with the
#                               flags in the array TT_IMPAIR_FLAGS (default none)
#   tt_impair_start [FLAGS...]  start the relay (test/impair) in MIDDLE with FLAGS
#                               (command-line settings: -delay 20ms -loss 1 ...);
#                               TT_IMPAIR_SEED (default 1) is its -seed
#   tt_impair [KEY=VALUE...]    retune the running relay: exactly these settings from
#                               now on, over the start flags (none: back to them), e.g.
#                               tt_impair delay=20ms loss=1 reorder=1 a.dup=1 rate=50mbit
#                               (keys: delay jitter loss reorder reorder_hold dup rate
#                               rate_queue limit blackhole; a./b. for one direction)
#   tt_blackhole on|off         drop everything in both directions, or stop doing so
#                               (the tt_impair settings stay)
#   tt_impair_stats             print the relay's counters (one line per direction)
#   tt_impair_stop              stop the relay: the link becomes a blackhole
#
# MIDDLE, TT_IMPAIR (the relay binary), TT_IMPAIR_PID and TT_IMPAIR_TPID are set by
# these functions; the relay's log is $WORK/impair.log.
MIDDLE=""
TT_IMPAIR=""
TT_IMPAIR_PID=""
TT_IMPAIR_TPID=""
TT_IMPAIR_SETTINGS="" # what the last tt_impair set
TT_IMPAIR_BLACKHOLE=off
TT_IMPAIR_GEN=0 # SIGHUPs sent to the running relay
TT_IMPAIR_FLAGS=() # flags of the relay tt_topology_up_impaired starts (set after sourcing)

# tt_build_impair: the relay binary into WORK (TT_IMPAIR).
tt_build_impair() {
	mkdir -p "$WORK/bin"
	tt_require_cmds go
	(cd "$TT_REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/impair" ./test/impair) ||
		tt_die "go build ./test/impair failed"
	TT_IMPAIR="$WORK/bin/impair"
}

tt_topology_up_impaired() {
	[ -n "$TT_IMPAIR" ] || tt_build_impair
	MIDDLE="tt-mid-${LAPTOP#tt-laptop-}"
	if ip netns list | awk '{print $1}' | grep -qx "$MIDDLE"; then
		tt_die "namespace $MIDDLE already exists"
	fi
	tt_ns_add "$LAPTOP" "$MIDDLE" "$PHONE" "$INTERNET"
	tt_ends_setup

	ip -n "$LAPTOP" link add lan0 type veth peer name lan-l netns "$MIDDLE" || tt_die "veth laptop<->middle"
	ip -n "$PHONE" link add lan0 type veth peer name lan-p netns "$MIDDLE" || tt_die "veth phone<->middle"
	ip -n "$PHONE" link add wan0 type veth peer name wan0 netns "$INTERNET" || tt_die "veth phone<->internet"

	# MIDDLE: a router with one host address per side (the source of its own ARP
	# and ICMP), proxy ARP/ND entries for the two ends, no reverse-path filter.
	tt_ns_sysctl "$MIDDLE" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
		net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
		net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.all.send_redirects=0 \
		net.ipv4.conf.default.send_redirects=0
	local side
	for side in lan-l lan-p; do
		tt_ns_sysctl "$MIDDLE" "net.ipv4.conf.$side.rp_filter=0" "net.ipv4.conf.$side.send_redirects=0" \
			"net.ipv4.neigh.$side.proxy_delay=0" "net.ipv6.neigh.$side.proxy_delay=0" \
			"net.ipv6.conf.$side.proxy_ndp=1" "net.ipv6.conf.$side.accept_dad=0"
		ip -n "$MIDDLE" link set "$side" up
	done
	ip -n "$MIDDLE" addr add 10.200.1.253/32 dev lan-l
	ip -n "$MIDDLE" addr add 10.200.1.254/32 dev lan-p
	ip -n "$MIDDLE" addr add fd00:200:1::fd/128 dev lan-l nodad
	ip -n "$MIDDLE" addr add fd00:200:1::fe/128 dev lan-p nodad
	ip -n "$MIDDLE" neigh add proxy "$TT_PHONE_LAN_IP4" dev lan-l
	ip -n "$MIDDLE" neigh add proxy "$TT_PHONE_LAN_IP6" dev lan-l
	ip -n "$MIDDLE" neigh add proxy "$TT_LAPTOP_IP4" dev lan-p
	ip -n "$MIDDLE" neigh add proxy "$TT_LAPTOP_IP6" dev lan-p
	# Main table: the phone on lan-p (also the gateway of everything else), the
	# rest of the LAN on lan-l.
	ip -n "$MIDDLE" -4 route add 10.200.1.0/24 dev lan-l
	ip -n "$MIDDLE" -4 route add "$TT_PHONE_LAN_IP4/32" dev lan-p
	ip -n "$MIDDLE" -4 route add default via "$TT_PHONE_LAN_IP4" dev lan-p
	ip -n "$MIDDLE" -6 route add fd00:200:1::/64 dev lan-l
	ip -n "$MIDDLE" -6 route add "$TT_PHONE_LAN_IP6/128" dev lan-p
	ip -n "$MIDDLE" -6 route add default via "$TT_PHONE_LAN_IP6" dev lan-p
	# The TUNs of the relay, and the policy routing that sends each side into its own.
	ip -n "$MIDDLE" tuntap add dev imp-a mode tun || tt_die "tuntap imp-a"
	ip -n "$MIDDLE" tuntap add dev imp-b mode tun || tt_die "tuntap imp-b"
	for side in imp-a imp-b; do
		ip -n "$MIDDLE" link set "$side" mtu 1500 txqueuelen 4000 up
		tt_ns_sysctl "$MIDDLE" "net.ipv4.conf.$side.rp_filter=0"
	done
	ip -n "$MIDDLE" -4 rule add pref 100 iif lan-l lookup 100
	ip -n "$MIDDLE" -4 rule add pref 101 iif lan-p lookup 101
	ip -n "$MIDDLE" -6 rule add pref 100 iif lan-l lookup 100
	ip -n "$MIDDLE" -6 rule add pref 101 iif lan-p lookup 101
	ip -n "$MIDDLE" -4 route add default dev imp-a table 100
	ip -n "$MIDDLE" -4 route add default dev imp-b table 101
	ip -n "$MIDDLE" -6 route add default dev imp-a table 100
	ip -n "$MIDDLE" -6 route add default dev imp-b table 101

	tt_ends_up

	tt_impair_start "${TT_IMPAIR_FLAGS[@]}"
	tt_wait 10 "LAPTOP reaches the phone through MIDDLE" ip netns exec "$LAPTOP" ping -c1 -W1 -q "$TT_PHONE_LAN_IP4" ||
		tt_die "LAPTOP cannot ping the phone through MIDDLE"
	tt_wait 10 "LAPTOP reaches the phone through MIDDLE (IPv6)" ip netns exec "$LAPTOP" ping -6 -c1 -W1 -q "$TT_PHONE_LAN_IP6" ||
		tt_die "LAPTOP cannot ping the phone through MIDDLE over IPv6"
	tt_wait 10 "PHONE wan0 up" ip netns exec "$PHONE" ping -c1 -W1 -q "$TT_INET_IP4" ||
		tt_die "PHONE cannot ping the internet"
}

# tt_impair_start [FLAGS...]: the relay in MIDDLE, waiting for it to be ready.
tt_impair_start() {
	[ -n "$MIDDLE" ] || tt_die "tt_impair_start: no MIDDLE namespace (tt_topology_up_impaired)"
	: >"$WORK/impair.ctl"
	tt_bg impair ip netns exec "$MIDDLE" "$TT_IMPAIR" -a imp-a -b imp-b -ctl "$WORK/impair.ctl" \
		-seed "${TT_IMPAIR_SEED:-1}" "$@"
	TT_IMPAIR_TPID=$TT_LAST_PID
	TT_IMPAIR_PID=$(tt_child_of "$TT_IMPAIR_TPID" 5) || true
	TT_IMPAIR_GEN=0
	TT_IMPAIR_SETTINGS=""
	TT_IMPAIR_BLACKHOLE=off
	tt_wait_log 10 "$WORK/impair.log" 'ready: ' "$TT_IMPAIR_TPID" || {
		cat "$WORK/impair.log" >&2
		tt_die "the impairment relay did not start"
	}
}

# tt_impair_apply: write the settings file and wait until the relay applied it.
tt_impair_apply() {
	if [ -z "$TT_IMPAIR_PID" ] || ! tt_alive "$TT_IMPAIR_PID"; then
		tt_log "tt_impair: the relay is not running"
		return 1
	fi
	printf '%s blackhole=%s\n' "$TT_IMPAIR_SETTINGS" "$TT_IMPAIR_BLACKHOLE" >"$WORK/impair.ctl"
	TT_IMPAIR_GEN=$((TT_IMPAIR_GEN + 1))
	kill -HUP "$TT_IMPAIR_PID"
	tt_wait_log 5 "$WORK/impair.log" "settings #$TT_IMPAIR_GEN (NOT )?applied" "$TT_IMPAIR_TPID" || return 1
	if grep -q "settings #$TT_IMPAIR_GEN NOT applied" "$WORK/impair.log"; then
		grep "settings #$TT_IMPAIR_GEN NOT applied" "$WORK/impair.log" >&2
		return 1
	fi
}

# tt_impair [KEY=VALUE...]: these settings from now on (see above).
tt_impair() {
	TT_IMPAIR_SETTINGS="$*"
	tt_impair_apply
}

# tt_blackhole on|off
tt_blackhole() {
	case ${1:-} in
	on | off) TT_IMPAIR_BLACKHOLE=$1 ;;
	*) tt_die "tt_blackhole: on or off, not '${1:-}'" ;;
	esac
	tt_impair_apply
}

# tt_impair_stats: the relay's counters now, one line per direction.
tt_impair_stats() {
	tt_alive "$TT_IMPAIR_PID" || return 1
	local n
	n=$(grep -c 'counters at ' "$WORK/impair.log" || true)
	kill -USR2 "$TT_IMPAIR_PID"
	tt_wait 5 "the relay's counters" bash -c "[ \$(grep -c 'counters at ' '$WORK/impair.log') -gt $n ]" || return 1
	sleep 0.05
	awk -v n="$((n + 1))" '/counters at /{c++; next} c == n && /^direction /{print} c == n && !/^direction /{exit}' "$WORK/impair.log"
}

# tt_impair_stop: stop the relay (its counters go to $WORK/impair.log).
tt_impair_stop() {
	[ -n "$TT_IMPAIR_TPID" ] && tt_stop "$TT_IMPAIR_TPID" 5
	TT_IMPAIR_PID=""
}
