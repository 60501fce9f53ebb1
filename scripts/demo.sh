#!/usr/bin/env bash
# `make demo`: tetherd in three network namespaces, explained step by step.
#
# It builds tetherd, makes a pretend laptop, phone and internet (network namespaces
# joined by virtual cables), runs `tetherd serve` on the phone and `tetherd up` on the
# laptop, fetches a page through the tunnel, shows the routing tetherd installed, stops
# it and shows that everything is back as it was. Then it removes the namespaces.
# Needs root; changes nothing outside its own namespaces. Takes well under a minute.
#
#   sudo make demo
#   sudo TETHERD=bin/tetherd scripts/demo.sh    # use an existing binary
set -euo pipefail
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/e2e/lib.sh
source test/e2e/lib.sh
TT_BIG_MIB=4 # the demo downloads nothing big

if [ "$(id -u)" -ne 0 ]; then
	echo "The demo creates network namespaces and needs root: sudo make demo" >&2
	exit 1
fi
# go builds internetd (the pretend internet's servers), and tetherd unless $TETHERD.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
for c in ip curl dig timeout pgrep ss ping go; do
	if ! command -v "$c" >/dev/null 2>&1; then
		echo "The demo needs '$c' (Debian packages: iproute2 curl bind9-dnsutils coreutils procps iputils-ping; Go in /usr/local/go)." >&2
		exit 1
	fi
done

if [ -t 1 ]; then
	B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' N=$'\e[0m'
else
	B="" D="" G="" N=""
fi
STEP=0
step() {
	STEP=$((STEP + 1))
	printf '\n%s%d. %s%s\n' "$B" "$STEP" "$1" "$N"
	shift
	local line
	for line in "$@"; do
		printf '   %s\n' "$line"
	done
}
# show WHERE CMD...: print the command as the user would type it there, then run it.
show() {
	local where=$1
	shift
	printf '%s   [%s] $ %s%s\n' "$G" "$where" "$*" "$N"
	local ns
	case $where in
	laptop) ns=$LAPTOP ;;
	phone) ns=$PHONE ;;
	internet) ns=$INTERNET ;;
	esac
	ip netns exec "$ns" "$@" 2>&1 | sed 's/^/     /' || true
}
# show_ip WHERE ARGS...: `ip ARGS` in the namespace, printed without the -n NAME.
show_ip() {
	local where=$1 ns
	shift
	case $where in
	laptop) ns=$LAPTOP ;;
	phone) ns=$PHONE ;;
	esac
	printf '%s   [%s] $ ip %s%s\n' "$G" "$where" "$*" "$N"
	local out
	out=$(ip -n "$ns" "$@" 2>&1 || true)
	if [ -z "$out" ]; then
		printf '     %s(nothing)%s\n' "$D" "$N"
	else
		sed 's/^/     /' <<<"$out"
	fi
}

T0=$SECONDS
tt_init

step "Build tetherd" "(go build ./cmd/tetherd, or the binary in \$TETHERD)"
tt_build
echo "   $("$TT_TETHERD" version 2>&1 | head -n1)"
if ! tt_has_command up; then
	echo "   This tetherd has no 'up' command yet: the demo needs it. Nothing was changed."
	exit 1
fi

step "Make three pretend machines" \
	"Each is a Linux network namespace with its own interfaces, routes and resolv.conf:" \
	"$(printf '  %-8s %-18s %s' laptop "$LAPTOP" "10.200.1.1, fd00:200:1::1")" \
	"$(printf '  %-8s %-18s %s' phone "$PHONE" "10.200.1.2 towards the laptop, 198.51.100.1 towards the internet")" \
	"$(printf '  %-8s %-18s %s' internet "$INTERNET" "198.51.100.10, 2001:db8:100::10: web and DNS server of 'internet.test'")" \
	"The phone does NOT route packets for the laptop (forwarding is off), like a phone" \
	"without tethering: the laptop's only way to the internet will be tetherd." \
	"Below, '[laptop] \$ CMD' runs 'ip netns exec $LAPTOP CMD' (and 'ip ARGS' is 'ip -n NAME ARGS')."
tt_topology_up
tt_start_internetd
show_ip laptop route
echo "   ${D}(the laptop's default route points at the phone, which will drop what it gets)${N}"

step "Without tetherd, the laptop cannot reach the internet"
show laptop curl -sS --max-time 2 http://198.51.100.10/

step "On the phone: tetherd serve" \
	"It runs as an ordinary user (here: nobody), creates a certificate and a token once," \
	"and prints the line the laptop needs:"
tt_start_serve serve || {
	echo "   tetherd serve did not start; its log:"
	sed 's/^/     /' "$WORK/serve.log"
	exit 1
}
printf '%s   [phone] $ tetherd serve --listen 10.200.1.2:8443%s\n' "$G" "$N"
sed 's/^/     /' "$WORK/serve.out"

step "On the laptop: sudo tetherd up 'tether://…'" \
	"It creates the TUN device tether0, routes all traffic into it, points DNS at the" \
	"tunnel's resolver and carries every connection to the phone over one WebSocket." \
	"(In this demo: dns.mode resolvconf, and its crash journal in a scratch directory.)"
CFG="$WORK/up.yaml"
tt_write_up_config "$CFG"
sed -i 's/^  level: debug$/  level: info/' "$CFG"
tt_start_up up "$TT_URI" --config "$CFG"
if ! tt_wait_log 20 "$WORK/up.log" 'tunnel is up' "$TT_UP_PID"; then
	echo "   tetherd up did not come up; its log:"
	sed 's/^/     /' "$WORK/up.log"
	exit 1
fi
printf '%s   [laptop] $ sudo tetherd up "tether://10.200.1.2:8443?token=…&pin=…"%s\n' "$G" "$N"
grep -m1 'tunnel is up' "$WORK/up.log" | sed -E 's/token=[^&"]*/token=…/; s/^/     /'

step "Through the tunnel: name resolution and a web page" \
	"The laptop asks 10.255.77.2 (inside the tunnel); the phone resolves with its own DNS."
show laptop cat /etc/resolv.conf
show laptop dig +short internet.test
show laptop curl -sS --max-time 10 http://internet.test/
show laptop curl -sS --max-time 10 http://internet.test/big.sha256
show laptop curl -sS --max-time 10 "http://[2001:db8:100::10]/"

step "What tetherd up changed on the laptop" \
	"Policy routing, as wg-quick does it: everything not marked 0x7170 (the tunnel's own" \
	"socket) looks up table 7170, whose default route is tether0; the phone's address and" \
	"the LAN stay on the normal routes."
show_ip laptop rule
show_ip laptop route show table 7170
show_ip laptop -6 route show table 7170
if tt_has_command status; then
	printf '%s   [laptop] $ sudo tetherd status%s\n' "$G" "$N"
	sleep 1 # let it measure a rate
	ip netns exec "$LAPTOP" "$TT_TETHERD" status --config "$CFG" 2>&1 | sed 's/^/     /' || true
	if tt_has_command flows; then
		# A slow download (at most 4 s) so that there is a flow to list.
		ip netns exec "$LAPTOP" curl -sS --max-time 4 --limit-rate 1M -o /dev/null http://internet.test/big 2>/dev/null &
		slow=$!
		sleep 1
		printf '%s   [laptop] $ sudo tetherd flows%s\n' "$G" "$N"
		ip netns exec "$LAPTOP" "$TT_TETHERD" flows --config "$CFG" 2>&1 | sed 's/^/     /' || true
		kill "$slow" 2>/dev/null || true
		wait "$slow" 2>/dev/null || true
	fi
else
	echo "   ${D}(this tetherd has no 'status' command yet)${N}"
fi

step "Stop tetherd up (Ctrl-C)" "It removes its rules and routes and restores /etc/resolv.conf."
kill -INT "$TT_UP_PID"
if tt_wait_exit "$TT_UP_TPID" 10; then
	echo "   tetherd up exited with status $TT_EXIT"
else
	echo "   tetherd up is still running 10 s after Ctrl-C!"
fi
show_ip laptop rule
show_ip laptop route show table 7170
show laptop cat /etc/resolv.conf
show laptop curl -sS --max-time 2 http://198.51.100.10/

step "Clean up" "Stop the servers and delete the three namespaces."
tt_cleanup
left=$(ip netns list | grep -cE "^($LAPTOP|$PHONE|$INTERNET)( |\$)" || true)
echo "   namespaces left: $left"
printf '\n%sDone in %d s.%s Next: README.md, and "sudo make netns-test" for the full end-to-end suite.\n' "$B" $((SECONDS - T0)) "$N"
