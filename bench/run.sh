#!/usr/bin/env bash
# The tunnel benchmark: tetherd against the direct, kernel-forwarded path, in the
# three network namespaces of test/e2e/lib.sh (LAPTOP, PHONE, INTERNET).
#
#   DIRECT: LAPTOP -> PHONE (ip_forward=1) -> INTERNET 198.51.100.20, reached
#           through a rule "to 198.51.100.20 lookup main" at priority 100 in
#           LAPTOP, ahead of tetherd's rules.
#   TUNNEL: LAPTOP -> tether0 -> gVisor -> WebSocket -> tetherd serve in PHONE
#           -> INTERNET 198.51.100.10 (same host, another address).
#
# Both paths are measured in the same run, interleaved (direct, tunnel, direct,
# tunnel, ...), BENCH_REPS times; the table has medians and the ratio
# tunnel/direct. Measures (BENCH_ONLY selects, comma-separated):
#   tcp    iperf3 TCP, 1 stream, up (LAPTOP sends) and down (-R)
#   tcp8   iperf3 TCP, 8 streams, up
#   udp    iperf3 UDP, 1400-byte datagrams, at BENCH_UDP_LOW (200M) and
#          BENCH_UDP_RATE (1G) offered: rate received and loss
#   udpdown  the same, down (-R: INTERNET sends, LAPTOP receives)
#   conns  bench/loadgen conns: 50 concurrent short connections (connect, 32 B
#          each way, close): connections/s, p50/p99 of connect+reply
#   rr     bench/loadgen rr: 64-byte ping-pong on one connection, idle and while
#          an iperf3 download runs on another connection: p50/p99
#   busy   the idle ping-pong while BENCH_HOGS (2) CPU hogs run (busy loops in
#          LAPTOP, bounded by timeout, killed by PID): a laptop busy with other
#          work, where a thread that a packet wakes waits for a core
#   floor  the ping-pong through two plain TCP relays instead of the tunnel
#          (bench/loadgen relay, one thread each, in LAPTOP and PHONE): the floor
#          of any tunnel with one user-space hop on each side, on this machine;
#          idle, and while an iperf3 download runs through the tunnel
#   cpu    utime+stime of tetherd up and tetherd serve (/proc/PID/stat) while
#          iperf3 moves a fixed 100 Mbit/s, then 1 Gbit/s (TCP, up and down), in %
#          of one core; first, over 10 s of an idle tunnel (20 s after the last
#          traffic), their CPU and their wake-ups per second (context switches of
#          all their threads: what keeps a phone's or a laptop's CPU out of its
#          deep sleep states)
#   rss    VmRSS of tetherd up and serve: idle, holding 1,000 and 10,000 idle
#          TCP connections (bench/loadgen hold), and 10 s after they closed
# for each transport in BENCH_MODES: ws (serve --insecure-plaintext) and tls.
#
# Run as root (`make bench` runs it with BENCH_DOC=docs/performance.md):
#   sudo bench/run.sh                         # everything (about 15 minutes)
#   sudo BENCH_QUICK=1 bench/run.sh           # 1 repetition, 2 s runs, ws only
#   sudo BENCH_ONLY=tcp,rr BENCH_MODES=ws bench/run.sh
# Environment:
#   BENCH_REPS (3)  BENCH_T (5, seconds per run)  BENCH_MODES ("ws tls")
#   BENCH_ONLY (all)  BENCH_MTU (tun.mtu of tetherd up; empty: its default)
#   BENCH_UDP_LOW (200M)  BENCH_UDP_RATE (1G)  BENCH_HOLD ("1000 10000")
#   BENCH_HOGS (2, CPU hogs of the busy measure)
#   BENCH_IMPAIR    KEY=VALUE settings of the impairment relay (test/impair, see
#                   tt_impair in test/e2e/lib.sh), e.g. "delay=10ms loss=0.5":
#                   the laptop<->phone link of both paths then crosses a MIDDLE
#                   namespace that delays (each way) and drops
#   BENCH_SYSCTL    KEY=VALUE sysctls for LAPTOP and PHONE, for experiments (e.g.
#                   net.ipv4.tcp_notsent_lowat=131072)
#   BENCH_DOC       a file whose section between the markers
#                   <!-- bench:begin --> and <!-- bench:end --> is replaced
#                   with the table
#   BENCH_OUT       directory for results.txt, table.md and raw/ (every iperf3
#                   and loadgen JSON of every repetition, -rN in the name; the
#                   tetherd logs) (default: a new
#                   /tmp/tetherd-bench.XXXXXX, printed at the end)
#   BENCH_SHELL=N   set up the namespaces and the tunnel (first of BENCH_MODES),
#                   print how to reach them, keep them N seconds, then clean up:
#                   for measuring or profiling by hand
#   BENCH_PERF=DIR  also record `perf` profiles of tetherd up and serve during a
#                   TCP upload and a download through the tunnel (perf.data and
#                   the top of `perf report` in DIR)
#   BENCH_PPROF=1   serve metrics and Go's profiles from tetherd up (127.0.0.1:9470
#                   in LAPTOP; metrics.pprof) and keep, at every step of the rss
#                   measure, its heap profile and /metrics in raw/ (rss-*.heap,
#                   rss-*.metrics: `go tool pprof -sample_index=inuse_space FILE`)
#   TETHERD, TT_KEEP: as in test/e2e/lib.sh.
# Safety: as test/e2e/lib.sh. Nothing in the root namespace; every process by PID;
# cleanup on exit.
set -euo pipefail
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# A full run takes longer than lib.sh's default lifetime of a background process.
TT_MAX_LIFETIME=${TT_MAX_LIFETIME:-3600}
# shellcheck source=test/e2e/lib.sh
source "$BENCH_DIR/../test/e2e/lib.sh"

# The command line of this run, for the table: the settings given, not the defaults.
COMMAND="sudo"
for v in BENCH_QUICK BENCH_REPS BENCH_T BENCH_MODES BENCH_ONLY BENCH_MTU BENCH_UDP_RATE BENCH_UDP_LOW BENCH_HOLD BENCH_HOGS BENCH_IMPAIR BENCH_SYSCTL TETHERD; do
	if [ -n "${!v:-}" ]; then COMMAND+=" $v='${!v}'"; fi
done

BENCH_REPS=${BENCH_REPS:-3}
BENCH_T=${BENCH_T:-5}
BENCH_MODES=${BENCH_MODES:-ws tls}
BENCH_ONLY=${BENCH_ONLY:-all}
BENCH_MTU=${BENCH_MTU:-}
BENCH_UDP_RATE=${BENCH_UDP_RATE:-1G}
BENCH_UDP_LOW=${BENCH_UDP_LOW:-200M}
BENCH_HOLD=${BENCH_HOLD:-1000 10000}
BENCH_DOC=${BENCH_DOC:-}
BENCH_PPROF_ADDR=127.0.0.1:9470
BENCH_IMPAIR=${BENCH_IMPAIR:-}
BENCH_SYSCTL=${BENCH_SYSCTL:-}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	BENCH_REPS=1
	BENCH_T=2
	BENCH_MODES=ws
	BENCH_HOLD=1000
fi
# The idle ping-pongs run at most 3 s: a p50 settles long before.
RR_T=$((BENCH_T > 3 ? 3 : BENCH_T))

DIRECT_IP4=198.51.100.20
LOAD_PORT=7100
RELAY_PORT=7101

tt_require_root
tt_require_cmds ip iperf3 timeout pgrep ss ping od go awk sort
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

want() { [ "$BENCH_ONLY" = all ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }

if [ "${BENCH_DOC:-}" = docs/performance.md ]; then
	COMMAND+=" make bench"
else
	COMMAND+=" bench/run.sh"
fi

tt_init
OUT=${BENCH_OUT:-$(mktemp -d /tmp/tetherd-bench.XXXXXX)}
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
tt_build
(cd "$TT_REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/loadgen" ./bench/loadgen) ||
	tt_die "go build ./bench/loadgen failed"
LOADGEN="$WORK/bin/loadgen"

# record MODE TEST PATH VALUE: one measurement.
record() {
	printf '%s %s %s %s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
	printf '  %-4s %-22s %-6s %s\n' "$1" "$2" "$3" "$4" >&2
}

load_avg() { awk '{print $1, $2, $3}' /proc/loadavg; }

# ---- topology ---------------------------------------------------------------------

bench_topology() {
	if [ -n "$BENCH_IMPAIR" ]; then
		# LAPTOP <-> MIDDLE (test/impair) <-> PHONE: both paths cross the relay.
		tt_topology_up_impaired
		# shellcheck disable=SC2086 # KEY=VALUE words
		tt_impair $BENCH_IMPAIR || tt_die "tt_impair $BENCH_IMPAIR failed"
	else
		tt_topology_up
	fi
	# The direct path: a second address of the internet host, routed by the main
	# table in LAPTOP ahead of tetherd's rules; the phone forwards.
	ip -n "$INTERNET" addr add "$DIRECT_IP4/24" dev wan0
	# Replies to the LAN leave from that address, or UDP replies (iperf3's) would
	# come from the wrong one.
	ip -n "$INTERNET" -4 route replace 10.200.1.0/24 via "$TT_PHONE_WAN_IP4" src "$DIRECT_IP4"
	ip -n "$LAPTOP" -4 rule add to "$DIRECT_IP4/32" lookup main pref 100
	tt_ns_sysctl "$PHONE" net.ipv4.ip_forward=1
	local ns
	if [ -n "$BENCH_SYSCTL" ]; then
		for ns in "$LAPTOP" "$PHONE"; do
			# shellcheck disable=SC2086 # KEY=VALUE words
			tt_ns_sysctl "$ns" $BENCH_SYSCTL
		done
	fi
	tt_start_iperf3
	tt_bg loadgen-server ip netns exec "$INTERNET" "$LOADGEN" server -listen "0.0.0.0:$LOAD_PORT" -max-time "${TT_MAX_LIFETIME}s"
	tt_wait 10 "loadgen server" tt_listening "$INTERNET" "$LOAD_PORT" || tt_die "loadgen server did not start"
	if want floor; then
		# Two plain TCP relays for the floor measure: LAPTOP 127.0.0.1 -> PHONE -> the
		# echo server's direct address, one thread each (as the daemons when idle).
		tt_bg relay-phone ip netns exec "$PHONE" env GOMAXPROCS=1 "$LOADGEN" relay \
			-listen "$TT_PHONE_LAN_IP4:$RELAY_PORT" -to "$DIRECT_IP4:$LOAD_PORT" -max-time "${TT_MAX_LIFETIME}s"
		tt_bg relay-laptop ip netns exec "$LAPTOP" env GOMAXPROCS=1 "$LOADGEN" relay \
			-listen "127.0.0.1:$RELAY_PORT" -to "$TT_PHONE_LAN_IP4:$RELAY_PORT" -max-time "${TT_MAX_LIFETIME}s"
		tt_wait 10 "relays" tt_listening "$LAPTOP" "$RELAY_PORT" || tt_die "loadgen relay did not start"
	fi
	tt_wait 10 "direct path" ip netns exec "$LAPTOP" ping -c1 -W1 -q "$DIRECT_IP4" ||
		tt_die "LAPTOP cannot reach $DIRECT_IP4 directly"
}

# ---- the tunnel -------------------------------------------------------------------

SERVE_PID="" UP_PID="" NSTART=0

# tunnel_start MODE: tetherd serve (ws: --insecure-plaintext) in PHONE and tetherd
# up in LAPTOP; sets SERVE_PID and UP_PID.
tunnel_start() {
	local mode=$1
	local state="$WORK/phone-state-$mode" flags=() as=() uri cfg
	NSTART=$((NSTART + 1))
	mkdir -p "$state"
	chmod 0700 "$state"
	[ "$mode" = ws ] && flags=(--insecure-plaintext)
	if command -v setpriv >/dev/null 2>&1; then
		chown 65534:65534 "$state"
		as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	fi
	local name="serve-$NSTART"
	tt_bg "$name" ip netns exec "$PHONE" "${as[@]}" env HOME="$state" XDG_STATE_HOME="$state" \
		"$TT_TETHERD" serve --listen "$TT_PHONE_LAN_IP4:$TT_SERVE_PORT" --state-dir "$state" "${flags[@]}"
	SERVE_PID=$(tt_child_of "$TT_LAST_PID" 5) || tt_die "tetherd serve did not start"
	tt_wait_log 20 "$WORK/$name.out" '^(tether|ws)://' "$TT_LAST_PID" || {
		cat "$WORK/$name.out" "$WORK/$name.log" >&2
		tt_die "tetherd serve printed no URI"
	}
	uri=$(grep -m1 -E '^(tether|ws)://' "$WORK/$name.out")
	tt_wait 10 "tetherd serve listening" tt_listening "$PHONE" "$TT_SERVE_PORT" || tt_die "serve not listening"

	cfg="$WORK/up-$NSTART.yaml"
	mkdir -p "$WORK/journal"
	(
		umask 077
		cat >"$cfg" <<EOF
tun:
  name: tether0
  ipv4: 10.255.77.1/30
  ipv6: fd74:6574:6865:7264::1/64
${BENCH_MTU:+  mtu: $BENCH_MTU}
routes:
  lan_bypass: true
dns:
  mode: resolvconf
  servers: [10.255.77.2]
journal_dir: $WORK/journal
log:
  level: info
  format: console
${BENCH_PPROF:+metrics: {listen: "$BENCH_PPROF_ADDR", pprof: true\}}
EOF
	)
	tt_start_up "up-$NSTART" "$uri" --config "$cfg"
	UP_PID=$TT_UP_PID
	[ -n "$UP_PID" ] || tt_die "tetherd up did not start"
	tt_wait_log 20 "$WORK/up-$NSTART.log" 'tunnel is up' "$UP_PID" || {
		tail -n 30 "$WORK/up-$NSTART.log" >&2
		tt_die "tetherd up: no 'tunnel is up'"
	}
	tt_wait 10 "tunnel carries traffic" ip netns exec "$LAPTOP" "$LOADGEN" rr -addr "$TT_INET_IP4:$LOAD_PORT" -n 1 -t 2s ||
		tt_die "no ping-pong through the tunnel"
}

tunnel_stop() {
	[ -n "$UP_PID" ] && tt_stop "$UP_PID" 10
	[ -n "$SERVE_PID" ] && tt_stop "$SERVE_PID" 10
	UP_PID="" SERVE_PID=""
}

# ---- measures ---------------------------------------------------------------------

# host PATH: the internet host's address for the path.
host() { if [ "$1" = direct ]; then echo "$DIRECT_IP4"; else echo "$TT_INET_IP4"; fi; }
# load_addr PATH: the echo server through PATH (direct, tunnel, or relay: the floor's
# two plain relays).
load_addr() { if [ "$1" = relay ]; then echo "127.0.0.1:$RELAY_PORT"; else echo "$(host "$1"):$LOAD_PORT"; fi; }

in_laptop() { ip netns exec "$LAPTOP" "$@"; }

# rep_tag: "-rN" inside repetition N of the main loop (every repetition's output is
# kept in raw/), nothing outside it.
rep_tag() { if [ -n "${rep:-}" ]; then echo "-r$rep"; fi; }

# iperf MODE PATH NAME ARGS...: one iperf3 client run; prints the JSON file name.
iperf() {
	local mode=$1 path=$2 name=$3 f
	shift 3
	f="$WORK/iperf-$mode-$path-$name$(rep_tag).json"
	timeout -k 5 $((BENCH_T + 30)) ip netns exec "$LAPTOP" \
		iperf3 -c "$(host "$path")" -p "$TT_IPERF_PORT" -t "$BENCH_T" -J "$@" >"$f" 2>&1 || true
	echo "$f"
}

get() { "$LOADGEN" get "$2" <"$1" 2>/dev/null || echo NA; }
gbps() { awk -v b="$1" 'BEGIN { if (b == "NA") print "NA"; else printf "%.3f", b / 1e9 }'; }

m_tcp() {
	local mode=$1 path=$2 f
	f=$(iperf "$mode" "$path" tcp-up)
	record "$mode" tcp1_up_gbps "$path" "$(gbps "$(get "$f" end.sum_received.bits_per_second)")"
	f=$(iperf "$mode" "$path" tcp-down -R)
	record "$mode" tcp1_down_gbps "$path" "$(gbps "$(get "$f" end.sum_received.bits_per_second)")"
}

m_tcp8() {
	local mode=$1 path=$2 f
	f=$(iperf "$mode" "$path" tcp8 -P 8)
	record "$mode" tcp8_up_gbps "$path" "$(gbps "$(get "$f" end.sum_received.bits_per_second)")"
}

m_udp() { udp_rates "$1" "$2" udp; }
m_udpdown() { udp_rates "$1" "$2" udp_down -R; }

# udp_rates MODE PATH KEY [ARGS...]: iperf3 UDP at both offered rates, with ARGS;
# records KEY_{low,high}_{rx_mbps,loss_pct}.
udp_rates() {
	local mode=$1 path=$2 key=$3 f pk lost rate tag
	shift 3
	for tag in low high; do
		rate=$BENCH_UDP_RATE
		[ "$tag" = low ] && rate=$BENCH_UDP_LOW
		f=$(iperf "$mode" "$path" "$key-$tag" -u -b "$rate" -l 1400 "$@")
		pk=$(get "$f" end.sum.packets)
		lost=$(get "$f" end.sum.lost_packets)
		record "$mode" "${key}_${tag}_rx_mbps" "$path" "$(awk -v p="$pk" -v l="$lost" -v t="$BENCH_T" 'BEGIN { if (p == "NA" || l == "NA") print "NA"; else printf "%.0f", (p - l) * 1400 * 8 / t / 1e6 }')"
		record "$mode" "${key}_${tag}_loss_pct" "$path" "$(get "$f" end.sum.lost_percent | awk '{ if ($1 == "NA") print; else printf "%.2f", $1 }')"
	done
}

# loadgen_run MODE PATH NAME ARGS...: prints the JSON file.
loadgen_run() {
	local mode=$1 path=$2 name=$3 f
	shift 3
	f="$WORK/loadgen-$mode-$path-$name$(rep_tag).json"
	timeout -k 5 $((BENCH_T + 30)) ip netns exec "$LAPTOP" \
		"$LOADGEN" "$@" -addr "$(load_addr "$path")" >"$f" 2>"$f.err" || true
	echo "$f"
}

us() { awk '{ if ($1 == "NA") print; else printf "%.0f", $1 }'; }

m_conns() {
	local mode=$1 path=$2 f
	f=$(loadgen_run "$mode" "$path" conns conns -c 50 -t "${BENCH_T}s")
	record "$mode" conns_per_s "$path" "$(get "$f" per_sec | us)"
	record "$mode" conns_p50_us "$path" "$(get "$f" p50_us | us)"
	record "$mode" conns_p99_us "$path" "$(get "$f" p99_us | us)"
	record "$mode" conns_errors "$path" "$(get "$f" errors)"
}

# pingpong MODE PATH NAME SECONDS KEY: a 64-byte ping-pong through PATH for SECONDS;
# records its p50 and p99 as KEY_p50_us and KEY_p99_us.
pingpong() {
	local f
	f=$(loadgen_run "$1" "$2" "$3" rr -size 64 -t "${4}s")
	record "$1" "${5}_p50_us" "$2" "$(get "$f" p50_us | us)"
	record "$1" "${5}_p99_us" "$2" "$(get "$f" p99_us | us)"
}

# pingpong_loaded MODE PATH DOWNLOAD NAME KEY: pingpong for BENCH_T through PATH
# while an iperf3 download runs through the path DOWNLOAD (it starts 1.5 s ahead).
pingpong_loaded() {
	local bg
	timeout -k 5 $((BENCH_T + 30)) ip netns exec "$LAPTOP" \
		iperf3 -c "$(host "$3")" -p "$TT_IPERF_PORT" -t $((BENCH_T + 2)) -R >/dev/null 2>&1 &
	bg=$!
	sleep 1.5
	pingpong "$1" "$2" "$4" "$BENCH_T" "$5"
	wait "$bg" 2>/dev/null || true
}

# m_rr MODE PATH: the ping-pong idle, and while a download runs on another
# connection of the same path.
m_rr() {
	pingpong "$1" "$2" rr-idle "$RR_T" rr_idle
	pingpong_loaded "$1" "$2" "$2" rr-load rr_load
}

# m_busy MODE PATH: the idle ping-pong beside BENCH_HOGS busy loops.
m_busy() {
	local pids=() i
	for ((i = 0; i < ${BENCH_HOGS:-2}; i++)); do
		timeout -k 1 $((RR_T + 3)) ip netns exec "$LAPTOP" sh -c 'while :; do :; done' &
		pids+=($!)
	done
	sleep 0.5
	pingpong "$1" "$2" rr-busy "$RR_T" rr_busy
	kill "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
}

# m_floor MODE PATH: once per repetition (with the tunnel), 64-byte ping-pong through
# the two plain relays started with the topology: the floor of any design with one
# user-space hop on each side of the link, on this machine, in this run — idle, and
# while an iperf3 download runs through the tunnel (as rr's "under a download": the
# relays then only share the CPU with it, they do not carry it).
m_floor() {
	[ "$2" = tunnel ] || return 0
	pingpong "$1" relay rr-idle "$RR_T" floor_rr
	pingpong_loaded "$1" relay tunnel rr-load floor_rr_load
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# switches PID: context switches so far of all the process's threads.
switches() { cat "/proc/$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'; }
# per_ms FORMAT A B MS SCALE: (B - A) * SCALE / MS, printed with FORMAT.
per_ms() { awk -v f="$1" -v a="$2" -v b="$3" -v ms="$4" -v k="$5" 'BEGIN { printf f, (b - a) * k / ms }'; }
# snap_heap NAME: with BENCH_PPROF, tetherd up's heap profile and metrics (raw/).
snap_heap() {
	[ -n "${BENCH_PPROF:-}" ] || return 0
	ip netns exec "$LAPTOP" curl -sf -m 10 -o "$WORK/rss-$1.heap" "http://$BENCH_PPROF_ADDR/debug/pprof/heap" || true
	ip netns exec "$LAPTOP" curl -sf -m 10 -o "$WORK/rss-$1.metrics" "http://$BENCH_PPROF_ADDR/metrics" || true
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo NA; }
mib() { awk -v k="$1" 'BEGIN { if (k == "NA") print "NA"; else printf "%.1f", k / 1024 }'; }

# m_cpu MODE: CPU and wake-ups of tetherd up and serve while the tunnel is idle; their
# CPU at a fixed 100 Mbit/s and 1 Gbit/s, up and down.
m_cpu() {
	local mode=$1 dir mbit u0 s0 u1 s1 t0 t1 hz w0 v0 pct
	hz=$(getconf CLK_TCK)
	pct=$(awk -v hz="$hz" 'BEGIN { print 100000 / hz }') # ticks per ms -> % of a core
	# Idle means settled: after a load the governor may keep a second thread for up
	# to 16 s (its back-off), and the paced housekeeping slows down over 5 s.
	sleep 20
	u0=$(ticks "$UP_PID") s0=$(ticks "$SERVE_PID") w0=$(switches "$UP_PID") v0=$(switches "$SERVE_PID") t0=$(tt_now_ms)
	sleep 10
	u1=$(ticks "$UP_PID") s1=$(ticks "$SERVE_PID") t1=$(tt_now_ms)
	record "$mode" idle_wakeups_client tunnel "$(per_ms %.1f "$w0" "$(switches "$UP_PID")" $((t1 - t0)) 1000)"
	record "$mode" idle_wakeups_peer tunnel "$(per_ms %.1f "$v0" "$(switches "$SERVE_PID")" $((t1 - t0)) 1000)"
	record "$mode" idle_cpu_client tunnel "$(per_ms %.2f "$u0" "$u1" $((t1 - t0)) "$pct")"
	record "$mode" idle_cpu_peer tunnel "$(per_ms %.2f "$s0" "$s1" $((t1 - t0)) "$pct")"
	for mbit in 100 1000; do
		for dir in up down; do
			local r=()
			[ "$dir" = down ] && r=(-R)
			u0=$(ticks "$UP_PID") s0=$(ticks "$SERVE_PID") t0=$(tt_now_ms)
			timeout -k 5 $((BENCH_T + 30)) ip netns exec "$LAPTOP" \
				iperf3 -c "$TT_INET_IP4" -p "$TT_IPERF_PORT" -t "$BENCH_T" -b "${mbit}M" "${r[@]}" >/dev/null 2>&1 || true
			u1=$(ticks "$UP_PID") s1=$(ticks "$SERVE_PID") t1=$(tt_now_ms)
			record "$mode" "cpu${mbit}_${dir}_client" tunnel "$(per_ms %.1f "$u0" "$u1" $((t1 - t0)) "$pct")"
			record "$mode" "cpu${mbit}_${dir}_peer" tunnel "$(per_ms %.1f "$s0" "$s1" $((t1 - t0)) "$pct")"
		done
	done
}

# m_perf MODE: perf profiles of both tunnel processes during a TCP upload and a
# download.
m_perf() {
	local mode=$1 dir p1 p2 r side bg
	mkdir -p "$BENCH_PERF"
	for dir in up down; do
		r=()
		[ "$dir" = down ] && r=(-R)
		timeout -k 5 $((BENCH_T + 30)) ip netns exec "$LAPTOP" \
			iperf3 -c "$TT_INET_IP4" -p "$TT_IPERF_PORT" -t $((BENCH_T + 2)) "${r[@]}" >/dev/null 2>&1 &
		bg=$!
		sleep 1
		timeout -k 5 $((BENCH_T + 10)) perf record -q -F 499 -g -p "$UP_PID" -o "$BENCH_PERF/$mode-$dir-client.data" -- sleep "$BENCH_T" >/dev/null 2>&1 &
		p1=$!
		timeout -k 5 $((BENCH_T + 10)) perf record -q -F 499 -g -p "$SERVE_PID" -o "$BENCH_PERF/$mode-$dir-peer.data" -- sleep "$BENCH_T" >/dev/null 2>&1 &
		p2=$!
		wait "$p1" "$p2" "$bg" 2>/dev/null || true
		for side in client peer; do
			perf report -i "$BENCH_PERF/$mode-$dir-$side.data" --stdio --no-children --sort symbol 2>/dev/null |
				grep -E '^ +[0-9.]+%' | head -n 30 >"$BENCH_PERF/$mode-$dir-$side.top.txt" || true
		done
		echo "# perf: $BENCH_PERF/$mode-$dir-{client,peer}.top.txt" >&2
	done
}

# m_rss MODE: a fresh tunnel; RSS idle, holding N idle connections, after close.
m_rss() {
	local mode=$1 n pid tpid
	tunnel_start "$mode"
	sleep 2
	record "$mode" rss_idle_client tunnel "$(mib "$(rss_kib "$UP_PID")")"
	record "$mode" rss_idle_peer tunnel "$(mib "$(rss_kib "$SERVE_PID")")"
	snap_heap "$mode-idle"
	for n in $BENCH_HOLD; do
		tt_bg "hold-$mode-$n" ip netns exec "$LAPTOP" "$LOADGEN" hold -addr "$TT_INET_IP4:$LOAD_PORT" -n "$n" -c 50 -t 300s
		tpid=$TT_LAST_PID
		pid=$(tt_child_of "$tpid" 5) || true
		if ! tt_wait_log 120 "$WORK/hold-$mode-$n.log" '^holding ' "$tpid"; then
			record "$mode" "rss_${n}_client" tunnel NA
			[ -n "$pid" ] && tt_stop "$pid" 5
			continue
		fi
		sleep 2
		record "$mode" "held_${n}" tunnel "$(awk '/^holding/ {print $2}' "$WORK/hold-$mode-$n.log")"
		record "$mode" "rss_${n}_client" tunnel "$(mib "$(rss_kib "$UP_PID")")"
		record "$mode" "rss_${n}_peer" tunnel "$(mib "$(rss_kib "$SERVE_PID")")"
		snap_heap "$mode-$n"
		[ -n "$pid" ] && tt_stop "$pid" 10
		sleep 10
		record "$mode" "rss_${n}_closed_client" tunnel "$(mib "$(rss_kib "$UP_PID")")"
		record "$mode" "rss_${n}_closed_peer" tunnel "$(mib "$(rss_kib "$SERVE_PID")")"
		snap_heap "$mode-$n-closed"
	done
	tunnel_stop
}

# ---- the run ----------------------------------------------------------------------

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(load_avg)
echo "# bench: $(cd "$TT_REPO" && git describe --always --dirty 2>/dev/null); $(nproc) CPUs; load $LOAD_START; results in $OUT" >&2
bench_topology

if [ -n "${BENCH_SHELL:-}" ]; then
	mode=${BENCH_MODES%% *}
	tunnel_start "$mode"
	cat >&2 <<EOF
# the tunnel ($mode) is up for ${BENCH_SHELL} s; then everything is cleaned up.
#   LAPTOP=$LAPTOP PHONE=$PHONE INTERNET=$INTERNET
#   tetherd up: pid $UP_PID; tetherd serve: pid $SERVE_PID; loadgen: $LOADGEN
#   tunnel: $TT_INET_IP4 (iperf3 port $TT_IPERF_PORT, echo port $LOAD_PORT); direct: $DIRECT_IP4
EOF
	sleep "$BENCH_SHELL" &
	wait $! # not a foreground sleep: INT and TERM run the cleanup at once
	exit 0
fi

for mode in $BENCH_MODES; do
	record "$mode" load_before all "$(load_avg | tr ' ' /)"
	tunnel_start "$mode"
	for ((rep = 1; rep <= BENCH_REPS; rep++)); do
		echo "# $mode: repetition $rep/$BENCH_REPS (load $(load_avg))" >&2
		for m in tcp tcp8 udp udpdown conns rr busy floor; do
			want "$m" || continue
			for path in direct tunnel; do
				"m_$m" "$mode" "$path"
			done
		done
	done
	unset rep
	if want cpu; then m_cpu "$mode"; fi
	if [ -n "${BENCH_PERF:-}" ]; then m_perf "$mode"; fi
	tunnel_stop
	if want rss; then m_rss "$mode"; fi
	record "$mode" load_after all "$(load_avg | tr ' ' /)"
done
END_DATE=$(date -u '+%H:%M UTC')
mkdir -p "$OUT/raw"
cp "$WORK"/*.json "$WORK"/*.json.err "$WORK"/up-*.log "$WORK"/serve-*.log "$WORK"/rss-* "$OUT/raw/" 2>/dev/null || true

# ---- the table --------------------------------------------------------------------

TABLE="$OUT/table.md"
{
	echo "Run $START_DATE–$END_DATE on $(nproc) CPUs, Linux $(uname -r), $(cd "$TT_REPO" && git describe --always --dirty 2>/dev/null),"
	echo "TUN MTU ${BENCH_MTU:-default}, link impairment: ${BENCH_IMPAIR:-none}, sysctls: ${BENCH_SYSCTL:-default}, ${BENCH_REPS} repetitions of ${BENCH_T} s, load average $LOAD_START at the start:"
	echo
	echo '```'
	echo "$COMMAND"
	echo '```'
	echo
	awk -v udplow="$BENCH_UDP_LOW" -v udphigh="$BENCH_UDP_RATE" -v hogs="${BENCH_HOGS:-2}" -f "$BENCH_DIR/table.awk" "$RESULTS"
} >"$TABLE"
cat "$TABLE"

if [ -n "$BENCH_DOC" ]; then
	if ! awk -v table="$TABLE" '
		/<!-- bench:begin -->/ { print; while ((getline l < table) > 0) print l; skip = 1; found = 1; next }
		/<!-- bench:end -->/ { skip = 0 }
		!skip { print }
		END { if (!found) exit 3 }
	' "$BENCH_DOC" >"$BENCH_DOC.tmp"; then
		rm -f "$BENCH_DOC.tmp"
		tt_die "$BENCH_DOC has no <!-- bench:begin --> marker"
	fi
	mv "$BENCH_DOC.tmp" "$BENCH_DOC"
	echo "# table written into $BENCH_DOC" >&2
fi
echo "# results: $RESULTS" >&2
