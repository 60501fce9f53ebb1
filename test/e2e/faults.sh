#!/usr/bin/env bash
# shellcheck disable=SC2034,SC2153 # figures set with printf -v, read in arithmetic
# Fault suite of tetherd, in four network namespaces: LAPTOP -- MIDDLE -- PHONE --
# INTERNET (lib.sh, tt_topology_up_impaired). MIDDLE runs the impairment relay
# (test/impair), so the laptop<->phone link can be delayed, made lossy, reordered or
# cut. Each check prints the figure it measured:
#
#   integrity    20 ms each way, 1 % loss, 1 % reordering: a download and an upload
#                through the tunnel arrive byte-exact (sha256), sizes exact
#   peer kill    SIGKILL of `tetherd serve` and a new one at once: the old flow is
#                reset (an error, never a clean end) within 2 s of the peer's death, a
#                new flow works within 5 s of the new serve listening
#   SIGSTOP      serve stopped for 15 s: keepalive declares the session dead within
#                its deadline (keepalive_timeout 6s here), traffic works again after
#                SIGCONT without anything done
#   blackhole    the link drops everything for 10 s (60 s with SOAK=1): same figures
#   leaks        nothing leaves the laptop's lan0 outside the tunnel's connection:
#                over the faults above, then over 1,000 DNS queries, 1,000 IPv4 and
#                1,000 IPv6 connection attempts (nftables counters)
#   flows        2,000 TCP and 2,000 UDP flows (10,000 each with SOAK=1) in waves:
#                no flow left in `tetherd status --json`; file descriptors (and
#                goroutines and heap, when tetherd has the metrics endpoint) of up and
#                serve back within 10 % of before
#   SIGKILL up   10 times (50 with SOAK=1) at random moments (setup, connected,
#                teardown): `tetherd down` or the next `up` restores rules, routes,
#                links, nftables and resolv.conf byte-identical to the baseline; and
#                the state of a kill in the middle of rewriting resolv.conf, made on
#                purpose
#   link flap    lan0 down for 10 s, then up: reconnected at once on the netlink
#                event, before the backoff timer; an address change likewise
#
# Run as root: `make netns-test` (scripts/netns-test.sh) runs it, `make soak` runs it
# with SOAK=1 (the long variants). Directly:
#   sudo test/e2e/faults.sh
#   sudo SOAK=1 TT_KEEP=1 test/e2e/faults.sh
#
# Environment: SOAK=1 (long variants), FAULTS_SEED (the seed of the random kill
# moments; printed), TETHERD, TT_KEEP, TT_IMPAIR_SEED (see lib.sh).
#
# Prints one "ok"/"FAIL" line per check with its figures, "KNOWN BUG:" lines for
# failures recorded as product bugs (they do not fail the suite), then "N passed, M
# failed". Exit 0 when everything passed, 1 on a failure, 77 when it cannot run here.
set -euo pipefail
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# shellcheck source=test/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TT_BIG_MIB=32
SOAK=${SOAK:-0}
if [ "$SOAK" = 1 ]; then
	BLACKHOLE_S=60
	FLOWS=10000
	KILLS=50
	INTEGRITY_ROUNDS=3
else
	BLACKHOLE_S=10
	FLOWS=2000
	KILLS=10
	INTEGRITY_ROUNDS=1
fi
FAULTS_SEED=${FAULTS_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$FAULTS_SEED
KEEPALIVE_TIMEOUT_S=6
# How late keepalive may declare a silent peer dead: one keepalive interval (1 s),
# plus 3 s for a loaded machine (its timers fire late: 8.8 s was seen at load 15 on
# 2 cores).
KEEPALIVE_SLACK_S=4

tt_require_root
tt_require_cmds ip nft curl dig sha256sum timeout pgrep ss ping od awk
tt_init
tt_build
tt_build_impair
if ! tt_has_command up || ! tt_has_command down; then
	echo "skipped: tetherd up not available ('tetherd help' lists no up/down command)"
	exit 77
fi

PASSED=0
FAILED=0
KNOWN=0
NCHECK=0

# check NAME FUNCTION [ARGS...]: run one check, print ok/FAIL and its output. A check
# that prints a line starting with "KNOWN BUG:" and fails is counted apart.
check() {
	local name=$1
	shift
	NCHECK=$((NCHECK + 1))
	local out="$WORK/check-$NCHECK.out" t0 dt rc=0
	t0=$(tt_now_ms)
	"$@" >"$out" 2>&1 || rc=$?
	dt=$(($(tt_now_ms) - t0))
	if [ "$rc" = 0 ]; then
		PASSED=$((PASSED + 1))
		printf 'ok   %s  [%d.%03ds]\n' "$name" $((dt / 1000)) $((dt % 1000))
	elif grep -q '^KNOWN BUG:' "$out"; then
		KNOWN=$((KNOWN + 1))
		printf 'KNOWN BUG (not counted as a failure) %s  [%d.%03ds]\n' "$name" $((dt / 1000)) $((dt % 1000))
	else
		FAILED=$((FAILED + 1))
		printf 'FAIL %s  [%d.%03ds]\n' "$name" $((dt / 1000)) $((dt % 1000))
	fi
	grep -Ev '^.*: line [0-9]+: +[0-9]+ (Killed|Stopped) +' "$out" | sed 's/^/       /'
}

in_laptop() { ip netns exec "$LAPTOP" "$@"; }

# ms N: N milliseconds as seconds ("1.234 s", "-0.019 s").
ms() {
	local n=$1 sign=""
	if [ "$n" -lt 0 ]; then
		sign=-
		n=$((-n))
	fi
	printf '%s%d.%03d s' "$sign" $((n / 1000)) $((n % 1000))
}

# count_lines FILE REGEX: lines of FILE matching REGEX (grep -E).
count_lines() { grep -cE -- "$2" "$1" 2>/dev/null || true; }

# wait_more FILE REGEX N TIMEOUT_S: wait until FILE has more than N lines matching
# REGEX; 1 on timeout.
wait_more() {
	local file=$1 re=$2 n=$3 deadline=$(($(tt_now_ms) + $4 * 1000))
	while [ "$(count_lines "$file" "$re")" -le "$n" ]; do
		[ "$(tt_now_ms)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

# new_flow_works: one short HTTP request through the tunnel.
new_flow_works() {
	in_laptop curl -sS --max-time 2 -o /dev/null "http://$TT_INET_IP4/" 2>/dev/null
}

# wait_new_flow TIMEOUT_S: try new flows every 100 ms until one works; sets FLOW_MS
# (milliseconds from the call) and FLOW_TRIES.
wait_new_flow() {
	local t0 deadline
	t0=$(tt_now_ms)
	deadline=$((t0 + $1 * 1000))
	FLOW_TRIES=0
	while :; do
		FLOW_TRIES=$((FLOW_TRIES + 1))
		if new_flow_works; then
			FLOW_MS=$(($(tt_now_ms) - t0))
			return 0
		fi
		[ "$(tt_now_ms)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# up_mark: the number of lines in up's log now (for up_events).
up_mark() { wc -l <"$UP_LOG"; }

# up_events MARK: up's session events logged after line MARK (time, message, error).
up_events() {
	tail -n +"$(($1 + 1))" "$UP_LOG" |
		grep -E 'tunnel lost|network changed|tunnel is connected|reconnect failed|peer is going away' |
		awk -F'\t' '{e = $4; sub(/.*"error": "/, "", e); sub(/"}$/, "", e); gsub(/\\"/, "\"", e); printf "  up log %s %s%s\n", substr($1, 12, 12), $3, (e != "" && e != $4 ? " (" (length(e) > 90 ? "..." substr(e, length(e) - 86) : e) ")" : "")}'
}

# status_field FIELD: a numeric field of `tetherd status --json`.
status_field() {
	in_laptop "$TT_TETHERD" status --json --socket "$WORK/journal/control.sock" 2>/dev/null |
		grep -oE "\"$1\":[^,}]*" | head -n1 | cut -d: -f2 | tr -d ' "'
}

# ---- nftables leak counter on LAPTOP's lan0 (tt_leak_* in lib.sh) -------------------

# leak_report LABEL: print the counters; fail when anything leaked.
leak_report() {
	local leak tunnel ll
	leak=$(tt_leak_packets leak)
	tunnel=$(tt_leak_packets tunnel)
	ll=$(tt_leak_packets linklocal)
	echo "$1: outside the tunnel $leak packets; the tunnel's own connection $tunnel; ND/MLD $ll"
	if [ "${leak:-1}" -ne 0 ]; then
		echo "leaked destinations (address . protocol . port):"
		tt_leak_show_sets
		return 1
	fi
}

# ---- processes -------------------------------------------------------------------

UP_LOG=""

# start_up NAME: tetherd up in LAPTOP, waiting for "tunnel is up".
start_up() {
	tt_start_up "$1" "$TT_URI" --config "$CFG"
	UP_LOG="$WORK/$1.log"
	[ -n "$TT_UP_PID" ] || return 1
	tt_wait_log 20 "$UP_LOG" 'tunnel is up' "$TT_UP_PID"
}

need_up() {
	if [ -z "${TT_UP_PID:-}" ] || ! tt_alive "$TT_UP_PID"; then
		echo "not run: tetherd up is not running"
		return 1
	fi
}

# proc_figures PID: "FDS THREADS RSS-KiB" of a process.
proc_figures() {
	local fds threads rss
	fds=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
	threads=$(awk '/^Threads:/{print $2}' "/proc/$1/status" 2>/dev/null)
	rss=$(awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null)
	echo "$fds ${threads:-0} ${rss:-0}"
}

# metric NS PORT NAME: a value from a /metrics endpoint (empty when there is none).
metric() {
	ip netns exec "$1" curl -sS --max-time 3 "http://127.0.0.1:$2/metrics" 2>/dev/null |
		awk -v n="$3" '$1 == n {print $2; exit}'
}

# ---- checks ----------------------------------------------------------------------

# download URL BYTES: through the tunnel, sha256 against the server's; prints the rate.
download() {
	local url=$1 want_size=$2 want stats got code size speed rc=0
	want=$(ip netns exec "$INTERNET" curl -sS --max-time 10 "http://$TT_INET_IP4/big.sha256")
	stats=$(in_laptop curl -sS --max-time 240 -o "$WORK/download" -w '%{http_code} %{size_download} %{speed_download}' "$url") || rc=$?
	got=$(sha256sum "$WORK/download" | awk '{print $1}')
	rm -f "$WORK/download"
	read -r code size speed <<<"$stats"
	if [ "$rc" != 0 ] || [ "$code" != 200 ] || [ "$got" != "$want" ] || [ "$size" != "$want_size" ]; then
		echo "GET $url: curl exit $rc, HTTP $code, $size bytes (want $want_size), sha256 $got (want $want)"
		return 1
	fi
	echo "GET $url: $size bytes at $(awk -v s="$speed" 'BEGIN{printf "%.1f", s*8/1e6}') Mbit/s, sha256 matches"
}

# upload URL FILE: the server's sha256 of what it received must be the file's.
upload() {
	local url=$1 file=$2 want got rc=0
	want=$(sha256sum "$file" | awk '{print $1}')
	got=$(in_laptop curl -sS --max-time 240 -H 'Content-Type: application/octet-stream' \
		--data-binary "@$file" -w '\n%{speed_upload} %{size_upload}' "$url") || rc=$?
	local sum rate
	sum=$(head -n1 <<<"$got")
	rate=$(tail -n1 <<<"$got")
	if [ "$rc" != 0 ] || [ "$sum" != "$want" ]; then
		echo "POST $url: curl exit $rc; the server computed $sum, the file is $want"
		return 1
	fi
	echo "POST $url: ${rate#* } bytes at $(awk -v s="${rate%% *}" 'BEGIN{printf "%.1f", s*8/1e6}') Mbit/s, the server's sha256 matches"
}

# The relay does what it is told: ping RTT between LAPTOP and PHONE without and with
# 10 ms of delay each way (so that a relay that stopped impairing cannot make the
# checks below pass trivially).
check_relay_selftest() {
	local rtt0 rtt1 rc=0
	avg_rtt() { in_laptop ping -n -q -c 5 -i 0.2 -W 2 "$TT_PHONE_LAN_IP4" 2>/dev/null | awk -F/ '/^rtt/ {print $5}'; }
	rtt0=$(avg_rtt)
	tt_impair delay=10ms || return 1
	rtt1=$(avg_rtt)
	tt_impair || rc=1
	echo "ping LAPTOP -> PHONE through MIDDLE (5 each): average RTT ${rtt0:-?} ms unimpaired, ${rtt1:-?} ms with delay=10ms each way"
	awk -v r="${rtt1:-0}" 'BEGIN { exit !(r >= 20 && r < 40) }' || { echo "want 20 to 40 ms with the delay"; rc=1; }
	return "$rc"
}

check_integrity() {
	need_up || return 1
	local rc=0 round
	tt_impair delay=20ms loss=1 reorder=1 || return 1
	for ((round = 1; round <= INTEGRITY_ROUNDS; round++)); do
		download "http://$TT_INET_IP4/big" $((TT_BIG_MIB << 20)) || rc=1
		upload "http://[$TT_INET_IP6]/upload" "$WORK/upload.bin" || rc=1
		if [ "$SOAK" = 1 ]; then
			download "http://[$TT_INET_IP6]/big" $((TT_BIG_MIB << 20)) || rc=1
			upload "http://$TT_INET_IP4/upload" "$WORK/upload.bin" || rc=1
		fi
	done
	echo "relay counters (a: laptop to phone, b: phone to laptop):"
	tt_impair_stats >"$WORK/integrity-stats" || rc=1
	sed -E 's/; params.*//; s/^/  /' "$WORK/integrity-stats"
	# The impairment really happened, both ways.
	if [ "$(grep -cE 'lost [1-9][0-9]*, .* reordered [1-9]' "$WORK/integrity-stats")" != 2 ]; then
		echo "the relay did not both drop and reorder in each direction"
		rc=1
	fi
	tt_impair || rc=1
	return "$rc"
}

# The phone's serve dies (SIGKILL) and a new one starts at once. A download is
# running: it must end with an error within 2 s of the kill (or of the process's end,
# if a loaded machine took long to end it), and a new flow must work within 5 s of
# the new serve listening (how fast a loaded machine starts a process is not tetherd's
# doing; the span from the kill is printed too).
check_peer_kill() {
	need_up || return 1
	local mark="$WORK/oldflow.done" t_kill t_dead t_listen t_new rc=0 umark
	rm -f "$mark"
	# The link is slowed down (not curl: a rate-limited curl sleeps between reads and
	# would see the reset late) so that the download still runs at the kill.
	tt_impair rate=20mbit || return 1
	tt_bg oldflow bash -c "ip netns exec '$LAPTOP' curl -sS --max-time 60 -o /dev/null \
		-w '%{size_download}' 'http://$TT_INET_IP4/big'; echo \"rc=\$? t=\$(date +%s%3N)\" >'$mark'"
	sleep 1.5
	if [ -e "$mark" ]; then
		echo "the download ended before the kill: $(cat "$mark")"
		return 1
	fi
	local old_tpid=$TT_SERVE_TPID old_pid=$TT_SERVE_PID
	umark=$(up_mark)
	local kill_clock
	kill_clock=$(date -u +%T.%3N)
	t_kill=$(tt_now_ms)
	kill -KILL "$old_pid"
	while tt_alive "$old_pid" && [ $(($(tt_now_ms) - t_kill)) -lt 5000 ]; do sleep 0.01; done
	t_dead=$(tt_now_ms)
	echo "SIGKILL of serve at $kill_clock; the process was gone $(ms $((t_dead - t_kill))) later (load average $(cut -d' ' -f1 /proc/loadavg))"
	tt_wait_exit "$old_tpid" 5 || true
	tt_start_serve serve-after-kill --config "$SERVE_CFG" || return 1
	t_listen=$(tt_now_ms)
	echo "the new serve listened $(ms $((t_listen - t_kill))) after the kill"
	if wait_new_flow 20; then
		t_new=$(tt_now_ms)
		echo "a new flow worked $(ms $((t_new - t_listen))) after the new serve listened ($(ms $((t_new - t_kill))) after the kill, $FLOW_TRIES tries)"
		[ $((t_new - t_listen)) -le 5000 ] || { echo "want new flows within 5 s"; rc=1; }
	else
		echo "no new flow worked within 20 s; up's last lines:"
		tail -n 5 "$UP_LOG"
		rc=1
	fi
	if ! tt_wait 10 "the old download to end" test -e "$mark"; then
		echo "the download running at the kill did not end within 10 s"
		rc=1
	else
		local line frc ft
		line=$(cat "$mark")
		frc=${line#rc=}
		frc=${frc%% *}
		ft=${line##*t=}
		echo "the running download ended $(ms $((ft - t_kill))) after the kill ($(ms $((ft - t_dead))) after the test saw the process gone) with curl exit $frc ($(cat "$WORK/oldflow.out") bytes received)"
		if [ "$frc" = 0 ]; then
			echo "it was reported as a clean end of stream: a reset must be an error"
			rc=1
		fi
		if [ $((ft - t_kill)) -gt 2000 ] && [ $((ft - t_dead)) -gt 2000 ]; then
			echo "want the old flow reset within 2 s of the kill (or of the process's end, when it took long to die)"
			rc=1
		fi
	fi
	up_events "$umark"
	tt_impair || rc=1
	return "$rc"
}

# A silent peer: SIGSTOP serve for 15 s. Keepalive must notice within
# keepalive_timeout (plus one keepalive interval of slack), and traffic flow again
# after SIGCONT with nothing done.
check_sigstop() {
	need_up || return 1
	local n0 t0 dt rc=0 mark
	n0=$(count_lines "$UP_LOG" 'tunnel lost')
	mark=$(up_mark)
	t0=$(tt_now_ms)
	kill -STOP "$TT_SERVE_PID"
	echo "SIGSTOP at $(date -u +%T.%3N)"
	if wait_more "$UP_LOG" 'tunnel lost' "$n0" 14; then
		dt=$(($(tt_now_ms) - t0))
		echo "up declared the session dead $(ms "$dt") after SIGSTOP (load average $(cut -d' ' -f1 /proc/loadavg))"
		[ "$dt" -le $(((KEEPALIVE_TIMEOUT_S + KEEPALIVE_SLACK_S) * 1000)) ] || { echo "want within keepalive_timeout ${KEEPALIVE_TIMEOUT_S}s + ${KEEPALIVE_SLACK_S} s"; rc=1; }
	else
		echo "up did not notice the stopped peer within 14 s"
		rc=1
	fi
	while [ $(($(tt_now_ms) - t0)) -lt 15000 ]; do sleep 0.1; done
	kill -CONT "$TT_SERVE_PID"
	echo "SIGCONT at $(date -u +%T.%3N)"
	if wait_new_flow 30; then
		echo "after 15 s stopped and SIGCONT, a new flow worked $(ms "$FLOW_MS") later ($FLOW_TRIES tries)"
	else
		echo "no new flow within 30 s of SIGCONT; up's last lines:"
		tail -n 5 "$UP_LOG"
		rc=1
	fi
	up_events "$mark"
	return "$rc"
}

# The link drops everything for BLACKHOLE_S seconds.
check_blackhole() {
	need_up || return 1
	local n0 t0 dt rc=0 mark
	n0=$(count_lines "$UP_LOG" 'tunnel lost')
	mark=$(up_mark)
	t0=$(tt_now_ms)
	tt_blackhole on || return 1
	echo "blackhole on at $(date -u +%T.%3N)"
	if wait_more "$UP_LOG" 'tunnel lost' "$n0" $((BLACKHOLE_S - 1)); then
		dt=$(($(tt_now_ms) - t0))
		echo "up declared the session dead $(ms "$dt") into the blackhole (load average $(cut -d' ' -f1 /proc/loadavg))"
		[ "$dt" -le $(((KEEPALIVE_TIMEOUT_S + KEEPALIVE_SLACK_S) * 1000)) ] || { echo "want within keepalive_timeout ${KEEPALIVE_TIMEOUT_S}s + ${KEEPALIVE_SLACK_S} s"; rc=1; }
	else
		echo "up did not notice the blackhole within $((BLACKHOLE_S - 1)) s"
		rc=1
	fi
	while [ $(($(tt_now_ms) - t0)) -lt $((BLACKHOLE_S * 1000)) ]; do sleep 0.1; done
	tt_blackhole off || return 1
	echo "blackhole off at $(date -u +%T.%3N)"
	if wait_new_flow 30; then
		echo "after ${BLACKHOLE_S} s of blackhole, a new flow worked $(ms "$FLOW_MS") after the link came back ($FLOW_TRIES tries)"
	else
		echo "no new flow within 30 s of the link's return; up's last lines:"
		tail -n 5 "$UP_LOG"
		rc=1
	fi
	up_events "$mark"
	return "$rc"
}

check_no_leak_during_faults() {
	need_up || return 1
	leak_report "since up started (integrity, peer kill, SIGSTOP, blackhole, flows)"
}

# 1,000 DNS queries (to the tunnel's resolver, the LAN's, the internet's, the
# default), 1,000 IPv4 and 1,000 IPv6 connection attempts (open, refused and
# unreachable destinations): nothing may leave lan0 outside the tunnel.
check_leaks() {
	need_up || return 1
	tt_leak_reset
	local i q="$WORK/dig-batch" answered rc=0 b pids=()
	: >"$q"
	for ((i = 0; i < 1000; i++)); do
		case $((i % 8)) in
		0) echo "internet.test A @10.255.77.2" ;;
		1) echo "internet.test AAAA @fd74:6574:6865:7264::53" ;;
		2) echo "internet.test A" ;; # resolv.conf
		3) echo "internet.test A @$TT_PHONE_LAN_IP4" ;;
		4) echo "internet.test A @$TT_INET_IP4" ;;
		5) echo "internet.test AAAA @$TT_PHONE_LAN_IP6" ;;
		6) echo "internet.test A @$TT_INET_IP6" ;;
		7) echo "n$i.example A @$TT_INET_IP4 +tcp" ;;
		esac
	done >>"$q"
	# 20 dig processes of 50 queries each, at once: the queries to the LAN resolver
	# get no answer and wait out their 1 s timeout.
	split -n l/20 -d "$q" "$q."
	for b in "$q".[0-9][0-9]; do
		in_laptop timeout 120 dig +time=1 +tries=1 +short -f "$b" >"$b.out" 2>/dev/null &
		pids+=("$!")
	done
	for b in "${pids[@]}"; do wait "$b" || true; done
	answered=$(cat "$q".[0-9][0-9].out | grep -cE '^[0-9a-f:.]+$' || true)
	echo "1000 DNS queries (8 kinds: the tunnel's resolvers, resolv.conf, the LAN resolver (v4, v6), the internet's (v4, v6), TCP): $answered answers (625 answerable: the LAN resolver does not answer, the TCP ones are NXDOMAIN)"
	in_laptop "$TT_INTERNETD" -flows-client "$TT_INET_IP4:80,$TT_INET_IP4:81,198.51.100.99:80,203.0.113.1:443" \
		-proto connect -flows 1000 -concurrency 100 -flow-timeout 1s -timeout 120s || rc=1
	in_laptop "$TT_INTERNETD" -flows-client "[$TT_INET_IP6]:80,[$TT_INET_IP6]:81,[2001:db8:100::99]:80,[2001:db8:ffff::1]:443" \
		-proto connect -flows 1000 -concurrency 100 -flow-timeout 1s -timeout 120s || rc=1
	leak_report "over the 3,000 attempts" || rc=1
	[ "$(tt_leak_packets tunnel)" -gt 0 ] || { echo "the tunnel's packets were not counted: the counter setup is wrong"; rc=1; }
	return "$rc"
}

# figures PREFIX: fds, threads, RSS of up and serve, goroutines and heap when they
# serve metrics; sets PREFIX_UP_FDS, PREFIX_UP_GR, PREFIX_UP_HEAP and the SERVE ones.
figures() {
	local p=$1 f gr heap
	read -r f _ _ <<<"$(proc_figures "$TT_UP_PID")"
	printf -v "${p}_UP_FDS" '%s' "$f"
	read -r f _ _ <<<"$(proc_figures "$TT_SERVE_PID")"
	printf -v "${p}_SERVE_FDS" '%s' "$f"
	printf -v "${p}_UP_GR" '%s' ""
	printf -v "${p}_UP_HEAP" '%s' ""
	printf -v "${p}_SERVE_GR" '%s' ""
	printf -v "${p}_SERVE_HEAP" '%s' ""
	if [ "$HAVE_METRICS" = 1 ]; then
		printf -v "${p}_UP_GR" '%s' "$(metric "$LAPTOP" 9101 go_goroutines)"
		printf -v "${p}_UP_HEAP" '%s' "$(metric "$LAPTOP" 9101 go_memstats_heap_inuse_bytes)"
		printf -v "${p}_SERVE_GR" '%s' "$(metric "$PHONE" 9102 go_goroutines)"
		printf -v "${p}_SERVE_HEAP" '%s' "$(metric "$PHONE" 9102 go_memstats_heap_inuse_bytes)"
	fi
	gr="${p}_UP_GR"
	heap="${p}_UP_HEAP"
	echo "  up    (pid $TT_UP_PID): fds threads RSS-KiB $(proc_figures "$TT_UP_PID"); goroutines ${!gr:-?}; heap in use ${!heap:-?}"
	gr="${p}_SERVE_GR"
	heap="${p}_SERVE_HEAP"
	echo "  serve (pid $TT_SERVE_PID): fds threads RSS-KiB $(proc_figures "$TT_SERVE_PID"); goroutines ${!gr:-?}; heap in use ${!heap:-?}"
}

# within10 NAME BEFORE AFTER SLACK: AFTER <= BEFORE + 10 % + SLACK.
within10() {
	local name=$1 before=$2 after=$3 slack=$4
	if [ -z "$before" ] || [ -z "$after" ]; then
		echo "$name: no figure ($before -> $after)"
		return 1
	fi
	after=$(awk -v a="$after" 'BEGIN{printf "%d", a}')
	before=$(awk -v a="$before" 'BEGIN{printf "%d", a}')
	if [ "$after" -gt $((before + before / 10 + slack)) ]; then
		echo "$name: $before -> $after, more than 10 % (+$slack) above the baseline"
		return 1
	fi
	echo "$name: $before -> $after"
}

# wave NAME N: N TCP flows (reply-then-close server) and N UDP flows (echo), v4 and
# v6 in turn, 200 at once; prints the two result lines. Every TCP flow must work; UDP
# is unreliable by nature (each flow sends twice at most), so up to 1 in 1,000 UDP
# flows of the whole run may go unanswered (they are printed; UDP_N and UDP_OK add
# them up for check_flows — per wave of 400, one loss would already be 1 in 400).
UDP_N=0 UDP_OK=0
wave() {
	local rc=0 n ok
	in_laptop "$TT_INTERNETD" -flows-client "$TT_INET_IP4:7001,[$TT_INET_IP6]:7001" -proto tcp \
		-flows "$2" -concurrency 200 -flow-timeout 20s -timeout 300s >"$WORK/flows-tcp-$1.out" 2>&1 || rc=1
	in_laptop "$TT_INTERNETD" -flows-client "$TT_INET_IP4:7,[$TT_INET_IP6]:7" -proto udp \
		-flows "$2" -concurrency 200 -flow-timeout 6s -timeout 300s >"$WORK/flows-udp-$1.out" 2>&1 || true
	echo "wave $1: $(cat "$WORK/flows-tcp-$1.out")"
	echo "wave $1: $(cat "$WORK/flows-udp-$1.out")"
	n=$(grep -oE '[0-9]+ attempted' "$WORK/flows-udp-$1.out" | cut -d' ' -f1)
	ok=$(grep -oE '[0-9]+ ok' "$WORK/flows-udp-$1.out" | cut -d' ' -f1)
	if [ -z "$n" ] || [ -z "$ok" ] || [ "$n" != "$2" ]; then
		echo "  the UDP flows client did not report $2 attempts"
		return 1
	fi
	UDP_N=$((UDP_N + n)) UDP_OK=$((UDP_OK + ok))
	return "$rc"
}

# wait_no_flows TIMEOUT_S: until up's status shows no open flow; sets DRAIN_MS.
wait_no_flows() {
	local t0 tcp udp
	t0=$(tt_now_ms)
	while :; do
		tcp=$(status_field tcp_flows)
		udp=$(status_field udp_flows)
		DRAIN_MS=$(($(tt_now_ms) - t0))
		[ "$tcp" = 0 ] && [ "$udp" = 0 ] && return 0
		if [ "$DRAIN_MS" -ge $(($1 * 1000)) ]; then
			echo "after $(ms "$DRAIN_MS"): still $tcp TCP and $udp UDP flows open in up"
			return 1
		fi
		sleep 0.5
	done
}

check_flows() {
	need_up || return 1
	local rc=0 waves=5 per w t0
	per=$((FLOWS / waves))
	# A warm-up wave first: pools and buffers allocated once belong to the baseline.
	wave warm-up 100 >/dev/null || rc=1
	wait_no_flows 60 || rc=1
	echo "before (after a warm-up wave of 100 + 100 and its flows ended):"
	figures B
	t0=$(tt_now_ms)
	UDP_N=0 UDP_OK=0
	for ((w = 1; w <= waves; w++)); do
		wave "$w" "$per" || rc=1
		echo "  open after wave $w: $(status_field tcp_flows) TCP, $(status_field udp_flows) UDP"
	done
	echo "UDP: $UDP_OK of $UDP_N flows answered"
	if [ $(((UDP_N - UDP_OK) * 1000)) -gt "$UDP_N" ]; then
		echo "  more than 1 in 1,000 UDP flows failed"
		rc=1
	fi
	echo "$FLOWS TCP + $FLOWS UDP flows in $(ms $(($(tt_now_ms) - t0))); since up started: $(status_field tcp_flows_total) TCP and $(status_field udp_flows_total) UDP flows (a UDP socket that reuses the source port of a live association joins it), $(status_field udp_dropped) datagrams dropped"
	# TCP flows end with their connections; UDP associations when the peer's
	# udp_idle_timeout (5s here) ends them, or after up's own 2 min.
	if wait_no_flows "$FLOWS_DRAIN_S"; then
		echo "no flow open in up $(ms "$DRAIN_MS") after the last wave"
	else
		rc=1
	fi
	if [ "$SOAK" = 1 ]; then
		echo "waiting 130 s: the Go runtime forces a GC every 2 min, then the heap is what is live"
		sleep 130
	else
		sleep 2
	fi
	echo "after:"
	figures A
	within10 "up fds" "$B_UP_FDS" "$A_UP_FDS" 2 || rc=1
	within10 "serve fds" "$B_SERVE_FDS" "$A_SERVE_FDS" 2 || rc=1
	if [ "$HAVE_METRICS" = 1 ]; then
		within10 "up goroutines" "$B_UP_GR" "$A_UP_GR" 5 || rc=1
		if [ -n "$B_SERVE_GR" ]; then
			within10 "serve goroutines" "$B_SERVE_GR" "$A_SERVE_GR" 5 || rc=1
		else
			echo "serve goroutines and heap: not measured (this tetherd serve serves no /metrics)"
		fi
		if [ "$SOAK" = 1 ]; then
			within10 "up heap in use" "$B_UP_HEAP" "$A_UP_HEAP" $((2 << 20)) || rc=1
			[ -z "$B_SERVE_HEAP" ] || within10 "serve heap in use" "$B_SERVE_HEAP" "$A_SERVE_HEAP" $((2 << 20)) || rc=1
		else
			echo "heap in use: not asserted here (garbage is collected later; SOAK=1 asserts it after a forced GC)"
		fi
	else
		echo "goroutines and heap: not measured (this tetherd has no metrics endpoint; fds only)"
	fi
	return "$rc"
}

check_sigterm_restores() {
	need_up || return 1
	kill -TERM "$TT_UP_PID"
	if ! tt_wait_exit "$TT_UP_TPID" 10; then
		echo "tetherd up still runs 10 s after SIGTERM"
		return 1
	fi
	echo "up exited with status $TT_EXIT"
	tt_same_as "$WORK/baseline" "$LAPTOP" || return 1
	echo "rules, routes, links, nft tables and resolv.conf identical to the baseline"
}

# SIGKILL of up at a random moment, KILLS times; the restore alternates between
# `tetherd down` and the next up (then SIGTERM).
check_sigkill_loop() {
	local i phase delay restored_down=0 restored_up=0 bad=0 known=0 phases=(setup connected teardown) counts=(0 0 0) out restore_log
	for ((i = 1; i <= KILLS; i++)); do
		phase=$((RANDOM % 3))
		counts[phase]=$((counts[phase] + 1))
		tt_start_up "kill-$i" "$TT_URI" --config "$CFG"
		case $phase in
		0) # during setup: before "tunnel is up"
			delay=$((RANDOM % 400))
			sleep "$(printf '0.%03d' "$delay")"
			;;
		1) # connected
			tt_wait_log 20 "$WORK/kill-$i.log" 'tunnel is up' "$TT_UP_PID" >/dev/null || true
			delay=$((RANDOM % 1000))
			sleep "$(printf '0.%03d' "$delay")"
			;;
		2) # during teardown: SIGTERM, then SIGKILL a moment later
			tt_wait_log 20 "$WORK/kill-$i.log" 'tunnel is up' "$TT_UP_PID" >/dev/null || true
			kill -TERM "$TT_UP_PID" 2>/dev/null || true
			delay=$((RANDOM % 150))
			sleep "$(printf '0.%03d' "$delay")"
			;;
		esac
		kill -KILL "$TT_UP_PID" 2>/dev/null || true
		tt_wait_exit "$TT_UP_TPID" 10 || {
			echo "kill $i: up survived SIGKILL?"
			return 1
		}
		restore_log="$WORK/kill-$i-down.out"
		if ((i % 2)); then
			if ! in_laptop timeout 15 "$TT_TETHERD" down --journal-dir "$WORK/journal" >"$restore_log" 2>&1; then
				out=$(cat "$restore_log")
				echo "kill $i (${phases[phase]}, +${delay} ms): tetherd down failed: $out"
				bad=$((bad + 1))
				continue
			fi
			restored_down=$((restored_down + 1))
		else
			restore_log="$WORK/kill-$i-next.log"
			if ! start_up "kill-$i-next"; then
				echo "kill $i (${phases[phase]}, +${delay} ms): the next up did not come up:"
				tail -n 5 "$UP_LOG"
				tt_stop "$TT_UP_TPID" 10
				bad=$((bad + 1))
				continue
			fi
			kill -TERM "$TT_UP_PID"
			tt_wait_exit "$TT_UP_TPID" 10 || tt_stop "$TT_UP_TPID" 5
			restored_up=$((restored_up + 1))
		fi
		if ! tt_same_as "$WORK/baseline" "$LAPTOP" >"$WORK/kill-$i.diff" 2>&1; then
			echo "kill $i (${phases[phase]}, +${delay} ms): not restored to the baseline:"
			sed 's/^/  /' "$WORK/kill-$i.diff" | head -n 30
			if [ "$(grep -c '^diff ' "$WORK/kill-$i.diff")" = 1 ] && grep -q '^diff .*/resolv.conf ' "$WORK/kill-$i.diff" &&
				grep -q 'resolv.conf: left alone: something else rewrote it' "$restore_log"; then
				# A SIGKILL while up rewrote resolv.conf in place left it cut short;
				# the restore took that for someone else's file and kept it.
				echo "  the restore said: $(grep -o 'resolv.conf: left alone[^"]*' "$restore_log" | head -n1)"
				echo "  (resolv.conf put back to the baseline by the test, so that the next kills are judged on their own)"
				cat "$WORK/baseline/resolv.conf" >"/etc/netns/$LAPTOP/resolv.conf"
				known=$((known + 1))
			else
				bad=$((bad + 1))
			fi
		fi
	done
	echo "$KILLS SIGKILLs (seed $FAULTS_SEED): ${counts[0]} during setup, ${counts[1]} connected, ${counts[2]} during teardown;" \
		"restored by tetherd down $restored_down, by the next up $restored_up; $((KILLS - bad - known)) of $KILLS byte-identical to the baseline"
	# A cut-short resolv.conf kept as someone else's file (fixed: writeInPlace
	# writes before it truncates, and restore recognizes an interrupted rewrite)
	# is a failure like any other.
	[ "$bad" = 0 ] && [ "$known" = 0 ]
}

# The state a SIGKILL leaves when it hits up's in-place rewrite of resolv.conf
# between the truncation and the write (what the random kills above hit now and
# then), made on purpose: up SIGKILLed while connected, resolv.conf emptied. tetherd
# down must still put the original back.
check_resolvconf_cut_short() {
	local out rc=0
	if ! start_up cut-short; then
		echo "up did not come up"
		tt_stop "$TT_UP_TPID" 10
		return 1
	fi
	kill -KILL "$TT_UP_PID"
	tt_wait_exit "$TT_UP_TPID" 10 || return 1
	: >"/etc/netns/$LAPTOP/resolv.conf"
	out=$(in_laptop timeout 15 "$TT_TETHERD" down --journal-dir "$WORK/journal" 2>&1) || rc=$?
	echo "tetherd down (exit $rc) said:"
	grep -i 'resolv' <<<"$out" | sed 's/^/  /'
	if tt_same_as "$WORK/baseline" "$LAPTOP" >"$WORK/cut-short.diff" 2>&1; then
		echo "the original resolv.conf is back"
		return 0
	fi
	sed 's/^/  /' "$WORK/cut-short.diff" | head -n 20
	cat "$WORK/baseline/resolv.conf" >"/etc/netns/$LAPTOP/resolv.conf"
	echo "(resolv.conf put back to the baseline by the test)"
	return 1
}

# laptop_lan_fix: what a network manager does after the link comes back: the static
# addresses and default routes (IPv6 addresses go with the link, IPv4 routes too).
laptop_lan_fix() {
	local a4=${1:-$TT_LAPTOP_IP4}
	ip -n "$LAPTOP" addr add "$a4/24" dev lan0 2>/dev/null || true
	ip -n "$LAPTOP" addr add "$TT_LAPTOP_IP6/64" dev lan0 nodad 2>/dev/null || true
	ip -n "$LAPTOP" -4 route replace default via "$TT_PHONE_LAN_IP4" dev lan0
	ip -n "$LAPTOP" -6 route replace default via "$TT_PHONE_LAN_IP6" dev lan0 2>/dev/null || true
}

# lan0 down for 10 s (the client backs off meanwhile), then up: it must reconnect
# at once on the netlink event, not when its backoff timer fires.
check_link_flap() {
	need_up || return 1
	local n0 t_up dt backoff rc=0
	n0=$(count_lines "$UP_LOG" 'tunnel is connected')
	ip -n "$LAPTOP" link set lan0 down
	sleep 10
	backoff=$(grep -E 'reconnect failed' "$UP_LOG" | tail -n1 | grep -oE 'retry_in[^,}]*' | head -n1 || true)
	ip -n "$LAPTOP" link set lan0 up
	laptop_lan_fix
	t_up=$(tt_now_ms)
	if wait_more "$UP_LOG" 'tunnel is connected' "$n0" 20; then
		dt=$(($(tt_now_ms) - t_up))
		echo "lan0 down 10 s, then up: reconnected $(ms "$dt") after the link came back (pending backoff then: ${backoff:-none logged})"
		grep -cE 'reconnect failed' "$UP_LOG" | sed 's/^/reconnect attempts failed so far: /'
		[ "$dt" -le 1500 ] || { echo "want the reconnect within 1.5 s of the link's return, not after the backoff"; rc=1; }
	else
		echo "no 'tunnel is connected' within 20 s of the link's return; up's last lines:"
		tail -n 8 "$UP_LOG"
		rc=1
	fi
	wait_new_flow 10 || { echo "no new flow after the flap"; rc=1; }
	return "$rc"
}

# The laptop's address changes (10.200.1.1 -> 10.200.1.3, as on a new DHCP lease)
# while the tunnel is up: its connection is dead; the address event makes up probe
# it, and when no answer comes within a short grace, dial a new session from the new
# address while the probe still waits. Then back.
check_address_change() {
	need_up || return 1
	local t0 dt rc=0 from to mark
	ip -n "$MIDDLE" neigh add proxy 10.200.1.3 dev lan-p
	for pair in "$TT_LAPTOP_IP4 10.200.1.3" "10.200.1.3 $TT_LAPTOP_IP4"; do
		read -r from to <<<"$pair"
		mark=$(up_mark)
		t0=$(tt_now_ms)
		ip -n "$LAPTOP" addr del "$from/24" dev lan0
		laptop_lan_fix "$to"
		if wait_more "$UP_LOG" 'tunnel is connected' "$(count_lines "$UP_LOG" 'tunnel is connected')" 20; then
			dt=$(($(tt_now_ms) - t0))
			echo "address $from -> $to: reconnected $(ms "$dt") after the change"
			up_events "$mark"
			if [ "$dt" -gt 2500 ]; then
				echo "want within 2.5 s (a grace of at most 1 s for the old session, then a dial)"
				rc=1
			fi
		else
			echo "address $from -> $to: no 'tunnel is connected' within 20 s; up's last lines:"
			tail -n 8 "$UP_LOG"
			rc=1
		fi
		wait_new_flow 10 || { echo "no new flow from $to"; rc=1; }
	done
	return "$rc"
}

check_no_leak_during_flaps() {
	need_up || return 1
	leak_report "during the link flap and the address changes"
}

check_cleanup() {
	local names=("$LAPTOP" "$MIDDLE" "$PHONE" "$INTERNET") rc=0 ns
	local keep=${TT_KEEP:-0}
	TT_KEEP=1
	tt_cleanup 2>/dev/null
	TT_KEEP=$keep
	TT_CLEANED=0
	TT_PIDS=()
	TT_NAMESPACES=()
	for ns in "${names[@]}"; do
		if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
			echo "namespace $ns still exists"
			rc=1
		fi
		if [ -e "/etc/netns/$ns" ]; then
			echo "/etc/netns/$ns still exists"
			rc=1
		fi
	done
	tt_root_unchanged || { echo "the ROOT namespace changed"; rc=1; }
	[ "$rc" = 0 ] && echo "namespaces gone; root rules, routes and /etc/resolv.conf unchanged"
	return "$rc"
}

# ---- main ------------------------------------------------------------------------

echo "# tetherd: $("$TT_TETHERD" version 2>&1 | head -n1); SOAK=$SOAK; seed $FAULTS_SEED; work dir $WORK"
tt_topology_up_impaired
echo "# namespaces $LAPTOP $MIDDLE $PHONE $INTERNET"
tt_start_internetd

HAVE_METRICS=0
if grep -qa 'yaml:"metrics"' "$TT_TETHERD"; then
	HAVE_METRICS=1
fi
LIMITS="limits:
  keepalive: 1s
  keepalive_timeout: ${KEEPALIVE_TIMEOUT_S}s"
SERVE_CFG="$WORK/serve.yaml"
{
	printf 'serve:\n  udp_idle_timeout: 5s\n%s\n' "$LIMITS"
	[ "$HAVE_METRICS" = 1 ] && printf 'metrics:\n  listen: 127.0.0.1:9102\n'
} >"$SERVE_CFG"
chmod 0600 "$SERVE_CFG"
command -v setpriv >/dev/null 2>&1 && chown 65534:65534 "$SERVE_CFG"
tt_start_serve serve --config "$SERVE_CFG" || tt_die "tetherd serve did not start"

CFG="$WORK/up.yaml"
if [ "$HAVE_METRICS" = 1 ]; then
	tt_write_up_config "$CFG" "$LIMITS
metrics:
  listen: 127.0.0.1:9101"
else
	tt_write_up_config "$CFG" "$LIMITS"
fi
head -c $((16 << 20)) /dev/urandom >"$WORK/upload.bin"
FLOWS_DRAIN_S=$([ "$SOAK" = 1 ] && echo 180 || echo 150)

# Before up: pings to the phone's own address do not go into the tunnel, and the leak
# counter would count them.
check "relay self-test: ping RTT through MIDDLE grows by 20 ms with delay=10ms each way" check_relay_selftest
tt_leak_setup
tt_snapshot "$LAPTOP" "$WORK/baseline"
tt_leak_reset

if start_up up1; then
	echo "# tetherd up is up (pid $TT_UP_PID); keepalive 1s, keepalive_timeout ${KEEPALIVE_TIMEOUT_S}s on both sides; metrics: $([ "$HAVE_METRICS" = 1 ] && echo yes || echo no)"
else
	echo "FAIL tetherd up did not come up:"
	tail -n 20 "$UP_LOG" | sed 's/^/       /'
	FAILED=$((FAILED + 1))
fi

check "integrity: 20 ms each way, 1 % loss, 1 % reorder: ${TT_BIG_MIB} MiB down (v4), 16 MiB up (v6), sha256 exact" check_integrity
check "peer SIGKILL + new serve: old flow reset within 2 s (an error), new flows within 5 s of the new serve" check_peer_kill
check "SIGSTOP serve 15 s: keepalive notices within ${KEEPALIVE_TIMEOUT_S} s (+${KEEPALIVE_SLACK_S}), flows again after SIGCONT" check_sigstop
check "blackhole ${BLACKHOLE_S} s: keepalive notices within ${KEEPALIVE_TIMEOUT_S} s (+${KEEPALIVE_SLACK_S}), flows again after the link returns" check_blackhole
check "flows: $FLOWS TCP + $FLOWS UDP in 5 waves; none left open; fds (goroutines, heap) within 10 %" check_flows
check "no packet left lan0 outside the tunnel during all of the above" check_no_leak_during_faults
check "leaks: 1,000 DNS queries, 1,000 IPv4 and 1,000 IPv6 connection attempts, nothing outside the tunnel" check_leaks
check "SIGTERM: up exits, identical to the baseline" check_sigterm_restores
check "SIGKILL of up at random moments, $KILLS times: restored byte-identical each time" check_sigkill_loop
check "resolv.conf cut short by a SIGKILL mid-rewrite (made on purpose): tetherd down restores the original" check_resolvconf_cut_short
if start_up up-flap; then
	tt_leak_reset
	check "link flap: lan0 down 10 s, up: reconnected at once on the netlink event" check_link_flap
	check "address change: reconnected from the new address, and back" check_address_change
	check "no packet left lan0 outside the tunnel during the flap and address changes" check_no_leak_during_flaps
	kill -TERM "$TT_UP_PID"
	tt_wait_exit "$TT_UP_TPID" 10 || tt_stop "$TT_UP_TPID" 5
else
	echo "FAIL tetherd up (for the link flap) did not come up"
	FAILED=$((FAILED + 1))
fi
tt_impair_stop
check "cleanup: namespaces gone, root namespace untouched" check_cleanup

echo "$PASSED passed, $FAILED failed, $KNOWN known bugs"
[ "$FAILED" -eq 0 ]
