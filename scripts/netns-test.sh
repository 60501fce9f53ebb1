#!/usr/bin/env bash
# Run the network-namespace end-to-end suites: every executable test/e2e/*.sh,
# one at a time, in name order, as root.
#
# Each suite creates (and removes, also on failure) its own network namespaces
# and must never touch the root namespace: no routes, rules, interfaces,
# nftables or resolv.conf changes outside namespaces it made itself, and
# traffic only to loopback or addresses inside those namespaces.
#
# Skips (exit 0, with a message) when not root or when `ip netns` does not work.
#
# Environment:
#   NETNS_SUITE_TIMEOUT  seconds before a suite is killed, default 900
#   NETNS_SUITES         optional space-separated list of suite files to run
#
# A suite exits 0 on success, 77 to report itself skipped, anything else on failure.
set -euo pipefail

NETNS_SUITE_TIMEOUT="${NETNS_SUITE_TIMEOUT:-900}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

suites=()
if [ -n "${NETNS_SUITES:-}" ]; then
	read -r -a suites <<<"$NETNS_SUITES"
else
	shopt -s nullglob
	for f in test/e2e/*.sh; do
		[ "$(basename "$f")" = lib.sh ] && continue # sourced by the suites, not one
		if [ -x "$f" ]; then
			suites+=("$f")
		else
			echo "netns-test: warning: $f is not executable, not run (chmod +x it)"
		fi
	done
	shopt -u nullglob
fi

if [ "${#suites[@]}" -eq 0 ]; then
	echo "netns-test: no netns suites yet"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "netns-test: SKIPPED: must run as root (${#suites[@]} suite(s) not run)"
	exit 0
fi
if ! command -v ip >/dev/null 2>&1; then
	echo "netns-test: SKIPPED: 'ip' (iproute2) not found (${#suites[@]} suite(s) not run)"
	exit 0
fi

# Probe that network namespaces really work here (containers may forbid it).
probe="tetherd-probe-$$"
if ! ip netns add "$probe" >/dev/null 2>&1; then
	echo "netns-test: SKIPPED: 'ip netns add' does not work here (${#suites[@]} suite(s) not run)"
	exit 0
fi
if ! ip netns exec "$probe" ip link set lo up >/dev/null 2>&1; then
	ip netns del "$probe" >/dev/null 2>&1 || true
	echo "netns-test: SKIPPED: 'ip netns exec' does not work here (${#suites[@]} suite(s) not run)"
	exit 0
fi
ip netns del "$probe" >/dev/null 2>&1 || true

summary=()
passed=0
failed=0
skipped=0
for suite in "${suites[@]}"; do
	echo "=== netns suite $suite"
	start=$SECONDS
	rc=0
	if command -v timeout >/dev/null 2>&1; then
		(cd "$root" && timeout -k 30 "$NETNS_SUITE_TIMEOUT" "./${suite#./}") </dev/null || rc=$?
	else
		(cd "$root" && "./${suite#./}") </dev/null || rc=$?
	fi
	elapsed=$((SECONDS - start))
	if [ "$rc" -eq 0 ]; then
		summary+=("PASS  $suite  (${elapsed}s)")
		passed=$((passed + 1))
	elif [ "$rc" -eq 77 ]; then
		summary+=("SKIP  $suite  (${elapsed}s, exit 77)")
		skipped=$((skipped + 1))
	elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		summary+=("FAIL  $suite  (killed after ${NETNS_SUITE_TIMEOUT}s)")
		failed=$((failed + 1))
	else
		summary+=("FAIL  $suite  (${elapsed}s, exit $rc)")
		failed=$((failed + 1))
	fi
done

echo
echo "netns-test summary:"
printf '  %s\n' "${summary[@]}"
echo "netns: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
