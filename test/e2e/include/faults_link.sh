# shellcheck shell=bash
# shellcheck disable=SC2034,SC2153 # figures set with printf -v, read in arithmetic
# The checks of faults.sh on the link and the peer: integrity under impairment, the
# peer killed or stopped, a blackholed link, leaks, thousands of flows. Sourced by
# faults.sh, which provides the topology, the helpers and the globals they use.


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

# silence SECONDS WHAT START END: the peer falls silent (the command START, for WHAT)
# for SECONDS, then END ends the silence. Keepalive must notice within
# keepalive_timeout (plus slack), and a new flow must work within 30 s of the end
# with nothing else done.
silence() {
	local secs=$1 what=$2 start=$3 end=$4 n0 t0 dt rc=0 mark
	n0=$(count_lines "$UP_LOG" 'tunnel lost')
	mark=$(up_mark)
	t0=$(tt_now_ms)
	$start || return 1
	echo "$what from $(date -u +%T.%3N)"
	if wait_more "$UP_LOG" 'tunnel lost' "$n0" $((secs - 1)); then
		dt=$(($(tt_now_ms) - t0))
		echo "up declared the session dead $(ms "$dt") into the $what (load average $(cut -d' ' -f1 /proc/loadavg))"
		[ "$dt" -le $(((KEEPALIVE_TIMEOUT_S + KEEPALIVE_SLACK_S) * 1000)) ] || { echo "want within keepalive_timeout ${KEEPALIVE_TIMEOUT_S}s + ${KEEPALIVE_SLACK_S} s"; rc=1; }
	else
		echo "up did not notice the $what within $((secs - 1)) s"
		rc=1
	fi
	while [ $(($(tt_now_ms) - t0)) -lt $((secs * 1000)) ]; do sleep 0.1; done
	$end || return 1
	echo "$what over at $(date -u +%T.%3N)"
	if wait_new_flow 30; then
		echo "after $secs s of $what, a new flow worked $(ms "$FLOW_MS") after its end ($FLOW_TRIES tries)"
	else
		echo "no new flow within 30 s of the end of the $what; up's last lines:"
		tail -n 5 "$UP_LOG"
		rc=1
	fi
	up_events "$mark"
	return "$rc"
}

stop_serve() { kill -STOP "$TT_SERVE_PID"; }
cont_serve() { kill -CONT "$TT_SERVE_PID"; }

# A silent peer: serve stopped (SIGSTOP) for 15 s, then SIGCONT.
check_sigstop() {
	need_up || return 1
	silence 15 "SIGSTOP of serve" stop_serve cont_serve
}

# The link drops everything for BLACKHOLE_S seconds.
check_blackhole() {
	need_up || return 1
	silence "$BLACKHOLE_S" blackhole "tt_blackhole on" "tt_blackhole off"
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

