# shellcheck shell=bash
# shellcheck disable=SC2034,SC2153 # figures set with printf -v, read in arithmetic
# The checks of faults.sh on what `up` restores and how it reconnects: SIGTERM,
# SIGKILL at random moments, a resolv.conf cut short, a link flap, an address change,
# and the final cleanup. Sourced by faults.sh, which provides the topology, the
# helpers and the globals they use.

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
	local names=("$LAPTOP" "$MIDDLE" "$PHONE" "$INTERNET") rc=0
	tt_cleanup_keep_work
	tt_namespaces_gone "${names[@]}" || rc=1
	tt_root_unchanged || { echo "the ROOT namespace changed"; rc=1; }
	[ "$rc" = 0 ] && echo "namespaces gone; root rules, routes and /etc/resolv.conf unchanged"
	return "$rc"
}
