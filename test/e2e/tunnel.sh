#!/usr/bin/env bash
# End-to-end test of `tetherd up` and `tetherd down` in three network namespaces
# (LAPTOP, PHONE, INTERNET; see lib.sh): 64 MiB downloads and 32 MiB uploads over
# IPv4 and IPv6, DNS through the tunnel's resolver (UDP, TCP, NXDOMAIN), UDP echo,
# iperf3 UDP, refused ports, TCP half-close, ping (also fragmented), a restart of
# the peer, and no packet leaving the laptop outside the tunnel (an nftables counter
# in LAPTOP); then that SIGTERM, SIGKILL + `tetherd down`, SIGKILL + a new up, and a
# wrong token all leave the laptop's rules, routes and resolv.conf exactly as they
# were. Last, that the namespaces are gone and the root namespace is untouched.
#
# Run as root: `make netns-test` (scripts/netns-test.sh), or directly:
#   sudo test/e2e/tunnel.sh                 # builds tetherd from the tree
#   sudo TETHERD=bin/tetherd test/e2e/tunnel.sh
#   sudo TT_KEEP=1 test/e2e/tunnel.sh       # keep the logs (path printed at the end)
#
# Prints one "ok"/"FAIL" line per check, then "N passed, M failed". Exit status 0 when
# everything passed, 1 on a failure, 77 when it cannot run here (not root, a tool
# missing, or a tetherd without `up`).
set -euo pipefail
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# shellcheck source=test/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TT_BIG_MIB=64

tt_require_root
tt_require_cmds ip nft curl dig iperf3 sha256sum timeout pgrep ss ping od
tt_init
tt_build
if ! tt_has_command up || ! tt_has_command down; then
	echo "skipped: tetherd up not available yet ('tetherd help' lists no up/down command)"
	exit 77
fi

PASSED=0
FAILED=0
NCHECK=0
UP_RUNNING=0 # 1 while the first tetherd up runs and said "tunnel is up"

# check NAME FUNCTION [ARGS...]: run one check, print ok/FAIL and its output.
check() {
	local name=$1
	shift
	NCHECK=$((NCHECK + 1))
	local out="$WORK/check-$NCHECK.out" t0 dt
	t0=$(tt_now_ms)
	if "$@" >"$out" 2>&1; then
		PASSED=$((PASSED + 1))
		dt=$(($(tt_now_ms) - t0))
		printf 'ok   %s  [%d.%03ds]\n' "$name" $((dt / 1000)) $((dt % 1000))
	else
		FAILED=$((FAILED + 1))
		dt=$(($(tt_now_ms) - t0))
		printf 'FAIL %s  [%d.%03ds]\n' "$name" $((dt / 1000)) $((dt % 1000))
	fi
	# bash reports the `timeout` wrapper of a SIGKILLed tetherd up as "Killed": noise.
	grep -Ev '^.*: line [0-9]+: +[0-9]+ Killed +timeout ' "$out" | sed 's/^/       /'
}

need_up() {
	if [ "$UP_RUNNING" != 1 ] || ! tt_alive "$TT_UP_PID"; then
		echo "not run: the first tetherd up is not running"
		return 1
	fi
}

# in_laptop CMD...: run CMD in LAPTOP.
in_laptop() { ip netns exec "$LAPTOP" "$@"; }

# ---- checks ------------------------------------------------------------------------

# Before up: the internet is unreachable from LAPTOP, and the leak counter sees the
# attempts (so that a 0 later means something).
check_no_way_out() {
	local rc=0
	if in_laptop curl -sS --max-time 2 -o /dev/null "http://$TT_INET_IP4/big.sha256" 2>/dev/null; then
		echo "LAPTOP reached http://$TT_INET_IP4/ without the tunnel: the phone forwards"
		rc=1
	fi
	if in_laptop curl -sS --max-time 2 -o /dev/null "http://[$TT_INET_IP6]/big.sha256" 2>/dev/null; then
		echo "LAPTOP reached http://[$TT_INET_IP6]/ without the tunnel: the phone forwards"
		rc=1
	fi
	local n
	n=$(tt_leak_packets leak)
	if [ "${n:-0}" -lt 2 ]; then
		echo "the leak counter saw $n packets of these attempts: it does not work"
		rc=1
	fi
	[ "$rc" = 0 ] && echo "both curls failed as they should; the leak counter saw their $n packets (self-test)"
	return "$rc"
}

check_up_starts() {
	tt_start_up up1 "$TT_URI" --config "$CFG"
	if [ -z "$TT_UP_PID" ]; then
		echo "tetherd up did not start:"
		tail -n 20 "$WORK/up1.log"
		return 1
	fi
	local t0 rc=0
	t0=$(tt_now_ms)
	tt_wait_log 20 "$WORK/up1.log" 'tunnel is up' "$TT_UP_PID" || rc=$?
	if [ "$rc" != 0 ]; then
		echo "no 'tunnel is up' (wait status $rc); last lines of its log:"
		tail -n 30 "$WORK/up1.log"
		return 1
	fi
	UP_RUNNING=1
	echo "tunnel is up after $(($(tt_now_ms) - t0)) ms (pid $TT_UP_PID)"
}

check_routing_installed() {
	need_up || return 1
	local rc=0 r4 r6 t4 t6
	r4=$(ip -n "$LAPTOP" -4 rule)
	r6=$(ip -n "$LAPTOP" -6 rule)
	t4=$(ip -n "$LAPTOP" -4 route show table 7170)
	t6=$(ip -n "$LAPTOP" -6 route show table 7170)
	for p in 7171 7172; do
		grep -q "^$p:" <<<"$r4" || { echo "no IPv4 rule at priority $p"; rc=1; }
		grep -q "^$p:" <<<"$r6" || { echo "no IPv6 rule at priority $p"; rc=1; }
	done
	grep -Eq "^7172:.*not .*fwmark 0x7170 lookup 7170" <<<"$r4" || { echo "IPv4 rule 7172 is not 'not fwmark 0x7170 lookup 7170'"; rc=1; }
	grep -Eq "^7170:.*$TT_PHONE_LAN_IP4 lookup main" <<<"$r4" || { echo "the peer $TT_PHONE_LAN_IP4 is not excluded at priority 7170"; rc=1; }
	grep -q "dev tether0" <<<"$t4" || { echo "table 7170 (IPv4) has no route into tether0"; rc=1; }
	grep -q "dev tether0" <<<"$t6" || { echo "table 7170 (IPv6) has no route into tether0"; rc=1; }
	ip -n "$LAPTOP" link show tether0 >/dev/null 2>&1 || { echo "no tether0 link"; rc=1; }
	if [ "$rc" != 0 ]; then
		printf 'ip -4 rule:\n%s\nip -6 rule:\n%s\ntable 7170 v4:\n%s\ntable 7170 v6:\n%s\n' "$r4" "$r6" "$t4" "$t6"
	else
		echo "rules 7170-7172 (v4), 7171-7172 (v6); table 7170: $(tr '\n' ';' <<<"$t4") $(tr '\n' ';' <<<"$t6")"
	fi
	return "$rc"
}

check_resolvconf_points_at_tunnel() {
	need_up || return 1
	local f="/etc/netns/$LAPTOP/resolv.conf"
	if grep -q '^nameserver 10.255.77.2' "$f" && ! grep -q "^nameserver $TT_PHONE_LAN_IP4" "$f"; then
		echo "$(grep -c '^nameserver' "$f") nameserver lines, the first: $(grep -m1 '^nameserver' "$f")"
		return 0
	fi
	echo "LAPTOP's resolv.conf is:"
	cat "$f"
	return 1
}

# download URL: 64 MiB through the tunnel, sha256 against the server's own value.
check_download() {
	need_up || return 1
	local url=$1 want stats got
	want=$(ip netns exec "$INTERNET" curl -sS --max-time 10 "http://$TT_INET_IP4/big.sha256") || {
		echo "could not read /big.sha256 inside INTERNET"
		return 1
	}
	stats=$(in_laptop curl -sS --max-time 90 -o "$WORK/download" -w '%{http_code} %{size_download} %{speed_download}' "$url") || {
		echo "curl $url failed: $stats"
		return 1
	}
	got=$(sha256sum "$WORK/download" | awk '{print $1}')
	rm -f "$WORK/download"
	read -r code size speed <<<"$stats"
	if [ "$code" != 200 ] || [ "$got" != "$want" ] || [ "$size" != $((64 << 20)) ]; then
		echo "HTTP $code, $size bytes, sha256 $got, want $want"
		return 1
	fi
	echo "$size bytes at $(awk -v s="$speed" 'BEGIN{printf "%.1f", s*8/1e6}') Mbit/s, sha256 matches"
}

# While a slow download runs: status, flows and the metrics endpoint all show its
# flow, and the flow's id is on up's debug log lines.
check_status_flows_metrics() {
	need_up || return 1
	local pid st fl m id rc=0 i
	in_laptop curl -sS --max-time 10 --limit-rate 500k -o /dev/null "http://$TT_INET_IP4/big" &
	pid=$!
	for i in $(seq 50); do
		fl=$(in_laptop "$TT_TETHERD" flows --json --config "$CFG" 2>&1) || true
		grep -q "\"dst\": \"$TT_INET_IP4:80\"" <<<"$fl" && break
		sleep 0.1
	done
	sleep 0.5
	st=$(in_laptop "$TT_TETHERD" status --json --config "$CFG" 2>&1) || true
	fl=$(in_laptop "$TT_TETHERD" flows --config "$CFG" 2>&1) || true
	m=$(in_laptop curl -sS --max-time 5 http://127.0.0.1:9470/metrics 2>&1) || true
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	grep -q '"mode": "up"' <<<"$st" && grep -q '"state": "connected"' <<<"$st" && grep -Eq '"tcp_flows": [1-9]' <<<"$st" ||
		{ echo "status --json: $st"; rc=1; }
	id=$(awk -v d="$TT_INET_IP4:80" '$2 == "tcp" && $4 == d {print $1; exit}' <<<"$fl")
	[ -n "$id" ] || { printf 'tetherd flows shows no tcp flow to %s:
%s
' "$TT_INET_IP4:80" "$fl"; rc=1; }
	if [ -n "$id" ] && ! grep -E "\"flow\": $id\b|flow=$id\b|\bflow\W+$id\b" "$WORK/up1.log" | grep -q 'tcp flow open'; then
		echo "no 'tcp flow open' line with flow $id in up's log"
		rc=1
	fi
	grep -q '^tetherd_connected 1' <<<"$m" && grep -Eq '^tetherd_flows\{proto="tcp"\} [1-9]' <<<"$m" &&
		grep -q '^go_goroutines ' <<<"$m" || { echo "metrics:"; head -n 40 <<<"$m"; rc=1; }
	[ "$rc" = 0 ] && printf 'flow %s listed:\n%s\nmetrics: %s\n' "$id" "$fl" "$(grep -E '^tetherd_(flows|connected)' <<<"$m" | tr '\n' ' ')"
	return "$rc"
}

check_upload() {
	need_up || return 1
	local url=$1 want got
	want=$(sha256sum "$WORK/upload.bin" | awk '{print $1}')
	got=$(in_laptop curl -sS --max-time 90 -H 'Content-Type: application/octet-stream' \
		--data-binary "@$WORK/upload.bin" -w '\n%{speed_upload}' "$url") || {
		echo "curl $url failed: $got"
		return 1
	}
	local sum speed
	sum=$(head -n1 <<<"$got")
	speed=$(tail -n1 <<<"$got")
	if [ "$sum" != "$want" ]; then
		echo "the server computed $sum, the file is $want"
		return 1
	fi
	echo "32 MiB at $(awk -v s="$speed" 'BEGIN{printf "%.1f", s*8/1e6}') Mbit/s, the server's sha256 matches"
}

check_http_by_name() {
	need_up || return 1
	local want got
	want=$(ip netns exec "$INTERNET" curl -sS --max-time 10 "http://$TT_INET_IP4/big.sha256")
	got=$(in_laptop curl -sS --max-time 15 -w '\n%{remote_ip}' http://internet.test/big.sha256) || {
		echo "curl http://internet.test/big.sha256 failed: $got"
		return 1
	}
	if [ "$(head -n1 <<<"$got")" != "$want" ]; then
		echo "got $got, want $want"
		return 1
	fi
	echo "http://internet.test/big.sha256 answered by $(tail -n1 <<<"$got")"
}

# dig_check WANT DIG-ARGS...: dig +short must print exactly WANT.
dig_check() {
	need_up || return 1
	local want=$1 got
	shift
	got=$(in_laptop dig +short +time=3 +tries=2 "$@" 2>&1) || true
	if [ "$got" != "$want" ]; then
		echo "dig $*: got '$got', want '$want'"
		return 1
	fi
	echo "dig $* -> $got"
}

check_nxdomain() {
	need_up || return 1
	local out
	out=$(in_laptop dig +time=3 +tries=2 nonexistent.test @10.255.77.2 2>&1) || true
	if ! grep -q 'status: NXDOMAIN' <<<"$out"; then
		echo "dig nonexistent.test @10.255.77.2:"
		echo "$out"
		return 1
	fi
	echo "nonexistent.test: NXDOMAIN"
}

check_udp_echo() {
	need_up || return 1
	in_laptop "$TT_INTERNETD" -udp-echo-client "$1" -count 50 -size "${2:-1200}" -wait 1s -timeout 30s
}

check_iperf3_udp() {
	need_up || return 1
	local out line lost total
	out=$(in_laptop timeout 25 iperf3 -c "$TT_INET_IP4" -p "$TT_IPERF_PORT" -u -b 20M -t 3 2>&1) || {
		echo "iperf3 failed:"
		echo "$out"
		return 1
	}
	line=$(grep 'receiver' <<<"$out" | tail -n1)
	read -r lost total < <(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) {split($i, a, "/"); print a[1], a[2]}}' <<<"$line")
	if [ -z "${total:-}" ] || [ "$total" -eq 0 ]; then
		echo "no receiver line in the iperf3 output:"
		echo "$out"
		return 1
	fi
	echo "${line#*sec}" | sed 's/^ *//'
	# Less than 0.5 % lost.
	if [ $((lost * 1000)) -ge $((total * 5)) ]; then
		echo "lost $lost of $total datagrams"
		return 1
	fi
}

check_refused_fast() {
	need_up || return 1
	local out rc=0 secs
	# curl's own clock (time_total), not this shell's: starting processes on a loaded
	# machine is not what is measured. A refusal must not wait for a connect timeout.
	out=$(in_laptop curl -sS --max-time 10 -o /dev/null -w 'time_total=%{time_total}\n' "http://$TT_INET_IP4:81/" 2>&1) || rc=$?
	secs=$(sed -n 's/^time_total=//p' <<<"$out")
	echo "curl exit $rc, refused after ${secs:-?} s (curl's clock): $(grep -v '^time_total=' <<<"$out")"
	[ "$rc" = 7 ] && [ -n "$secs" ] && awk -v s="$secs" 'BEGIN{exit !(s < 2)}' && grep -Eq "Connection refused|Couldn't connect" <<<"$out"
}

# check_unreachable: a host the phone cannot reach (no one answers ARP on its link)
# makes connect fail with "No route to host" — the ICMP unreachable tetherd sends in
# answer to the SYN — not "Connection refused", and not after a long timeout.
check_unreachable() {
	need_up || return 1
	local t0 dt out rc=0
	t0=$(tt_now_ms)
	out=$(in_laptop timeout 15 bash -c 'exec 3<>/dev/tcp/198.51.100.99/80' 2>&1) || rc=$?
	dt=$(($(tt_now_ms) - t0))
	echo "connect exit $rc after $dt ms: $out"
	[ "$rc" != 0 ] && [ "$dt" -lt 10000 ] && grep -q "No route to host" <<<"$out"
}

check_halfclose() {
	need_up || return 1
	in_laptop "$TT_INTERNETD" -halfclose-client "$1" -bytes 1000000 -timeout 20s
}

# ping_count ARGS...: ping from LAPTOP, print the number of replies.
ping_count() {
	in_laptop ping -n -q "$@" 2>/dev/null | awk '/received/ {for (i = 1; i < NF; i++) if ($(i + 1) ~ /^received/) print $i}'
}

# expect_pings WANT-MIN WANT-MAX LABEL PING-ARGS...
expect_pings() {
	local min=$1 max=$2 label=$3 n
	shift 3
	n=$(ping_count "$@")
	n=${n:-0}
	echo "$label: $n replies"
	[ "$n" -ge "$min" ] && [ "$n" -le "$max" ]
}

check_ping() {
	need_up || return 1
	local rc=0
	expect_pings 3 3 "ping $TT_INET_IP4 (3 x 56 bytes)" -c 3 -i 0.2 -W 2 "$TT_INET_IP4" || rc=1
	expect_pings 3 3 "ping $TT_INET_IP6 (3 x 56 bytes)" -6 -c 3 -i 0.2 -W 2 "$TT_INET_IP6" || rc=1
	return "$rc"
}

# Nobody has these addresses: a reply would be invented by the laptop's netstack.
NOHOST4=198.51.100.99
NOHOST6=2001:db8:100::99

check_ping_nohost() {
	need_up || return 1
	local rc=0
	expect_pings 0 0 "ping $NOHOST4 (no such host)" -c 2 -i 0.2 -W 1 "$NOHOST4" || rc=1
	expect_pings 0 0 "ping $NOHOST6 (no such host)" -6 -c 2 -i 0.2 -W 1 "$NOHOST6" || rc=1
	return "$rc"
}

# 2000-byte payloads do not fit the TUN's MTU of 1500: the laptop's kernel sends the
# echo requests as IP fragments.
check_ping_fragmented() {
	need_up || return 1
	local rc=0
	expect_pings 2 2 "ping -s 2000 $TT_INET_IP4" -c 2 -i 0.2 -W 2 -s 2000 "$TT_INET_IP4" || rc=1
	expect_pings 2 2 "ping -s 2000 $TT_INET_IP6" -6 -c 2 -i 0.2 -W 2 -s 2000 "$TT_INET_IP6" || rc=1
	return "$rc"
}

check_ping_fragmented_nohost() {
	need_up || return 1
	local rc=0
	expect_pings 0 0 "ping -s 2000 $NOHOST4 (no such host)" -c 2 -i 0.2 -W 1 -s 2000 "$NOHOST4" || rc=1
	expect_pings 0 0 "ping -s 2000 $NOHOST6 (no such host)" -6 -c 2 -i 0.2 -W 1 -s 2000 "$NOHOST6" || rc=1
	return "$rc"
}

# The phone's tetherd serve is restarted (SIGTERM, then a new one with the same
# state): up must reconnect by itself and new connections work again.
check_peer_restart() {
	need_up || return 1
	local old_tpid=$TT_SERVE_TPID old_pid=$TT_SERVE_PID
	kill -TERM "$old_pid" 2>/dev/null
	if ! tt_wait 15 "the old serve to stop listening" bash -c "! ip netns exec '$PHONE' ss -Htln 'sport = :$TT_SERVE_PORT' | grep -q ."; then
		echo "the old tetherd serve still listens 15 s after SIGTERM"
		return 1
	fi
	tt_start_serve serve2 || return 1
	local t0 dt tries=0 failed=0 ok=0 deadline
	t0=$(tt_now_ms)
	deadline=$((t0 + 20000))
	while [ "$(tt_now_ms)" -lt "$deadline" ]; do
		tries=$((tries + 1))
		if in_laptop curl -sS --max-time 5 -o /dev/null "http://$TT_INET_IP4/big.sha256" 2>/dev/null; then
			ok=1
			break
		fi
		failed=$((failed + 1))
		sleep 0.25
	done
	dt=$(($(tt_now_ms) - t0))
	if [ "$ok" != 1 ]; then
		echo "no connection through the tunnel 20 s after the new serve listened ($tries tries); up's last lines:"
		tail -n 10 "$WORK/up1.log"
		return 1
	fi
	echo "a new connection worked $dt ms after the new serve listened ($failed attempts failed before)"
	grep -E 'tunnel lost|reconnect|tunnel is up again' "$WORK/up1.log" | tail -n 3 | cut -c1-200
	tt_wait_exit "$old_tpid" 15 || echo "note: the old tetherd serve still runs 15 s after SIGTERM"
	if [ "$dt" -gt 15000 ]; then
		echo "took more than 15 s"
		return 1
	fi
}

check_up_recovers_stale_journal() {
	local rc=0
	tt_start_up up3 "$TT_URI" --config "$CFG"
	tt_wait_log 20 "$WORK/up3.log" 'tunnel is up' "$TT_UP_PID" || {
		echo "up3 did not come up:"
		tail -n 20 "$WORK/up3.log"
		tt_stop "$TT_UP_TPID" 10
		return 1
	}
	kill -KILL "$TT_UP_PID"
	tt_wait_exit "$TT_UP_TPID" 10 || return 1
	echo "up SIGKILLed; starting up again without tetherd down"
	tt_start_up up4 "$TT_URI" --config "$CFG"
	tt_wait_log 20 "$WORK/up4.log" 'tunnel is up' "$TT_UP_PID" || {
		echo "up4 (over the journal of the killed up3) did not come up:"
		tail -n 20 "$WORK/up4.log"
		tt_stop "$TT_UP_TPID" 10
		return 1
	}
	in_laptop curl -sS --max-time 10 -o /dev/null "http://$TT_INET_IP4/big.sha256" || {
		echo "no traffic through up4"
		rc=1
	}
	kill -TERM "$TT_UP_PID"
	tt_wait_exit "$TT_UP_TPID" 10 || {
		echo "up4 still runs 10 s after SIGTERM"
		return 1
	}
	tt_same_as "$WORK/baseline" "$LAPTOP" || rc=1
	[ "$rc" = 0 ] && echo "up4 restored up3's leftovers, carried traffic, and SIGTERM left the baseline"
	return "$rc"
}

# A query sent explicitly to the LAN resolver (the laptop's resolver before up; on a
# phone's hotspot it is the phone itself) must not leave lan0 outside the tunnel
# either. Run after check_no_leak, so that a leak here is reported only here.
check_lan_dns_not_leaked() {
	need_up || return 1
	local before after out
	before=$(tt_leak_packets leak)
	out=$(in_laptop dig +time=1 +tries=1 internet.test "@$TT_PHONE_LAN_IP4" 2>&1 | grep -E 'status:|timed out|refused|^[^;].*IN' | head -n 3) || true
	in_laptop dig +tcp +time=1 +tries=1 internet.test "@$TT_PHONE_LAN_IP4" >/dev/null 2>&1 || true
	after=$(tt_leak_packets leak)
	echo "dig @$TT_PHONE_LAN_IP4 (UDP and TCP): ${out:-no output}; leak counter $before -> $after"
	if [ "$after" != "$before" ]; then
		tt_leak_show_sets
		return 1
	fi
}

check_no_leak() {
	need_up || return 1
	local leak tunnel ll
	leak=$(tt_leak_packets leak)
	tunnel=$(tt_leak_packets tunnel)
	ll=$(tt_leak_packets linklocal)
	echo "outside the tunnel: $leak packets; tunnel connection: $tunnel packets; ND/MLD: $ll"
	if [ "${tunnel:-0}" -eq 0 ]; then
		echo "the tunnel's own packets were not counted: the counter setup is wrong"
		return 1
	fi
	if [ "${leak:-1}" -ne 0 ]; then
		echo "leaked destinations (address . protocol . port):"
		tt_leak_show_sets
		return 1
	fi
}

check_sigterm_restores() {
	need_up || return 1
	kill -TERM "$TT_UP_PID"
	if ! tt_wait_exit "$TT_UP_TPID" 10; then
		echo "tetherd up still runs 10 s after SIGTERM; last log lines:"
		tail -n 20 "$WORK/up1.log"
		return 1
	fi
	UP_RUNNING=0
	echo "tetherd up exited with status $TT_EXIT after SIGTERM"
	local rc=0
	tt_same_as "$WORK/baseline" "$LAPTOP" || rc=1
	[ "$rc" = 0 ] && echo "rules, routes, links, nft tables and resolv.conf bytes identical to the baseline"
	return "$rc"
}

check_sigkill_then_down() {
	tt_start_up up2 --config "$CFG_PEER"
	if [ -z "$TT_UP_PID" ]; then
		echo "tetherd up (peer from the configuration) did not start"
		tail -n 20 "$WORK/up2.log"
		return 1
	fi
	local rc=0
	tt_wait_log 20 "$WORK/up2.log" 'tunnel is up' "$TT_UP_PID" || rc=$?
	if [ "$rc" != 0 ]; then
		echo "the second up (peer: from the configuration) never said 'tunnel is up'; its log:"
		tail -n 30 "$WORK/up2.log"
		tt_stop "$TT_UP_TPID" 10
		return 1
	fi
	kill -KILL "$TT_UP_PID"
	tt_wait_exit "$TT_UP_TPID" 10 || {
		echo "tetherd up survived SIGKILL?"
		return 1
	}
	if tt_same_as "$WORK/baseline" "$LAPTOP" >/dev/null; then
		echo "note: after SIGKILL the laptop already equals the baseline (nothing left for down)"
	else
		echo "after SIGKILL, left behind: $(tt_same_as "$WORK/baseline" "$LAPTOP" | grep -c '^[-+][^-+]') changed lines"
	fi
	local out
	out=$(in_laptop timeout 15 "$TT_TETHERD" down --journal-dir "$WORK/journal" 2>&1) || {
		echo "tetherd down failed ($?):"
		echo "$out"
		return 1
	}
	echo "tetherd down said:"
	sed 's/^/  /' <<<"$out"
	tt_same_as "$WORK/baseline" "$LAPTOP" || return 1
	echo "identical to the baseline"
}

check_down_again() {
	local out rc=0
	out=$(in_laptop timeout 15 "$TT_TETHERD" down --journal-dir "$WORK/journal" 2>&1) || rc=$?
	echo "tetherd down (exit $rc): $out"
	[ "$rc" = 0 ] && grep -Eiq 'nothing to (do|restore)' <<<"$out" || return 1
	tt_same_as "$WORK/baseline" "$LAPTOP"
}

check_wrong_token() {
	local bad out rc=0 t0 dt
	bad=$(sed -E 's/([?&]token=)/\1WRONG/' <<<"$TT_URI")
	[ "$bad" != "$TT_URI" ] || {
		echo "no token= in $TT_URI"
		return 1
	}
	t0=$(tt_now_ms)
	out=$(in_laptop timeout -k 2 15 "$TT_TETHERD" up "$bad" --config "$CFG" 2>&1) || rc=$?
	dt=$(($(tt_now_ms) - t0))
	echo "exit $rc after $dt ms; last lines:"
	tail -n 5 <<<"$out" | sed 's/^/  /'
	local ok=1
	if [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "want a non-zero exit within 15 s"
		ok=0
	fi
	if ! grep -Eiq '401|token' <<<"$out"; then
		echo "no mention of the token or 401"
		ok=0
	fi
	if grep -q 'tunnel is up' <<<"$out"; then
		echo "it said 'tunnel is up' with a wrong token"
		ok=0
	fi
	local n
	n=$(grep -c 'restored' <<<"$out" || true)
	if [ "$n" -gt 0 ]; then
		echo "up changed routing/DNS before the peer rejected the token, then undid it ($n 'restored' log lines): it must check the peer first"
		ok=0
	fi
	tt_same_as "$WORK/baseline" "$LAPTOP" || ok=0
	[ "$ok" = 1 ]
}

check_cleanup() {
	local names=("$LAPTOP" "$PHONE" "$INTERNET") rc=0
	tt_cleanup_keep_work
	tt_namespaces_gone "${names[@]}" || rc=1
	if ! tt_root_unchanged; then
		echo "the ROOT namespace changed (see the diff above)"
		rc=1
	fi
	[ "$rc" = 0 ] && echo "namespaces and /etc/netns dirs gone; root rules, routes and /etc/resolv.conf byte-identical to the start"
	return "$rc"
}

# ---- main ------------------------------------------------------------------------

echo "# tetherd: $("$TT_TETHERD" version 2>&1 | head -n1); namespaces $LAPTOP $PHONE $INTERNET; work dir $WORK"
tt_topology_up
tt_start_internetd
tt_start_iperf3
tt_start_serve || tt_die "tetherd serve did not start"
echo "# tetherd serve (uid $(awk '/^Uid:/{print $2}' "/proc/$TT_SERVE_PID/status" 2>/dev/null || echo '?')) printed: ${TT_URI%%\?*}?token=…"

CFG="$WORK/up.yaml"
CFG_PEER="$WORK/up-peer.yaml"
tt_write_up_config "$CFG" "$(printf 'metrics:\n  listen: 127.0.0.1:9470')"
tt_write_up_config "$CFG_PEER" "peer: \"$TT_URI\""
head -c $((32 << 20)) /dev/urandom >"$WORK/upload.bin"

tt_leak_setup
check "before up: LAPTOP cannot reach the internet (phone does not forward)" check_no_way_out
tt_snapshot "$LAPTOP" "$WORK/baseline"
tt_leak_reset

check "tetherd up URI --config: 'tunnel is up' within 20 s" check_up_starts
check "routing: rules 7170-7172 and table 7170 into tether0" check_routing_installed
check "DNS: LAPTOP resolv.conf rewritten in place to nameserver 10.255.77.2" check_resolvconf_points_at_tunnel
check "download 64 MiB over IPv4 (http://$TT_INET_IP4/big), sha256 matches" check_download "http://$TT_INET_IP4/big"
check "download 64 MiB over IPv6 (http://[$TT_INET_IP6]/big), sha256 matches" check_download "http://[$TT_INET_IP6]/big"
check "upload 32 MiB over IPv4, the server's sha256 matches" check_upload "http://$TT_INET_IP4/upload"
check "upload 32 MiB over IPv6, the server's sha256 matches" check_upload "http://[$TT_INET_IP6]/upload"
check "name resolution: curl http://internet.test/big.sha256" check_http_by_name
check "tetherd status/flows --json and /metrics show a running download's flow" check_status_flows_metrics
check "dig +short internet.test @10.255.77.2 (UDP)" dig_check "$TT_INET_IP4" internet.test @10.255.77.2
check "dig +tcp +short internet.test @10.255.77.2" dig_check "$TT_INET_IP4" +tcp internet.test @10.255.77.2
check "dig +short AAAA internet.test @fd74:6574:6865:7264::53" dig_check "$TT_INET_IP6" AAAA internet.test @fd74:6574:6865:7264::53
check "dig nonexistent.test @10.255.77.2: NXDOMAIN" check_nxdomain
check "DNS over UDP to the internet's own server (dig @$TT_INET_IP4)" dig_check "$TT_INET_IP4" internet.test "@$TT_INET_IP4"
check "UDP echo over IPv4, 50 x 1200 bytes" check_udp_echo "$TT_INET_IP4:7"
check "UDP echo over IPv6, 50 x 1200 bytes" check_udp_echo "[$TT_INET_IP6]:7"
check "iperf3 UDP 20 Mbit/s for 3 s: < 0.5 % lost" check_iperf3_udp
check "refused port (curl http://$TT_INET_IP4:81/) fails in < 2 s" check_refused_fast
check "unreachable host (198.51.100.99): connect fails with 'No route to host'" check_unreachable
check "half-close over IPv4: 1 MB, shutdown(SHUT_WR), then 'got N bytes'" check_halfclose "$TT_INET_IP4:7001"
check "half-close over IPv6" check_halfclose "[$TT_INET_IP6]:7001"
check "ping through the peer, IPv4 and IPv6" check_ping
check "ping a host that does not exist: no reply (v4, v6)" check_ping_nohost
check "ping -s 2000 (IP fragments) of the internet host is answered (v4, v6)" check_ping_fragmented
check "ping -s 2000 (IP fragments) of a host that does not exist: no reply (v4, v6)" check_ping_fragmented_nohost
check "peer restart (SIGTERM serve, start it again): up reconnects, new connections work" check_peer_restart
check "no packet left LAPTOP's lan0 outside the tunnel while up ran (nft counter 0)" check_no_leak
check "DNS to the LAN resolver (dig @$TT_PHONE_LAN_IP4, UDP and TCP) stays inside the tunnel" check_lan_dns_not_leaked
check "SIGTERM: up exits, rules/routes/resolv.conf identical to the baseline" check_sigterm_restores
check "up (peer: from config), SIGKILL, tetherd down: identical to the baseline" check_sigkill_then_down
check "tetherd down again: nothing to do" check_down_again
check "up over the journal of a SIGKILLed up (no down): restores, works, SIGTERM: baseline" check_up_recovers_stale_journal
check "wrong token: up exits non-zero within 15 s naming the token/401, having changed nothing" check_wrong_token
check "cleanup: namespaces gone, root namespace untouched" check_cleanup

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
