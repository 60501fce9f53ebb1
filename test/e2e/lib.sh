# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are used by the scripts that source it
# Shared code of the network-namespace suites (test/e2e/*.sh) and scripts/demo.sh.
# Source it; do not run it.
#
# The topology, three network namespaces joined by veth pairs:
#
#   LAPTOP  lan0 10.200.1.1/24      fd00:200:1::1/64     default via the phone
#      |
#   PHONE   lan0 10.200.1.2/24      fd00:200:1::2/64     forwarding OFF (v4 and v6)
#           wan0 198.51.100.1/24    2001:db8:100::1/64   default via the internet
#      |
#   INTERNET wan0 198.51.100.10/24  2001:db8:100::10/64  internetd, iperf3 -s
#
# The phone does not forward, so the laptop reaches the internet only through the
# tunnel: `tetherd serve` runs in PHONE (as nobody when setpriv exists) and
# `tetherd up` in LAPTOP. LAPTOP's resolver is 10.200.1.2 (nothing answers there; it
# must never be asked while the tunnel is up), PHONE's is internetd's DNS.
#
# Safety: nothing here touches the root network namespace. Interfaces are created
# directly inside the namespaces; every process started is recorded by PID and
# killed by PID; tt_cleanup (installed by tt_init as the EXIT/INT/TERM trap) kills
# them, deletes the namespaces and /etc/netns/NAME, and removes the work directory.
# tt_init saves the root namespace's rules, routes and /etc/resolv.conf and
# tt_root_unchanged compares them (read-only).
#
# Environment:
#   TETHERD         tetherd binary to use (default: built from the tree)
#   TT_KEEP=1       keep the work directory (logs) after the run
#   TT_MAX_LIFETIME seconds every background process may live at most (default 600)
#   TT_VERBOSE=1    print every command tt_run runs

TT_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Addresses of the topology.
TT_LAPTOP_IP4=10.200.1.1
TT_PHONE_LAN_IP4=10.200.1.2
TT_LAPTOP_IP6=fd00:200:1::1
TT_PHONE_LAN_IP6=fd00:200:1::2
TT_PHONE_WAN_IP4=198.51.100.1
TT_INET_IP4=198.51.100.10
TT_PHONE_WAN_IP6=2001:db8:100::1
TT_INET_IP6=2001:db8:100::10
TT_SERVE_PORT=8443
TT_IPERF_PORT=5201

TT_MAX_LIFETIME="${TT_MAX_LIFETIME:-600}"
TT_BIG_MIB="${TT_BIG_MIB:-64}" # size of internetd's /big

# Set by tt_init.
LAPTOP="" PHONE="" INTERNET="" WORK=""
TT_NAMESPACES=() # namespaces this run created (or is about to)
TT_PIDS=()       # background processes this run started
TT_CLEANED=0
TT_URI=""         # the URI tetherd serve printed
TT_SERVE_PID=""   # PID of the tetherd serve process itself
TT_TETHERD=""     # the tetherd binary, copied into WORK
TT_INTERNETD=""   # the internetd binary

tt_log() { printf '%s\n' "$*" >&2; }
tt_die() {
	tt_log "error: $*"
	exit 1
}

# tt_now_ms prints the time in milliseconds.
tt_now_ms() {
	local t=${EPOCHREALTIME/./}
	echo $((t / 1000))
}

tt_require_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "skipped: must run as root"
		exit 77
	fi
}

# tt_require_cmds CMD...: exit 77 (skipped) when one is missing.
tt_require_cmds() {
	local missing=() c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "skipped: missing commands: ${missing[*]} (see APT_PACKAGES in .ci/run)"
		exit 77
	fi
}

# tt_random_suffix prints 6 random hex digits.
tt_random_suffix() {
	od -An -N3 -tx1 /dev/urandom | tr -d ' \n'
}

# tt_init: pick the namespace names, make the work directory, save the root
# namespace's state and install the cleanup trap. Call it first.
tt_init() {
	local suf
	suf="$(tt_random_suffix)"
	LAPTOP="tt-laptop-$suf"
	PHONE="tt-phone-$suf"
	INTERNET="tt-inet-$suf"
	local ns
	for ns in "$LAPTOP" "$PHONE" "$INTERNET"; do
		if ip netns list | awk '{print $1}' | grep -qx "$ns" || [ -e "/etc/netns/$ns" ]; then
			tt_die "namespace $ns already exists (a collision of random names?)"
		fi
	done
	# fd 9 is the original stderr: the traps may fire while a check's output is
	# redirected to a file.
	exec 9>&2
	WORK="$(mktemp -d /tmp/tt-e2e.XXXXXX)"
	# nobody (tetherd serve) must be able to reach its state directory inside.
	chmod 0711 "$WORK"
	trap tt_on_exit EXIT
	trap 'tt_on_signal INT 130' INT
	trap 'tt_on_signal TERM 143' TERM
	mkdir -p "$WORK/root-before"
	tt_snapshot_root "$WORK/root-before"
}

tt_on_signal() {
	echo "received SIG$1: cleaning up" >&9
	exit "$2" # runs the EXIT trap
}

tt_on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	tt_cleanup
	exit "$rc"
}

# tt_bg NAME CMD...: run CMD in the background, bounded by TT_MAX_LIFETIME, output
# in $WORK/NAME.out and $WORK/NAME.log; records and prints nothing. The PID of
# `timeout` is in TT_LAST_PID (ip netns exec execs, it does not fork).
tt_bg() {
	local name=$1
	shift
	timeout -k 5 "$TT_MAX_LIFETIME" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" </dev/null 9>&- &
	TT_LAST_PID=$!
	TT_PIDS+=("$TT_LAST_PID")
}

# tt_child_of PID [TIMEOUT_S]: print the PID of the first child of PID (the command
# `timeout` runs), waiting for it to appear.
tt_child_of() {
	local parent=$1 deadline=$(($(tt_now_ms) + ${2:-5} * 1000)) c
	while :; do
		c=$(pgrep -P "$parent" | head -n1)
		if [ -n "$c" ]; then
			echo "$c"
			return 0
		fi
		kill -0 "$parent" 2>/dev/null || return 1
		[ "$(tt_now_ms)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

# tt_alive PID: is it running (and not a zombie)?
tt_alive() {
	local st
	kill -0 "$1" 2>/dev/null || return 1
	st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)
	[ -n "$st" ] && [ "$st" != Z ]
}

# tt_stop PID [TIMEOUT_S]: SIGTERM, wait, then SIGKILL. Only for PIDs we started.
tt_stop() {
	local pid=$1 t=${2:-5} deadline
	tt_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$(($(tt_now_ms) + t * 1000))
	while tt_alive "$pid" && [ "$(tt_now_ms)" -lt "$deadline" ]; do
		sleep 0.05
	done
	if tt_alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.1
	fi
}

# tt_cleanup: kill what we started, delete our namespaces and /etc/netns dirs,
# remove WORK. Idempotent; never fails.
tt_cleanup() {
	[ "$TT_CLEANED" = 1 ] && return 0
	TT_CLEANED=1
	set +e
	local pid ns p
	# Our background processes, by PID: TERM first so that tetherd up restores.
	for pid in "${TT_PIDS[@]}"; do
		if tt_alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null
		fi
	done
	for pid in "${TT_PIDS[@]}"; do
		tt_stop "$pid" 5
	done
	# Anything still running inside our namespaces was started by this run.
	for ns in "${TT_NAMESPACES[@]}"; do
		if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
			for p in $(ip netns pids "$ns" 2>/dev/null); do
				kill -KILL "$p" 2>/dev/null
			done
		fi
	done
	for ns in "${TT_NAMESPACES[@]}"; do
		if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
			ip netns del "$ns" 2>/dev/null || tt_log "warning: could not delete namespace $ns"
		fi
		if [ -n "$ns" ] && [ -d "/etc/netns/$ns" ]; then
			rm -rf -- "/etc/netns/${ns:?}"
		fi
	done
	# /etc/netns did not exist before most runs; remove it when it is empty again.
	[ -d /etc/netns ] && rmdir --ignore-fail-on-non-empty /etc/netns 2>/dev/null
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "${TT_KEEP:-0}" = 1 ]; then
			tt_log "work directory kept: $WORK"
		else
			rm -rf -- "${WORK:?}"
		fi
	fi
	return 0
}

# tt_snapshot_root DIR: the root namespace's rules, routes and resolv.conf (read
# only).
tt_snapshot_root() {
	local d=$1
	ip -4 rule >"$d/rule4" 2>&1
	ip -6 rule >"$d/rule6" 2>&1
	ip -4 route show table all >"$d/route4" 2>&1
	ip -6 route show table all >"$d/route6" 2>&1
	cp /etc/resolv.conf "$d/resolv.conf" 2>/dev/null || : >"$d/resolv.conf"
}

# tt_cleanup_keep_work: tt_cleanup without removing WORK (a check's output lives
# there); the EXIT trap removes it afterwards.
tt_cleanup_keep_work() {
	local keep=${TT_KEEP:-0}
	TT_KEEP=1
	tt_cleanup 2>/dev/null
	TT_KEEP=$keep
	TT_CLEANED=0
	TT_PIDS=()
	TT_NAMESPACES=()
}

# tt_namespaces_gone NS...: says which of the namespaces, or their /etc/netns
# directories, still exist; fails if any does.
tt_namespaces_gone() {
	local ns rc=0
	for ns in "$@"; do
		if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
			echo "namespace $ns still exists"
			rc=1
		fi
		if [ -e "/etc/netns/$ns" ]; then
			echo "/etc/netns/$ns still exists"
			rc=1
		fi
	done
	return "$rc"
}

# tt_root_unchanged: compare the root namespace with the snapshot of tt_init; print
# the differences.
tt_root_unchanged() {
	local now="$WORK/root-after.$RANDOM"
	mkdir -p "$now"
	tt_snapshot_root "$now"
	diff -ru "$WORK/root-before" "$now"
}

# tt_snapshot NS DIR: what tetherd up changes in NS: rules, routes, resolv.conf
# bytes, the link names and the nftables tables.
tt_snapshot() {
	local ns=$1 d=$2
	mkdir -p "$d"
	ip -n "$ns" -4 rule >"$d/rule4" 2>&1
	ip -n "$ns" -6 rule >"$d/rule6" 2>&1
	ip -n "$ns" -4 route show table all >"$d/route4" 2>&1
	ip -n "$ns" -6 route show table all >"$d/route6" 2>&1
	cp "/etc/netns/$ns/resolv.conf" "$d/resolv.conf"
	ip -n "$ns" -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort >"$d/links"
	ip netns exec "$ns" nft list tables >"$d/nft-tables" 2>&1
}

# tt_same_as BASE NS: snapshot NS and diff it against the snapshot in BASE.
tt_same_as() {
	local base=$1 ns=$2 now="$WORK/snap.$RANDOM"
	tt_snapshot "$ns" "$now"
	diff -ru "$base" "$now"
}

# tt_wait TIMEOUT_S DESCRIPTION CMD...: run CMD every 100 ms until it succeeds.
tt_wait() {
	local t=$1 desc=$2
	shift 2
	local deadline=$(($(tt_now_ms) + t * 1000))
	while :; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if [ "$(tt_now_ms)" -ge "$deadline" ]; then
			tt_log "timed out after ${t}s waiting for $desc"
			return 1
		fi
		sleep 0.1
	done
}

# tt_wait_log TIMEOUT_S FILE REGEX [PID]: wait until FILE has a line matching REGEX
# (grep -E); give up early when PID exits.
tt_wait_log() {
	local t=$1 file=$2 re=$3 pid=${4:-}
	local deadline=$(($(tt_now_ms) + t * 1000))
	while :; do
		if grep -qE -- "$re" "$file" 2>/dev/null; then
			return 0
		fi
		if [ -n "$pid" ] && ! tt_alive "$pid"; then
			# One last look: it may have logged and exited at once.
			grep -qE -- "$re" "$file" 2>/dev/null && return 0
			tt_log "process $pid exited before logging /$re/ in $file"
			return 2
		fi
		if [ "$(tt_now_ms)" -ge "$deadline" ]; then
			tt_log "timed out after ${t}s waiting for /$re/ in $file"
			return 1
		fi
		sleep 0.1
	done
}

# tt_build: the tetherd binary (TETHERD, or built from the tree) and internetd,
# both into WORK (a copy, so that a rebuild of bin/ during the run changes nothing).
tt_build() {
	mkdir -p "$WORK/bin"
	chmod 0755 "$WORK/bin"
	if [ -n "${TETHERD:-}" ]; then
		[ -x "$TETHERD" ] || tt_die "TETHERD=$TETHERD is not an executable file"
		cp "$TETHERD" "$WORK/bin/tetherd"
	else
		tt_require_cmds go
		(cd "$TT_REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/tetherd" ./cmd/tetherd) ||
			tt_die "go build ./cmd/tetherd failed"
	fi
	tt_require_cmds go
	(cd "$TT_REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/internetd" ./test/e2e/internetd) ||
		tt_die "go build ./test/e2e/internetd failed"
	chmod 0755 "$WORK/bin/tetherd" "$WORK/bin/internetd"
	TT_TETHERD="$WORK/bin/tetherd"
	TT_INTERNETD="$WORK/bin/internetd"
}

# tt_has_command NAME: does `tetherd help` list the command?
tt_has_command() {
	"$TT_TETHERD" help 2>&1 | grep -qE "^[[:space:]]+$1([[:space:]]|\$)"
}

# tt_ns_sysctl NS KEY=VALUE...
tt_ns_sysctl() {
	local ns=$1
	shift
	ip netns exec "$ns" sysctl -q -w "$@" >/dev/null
}

# tt_ns_add NS...: create the namespaces (registered for cleanup first), loopback
# up, IPv6 addresses usable at once (no duplicate address detection).
tt_ns_add() {
	local ns
	for ns in "$@"; do
		TT_NAMESPACES+=("$ns") # before creating it, so that cleanup sees it
		ip netns add "$ns" || tt_die "ip netns add $ns failed"
		ip -n "$ns" link set lo up
		tt_ns_sysctl "$ns" net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
			net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
			net.ipv6.conf.default.accept_ra=0
	done
}

# tt_ends_setup: the resolvers of LAPTOP and PHONE, and the phone's settings.
tt_ends_setup() {
	mkdir -p "/etc/netns/$LAPTOP" "/etc/netns/$PHONE"
	# The laptop's LAN resolver: nothing listens there, and it must never be asked
	# while the tunnel is up.
	printf 'nameserver %s\n' "$TT_PHONE_LAN_IP4" >"/etc/netns/$LAPTOP/resolv.conf"
	printf 'nameserver %s\n' "$TT_INET_IP4" >"/etc/netns/$PHONE/resolv.conf"
	# The phone is not a router: the tunnel must be the only way out.
	tt_ns_sysctl "$PHONE" net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
	# Unprivileged ICMP sockets for every user, as on Android: tetherd serve (nobody)
	# sends the laptop's pings with them.
	tt_ns_sysctl "$PHONE" "net.ipv4.ping_group_range=0 2147483647"
}

# tt_ends_up: addresses, up state and routes of LAPTOP's lan0, PHONE's lan0 and wan0
# and INTERNET's wan0 (the links exist).
tt_ends_up() {
	ip -n "$LAPTOP" addr add "$TT_LAPTOP_IP4/24" dev lan0
	ip -n "$LAPTOP" addr add "$TT_LAPTOP_IP6/64" dev lan0 nodad
	ip -n "$PHONE" addr add "$TT_PHONE_LAN_IP4/24" dev lan0
	ip -n "$PHONE" addr add "$TT_PHONE_LAN_IP6/64" dev lan0 nodad
	ip -n "$PHONE" addr add "$TT_PHONE_WAN_IP4/24" dev wan0
	ip -n "$PHONE" addr add "$TT_PHONE_WAN_IP6/64" dev wan0 nodad
	ip -n "$INTERNET" addr add "$TT_INET_IP4/24" dev wan0
	ip -n "$INTERNET" addr add "$TT_INET_IP6/64" dev wan0 nodad
	ip -n "$LAPTOP" link set lan0 up
	ip -n "$PHONE" link set lan0 up
	ip -n "$PHONE" link set wan0 up
	ip -n "$INTERNET" link set wan0 up

	ip -n "$LAPTOP" -4 route add default via "$TT_PHONE_LAN_IP4"
	ip -n "$LAPTOP" -6 route add default via "$TT_PHONE_LAN_IP6"
	ip -n "$PHONE" -4 route add default via "$TT_INET_IP4"
	ip -n "$PHONE" -6 route add default via "$TT_INET_IP6"
	# The internet knows the way back to the LAN, so that only the phone's disabled
	# forwarding stands between the laptop and the internet.
	ip -n "$INTERNET" -4 route add 10.200.1.0/24 via "$TT_PHONE_WAN_IP4"
	ip -n "$INTERNET" -6 route add fd00:200:1::/64 via "$TT_PHONE_WAN_IP6"
}

# tt_topology_up: the three namespaces, their links, addresses and routes.
tt_topology_up() {
	tt_ns_add "$LAPTOP" "$PHONE" "$INTERNET"
	tt_ends_setup
	# Links are created inside the namespaces, never in the root namespace.
	ip -n "$LAPTOP" link add lan0 type veth peer name lan0 netns "$PHONE" || tt_die "veth laptop<->phone"
	ip -n "$PHONE" link add wan0 type veth peer name wan0 netns "$INTERNET" || tt_die "veth phone<->internet"
	tt_ends_up

	# The veths are up once both ends are.
	tt_wait 10 "LAPTOP lan0 up" ip netns exec "$LAPTOP" ping -c1 -W1 -q "$TT_PHONE_LAN_IP4" ||
		tt_die "LAPTOP cannot ping the phone"
	tt_wait 10 "PHONE wan0 up" ip netns exec "$PHONE" ping -c1 -W1 -q "$TT_INET_IP4" ||
		tt_die "PHONE cannot ping the internet"
}

# tt_start_internetd: the internet's servers, waits until they listen.
tt_start_internetd() {
	tt_bg internetd ip netns exec "$INTERNET" "$TT_INTERNETD" -addr "$TT_INET_IP4" -addr "$TT_INET_IP6" -big-mib "$TT_BIG_MIB"
	TT_INTERNETD_PID=$TT_LAST_PID
	tt_wait_log 30 "$WORK/internetd.log" ' ready: ' "$TT_INTERNETD_PID" || {
		cat "$WORK/internetd.log" >&2
		tt_die "internetd did not start"
	}
}

# tt_start_iperf3: iperf3 server in INTERNET (IPv4 and IPv6), by PID.
tt_start_iperf3() {
	tt_bg iperf3-server ip netns exec "$INTERNET" iperf3 -s -p "$TT_IPERF_PORT"
	TT_IPERF_PID=$TT_LAST_PID
	tt_wait 10 "iperf3 -s listening" tt_listening "$INTERNET" "$TT_IPERF_PORT" || {
		cat "$WORK/iperf3-server.log" >&2
		tt_die "iperf3 -s did not start"
	}
}

# tt_listening NS PORT: is a TCP socket listening on PORT in NS?
tt_listening() {
	ip netns exec "$1" ss -Htln "sport = :$2" | grep -q .
}

# tt_start_serve [NAME [FLAGS...]]: tetherd serve in PHONE on 10.200.1.2:8443 (as
# nobody when setpriv exists), state in $WORK/phone-state, output in $WORK/NAME.out
# and .log (NAME defaults to serve); sets TT_URI, TT_SERVE_TPID and TT_SERVE_PID.
# Returns non-zero (after printing why) when it does not come up.
tt_start_serve() {
	local name=${1:-serve}
	[ "$#" -gt 0 ] && shift
	local state="$WORK/phone-state" as=()
	mkdir -p "$state"
	chmod 0700 "$state"
	if command -v setpriv >/dev/null 2>&1; then
		chown 65534:65534 "$state"
		as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	else
		tt_log "warning: setpriv not found: tetherd serve runs as root"
	fi
	tt_bg "$name" ip netns exec "$PHONE" "${as[@]}" env HOME="$state" XDG_STATE_HOME="$state" \
		"$TT_TETHERD" serve --listen "$TT_PHONE_LAN_IP4:$TT_SERVE_PORT" --state-dir "$state" "$@"
	TT_SERVE_TPID=$TT_LAST_PID
	TT_SERVE_PID=$(tt_child_of "$TT_SERVE_TPID" 5) || true
	if ! tt_wait_log 20 "$WORK/$name.out" '^tether://' "$TT_SERVE_TPID"; then
		cat "$WORK/$name.out" "$WORK/$name.log" >&2
		tt_log "tetherd serve printed no tether:// URI"
		return 1
	fi
	TT_URI=$(grep -m1 '^tether://' "$WORK/$name.out")
	if ! tt_wait 10 "tetherd serve listening" tt_listening "$PHONE" "$TT_SERVE_PORT"; then
		tt_log "tetherd serve is not listening on $TT_SERVE_PORT"
		return 1
	fi
}

# tt_write_up_config FILE [EXTRA-YAML]: a configuration for tetherd up (mode 0600)
# that keeps its journal in WORK and writes resolv.conf (never systemd-resolved).
tt_write_up_config() {
	local f=$1 extra=${2:-}
	mkdir -p "$WORK/journal"
	(
		umask 077
		cat >"$f" <<EOF
tun:
  name: tether0
  ipv4: 10.255.77.1/30
  ipv6: fd74:6574:6865:7264::1/64
routes:
  lan_bypass: true
dns:
  mode: resolvconf
  servers: [10.255.77.2, "fd74:6574:6865:7264::53"]
journal_dir: $WORK/journal
log:
  level: debug
  format: console
$extra
EOF
	)
	chmod 0600 "$f"
}

# tt_start_up NAME ARGS...: start `tetherd up ARGS` in LAPTOP in the background; sets
# TT_UP_TPID (timeout's PID: `wait` on it gives up's exit status) and TT_UP_PID (up
# itself). Log in $WORK/NAME.log.
tt_start_up() {
	local name=$1
	shift
	tt_bg "$name" ip netns exec "$LAPTOP" "$TT_TETHERD" up "$@"
	TT_UP_TPID=$TT_LAST_PID
	TT_UP_PID=$(tt_child_of "$TT_UP_TPID" 5) || TT_UP_PID=""
}

# tt_wait_exit PID TIMEOUT_S: wait for a background child of this shell to exit;
# sets TT_EXIT to its status. Returns 1 on timeout.
tt_wait_exit() {
	local pid=$1 t=$2 deadline
	deadline=$(($(tt_now_ms) + t * 1000))
	while tt_alive "$pid"; do
		if [ "$(tt_now_ms)" -ge "$deadline" ]; then
			return 1
		fi
		sleep 0.05
	done
	TT_EXIT=0
	wait "$pid" 2>/dev/null || TT_EXIT=$?
	return 0
}

# ---- the impaired variant: in include/impair.sh ---------------------------------

# shellcheck source=test/e2e/include/impair.sh
source "$(dirname "${BASH_SOURCE[0]}")/include/impair.sh"

# ---- nftables leak counter on LAPTOP's lan0 (tunnel.sh, faults.sh) ----------------
# tt_leak_setup counts, in LAPTOP only, every packet leaving lan0 except the tunnel's
# own connection to the phone ("tunnel") and IPv6 neighbour/MLD traffic
# ("linklocal"): what remains ("leak") went around the tunnel; the sets keep where to.
tt_leak_setup() {
	ip netns exec "$LAPTOP" nft -f - <<EOF
table inet tt_leak {
	counter leak { }
	counter tunnel { }
	counter linklocal { }
	set leaked4 { type ipv4_addr . inet_proto . inet_service; flags dynamic; size 1024; }
	set leaked6 { type ipv6_addr . inet_proto . inet_service; flags dynamic; size 1024; }
	chain post {
		type filter hook postrouting priority 0; policy accept;
		oifname != "lan0" return
		ip daddr $TT_PHONE_LAN_IP4 tcp dport $TT_SERVE_PORT counter name "tunnel" return
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } counter name "linklocal" return
		meta nfproto ipv4 add @leaked4 { ip daddr . meta l4proto . th dport }
		meta nfproto ipv6 add @leaked6 { ip6 daddr . meta l4proto . th dport }
		counter name "leak"
	}
}
EOF
}

# tt_leak_packets NAME: packets counted by the named counter.
tt_leak_packets() {
	ip netns exec "$LAPTOP" nft list counter inet tt_leak "$1" | awk '/packets/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'
}

tt_leak_reset() {
	ip netns exec "$LAPTOP" nft reset counters table inet tt_leak >/dev/null
	ip netns exec "$LAPTOP" nft flush set inet tt_leak leaked4
	ip netns exec "$LAPTOP" nft flush set inet tt_leak leaked6
}

tt_leak_show_sets() {
	ip netns exec "$LAPTOP" nft list set inet tt_leak leaked4 | sed -n '/elements/,/}/p'
	ip netns exec "$LAPTOP" nft list set inet tt_leak leaked6 | sed -n '/elements/,/}/p'
}
