# Turns bench/run.sh's results.txt (lines "MODE TEST PATH VALUE") into markdown:
# medians of every measure for the direct path and the tunnel, and their ratio.

function median(s,    a, n, i, j, t) {
	n = split(s, a, " ")
	if (n == 0) return "NA"
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	if (n % 2) return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}

function add(k, v) {
	if (v == "NA") { na[k]++; return }
	vals[k] = (k in vals) ? vals[k] " " v : v
}

{
	if ($2 == "load_before" || $2 == "load_after") { load[$1, $2] = $4; next }
	if (!(($1) in seenmode)) { seenmode[$1] = 1; modes[++nmodes] = $1 }
	add($1 SUBSEP $2 SUBSEP $3, $4)
}

function fmt(v) { return v == "NA" ? "–" : v }

function cell(m, t, p,    k, x) {
	k = m SUBSEP t SUBSEP p
	x = (k in vals) ? median(vals[k]) : "NA"
	if ((k in na) && na[k] > 0) return fmt(x) " (" na[k] " failed)"
	return fmt(x)
}

function row(m, t, label, lowerbetter,    d, u, r, k) {
	k = m SUBSEP t SUBSEP "tunnel"
	if (!(k in vals) && !(k in na)) return
	d = cell(m, t, "direct"); u = cell(m, t, "tunnel")
	r = "–"
	if (d + 0 > 0 && u + 0 > 0) r = sprintf("%.2f×", u / d)
	printf "| %s | %s | %s | %s | %s | %s |\n", m, label, d, u, r, vals[k]
}

function trow(m, t, label,    kc, kp) {
	kc = m SUBSEP t "_client" SUBSEP "tunnel"
	kp = m SUBSEP t "_peer" SUBSEP "tunnel"
	if (!(kc in vals) && !(kp in vals) && !(kc in na)) return
	printf "| %s | %s | %s | %s |\n", m, label, cell(m, t "_client", "tunnel"), cell(m, t "_peer", "tunnel")
}

END {
	print "| transport | measure | direct | tunnel | tunnel/direct | tunnel, each run |"
	print "|---|---|---:|---:|---:|---|"
	for (i = 1; i <= nmodes; i++) {
		m = modes[i]
		row(m, "tcp1_up_gbps", "TCP 1 stream up, Gbit/s")
		row(m, "tcp1_down_gbps", "TCP 1 stream down, Gbit/s")
		row(m, "tcp8_up_gbps", "TCP 8 streams up, Gbit/s")
		row(m, "udp_low_rx_mbps", "UDP " udplow "bit/s offered: received, Mbit/s")
		row(m, "udp_low_loss_pct", "UDP " udplow "bit/s offered: loss, %")
		row(m, "udp_high_rx_mbps", "UDP " udphigh "bit/s offered: received, Mbit/s")
		row(m, "udp_high_loss_pct", "UDP " udphigh "bit/s offered: loss, %")
		row(m, "udp_down_low_rx_mbps", "UDP down " udplow "bit/s offered: received, Mbit/s")
		row(m, "udp_down_low_loss_pct", "UDP down " udplow "bit/s offered: loss, %")
		row(m, "udp_down_high_rx_mbps", "UDP down " udphigh "bit/s offered: received, Mbit/s")
		row(m, "udp_down_high_loss_pct", "UDP down " udphigh "bit/s offered: loss, %")
		row(m, "conns_per_s", "new connections/s (50 at once)")
		row(m, "conns_p50_us", "connect+reply p50, µs")
		row(m, "conns_p99_us", "connect+reply p99, µs")
		row(m, "conns_errors", "connection errors")
		row(m, "rr_idle_p50_us", "ping-pong idle p50, µs")
		row(m, "rr_idle_p99_us", "ping-pong idle p99, µs")
		row(m, "rr_load_p50_us", "ping-pong under a download p50, µs")
		row(m, "rr_load_p99_us", "ping-pong under a download p99, µs")
		row(m, "rr_busy_p50_us", "ping-pong beside " hogs " CPU hogs p50, µs")
		row(m, "rr_busy_p99_us", "ping-pong beside " hogs " CPU hogs p99, µs")
	}
	for (k in vals) if (k ~ /(cpu100|cpu1000|rss|idle_cpu)_/) { procrows = 1; break }
	if (procrows) {
		print ""
		print "| transport | tunnel process | tetherd up (client) | tetherd serve (peer) |"
		print "|---|---|---:|---:|"
	}
	for (i = 1; i <= nmodes && procrows; i++) {
		m = modes[i]
		trow(m, "idle_wakeups", "idle: wake-ups per second")
		trow(m, "idle_cpu", "idle: CPU, % of a core")
		trow(m, "cpu100_up", "CPU at 100 Mbit/s up, % of a core")
		trow(m, "cpu100_down", "CPU at 100 Mbit/s down, % of a core")
		trow(m, "cpu1000_up", "CPU at 1 Gbit/s up, % of a core")
		trow(m, "cpu1000_down", "CPU at 1 Gbit/s down, % of a core")
		trow(m, "rss_idle", "RSS idle, MiB")
		for (n = 1000; n <= 100000; n *= 10) {
			if (!((m SUBSEP "held_" n SUBSEP "tunnel") in vals) && !((m SUBSEP "rss_" n "_client" SUBSEP "tunnel") in na)) continue
			trow(m, "rss_" n, sprintf("RSS holding %d idle TCP connections, MiB", n))
			trow(m, "rss_" n "_closed", sprintf("RSS 10 s after those %d closed, MiB", n))
		}
	}
	print ""
	for (i = 1; i <= nmodes; i++) {
		m = modes[i]
		if (!((m SUBSEP "floor_rr_p50_us" SUBSEP "relay") in vals)) continue
		printf "Floor during %s: 64-byte ping-pong through two plain TCP relays (bench/loadgen relay, one thread each, LAPTOP and PHONE) instead of the tunnel: idle p50 %s µs, p99 %s µs (each run: %s)", m, cell(m, "floor_rr_p50_us", "relay"), cell(m, "floor_rr_p99_us", "relay"), vals[m SUBSEP "floor_rr_p50_us" SUBSEP "relay"]
		if ((m SUBSEP "floor_rr_load_p99_us" SUBSEP "relay") in vals)
			printf "; while an iperf3 download runs through the tunnel p50 %s µs, p99 %s µs (each run: %s)", cell(m, "floor_rr_load_p50_us", "relay"), cell(m, "floor_rr_load_p99_us", "relay"), vals[m SUBSEP "floor_rr_load_p99_us" SUBSEP "relay"]
		print "."
	}
	for (i = 1; i <= nmodes; i++)
		printf "Load average (1/5/15 min) during %s: %s before, %s after.\n", modes[i], load[modes[i], "load_before"], load[modes[i], "load_after"]
}
