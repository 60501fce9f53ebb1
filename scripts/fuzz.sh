#!/usr/bin/env bash
# Run every native Go fuzz target in the module, one at a time, for FUZZTIME
# each (default 10s).
#
#   FUZZTIME=2s bash scripts/fuzz.sh      # quick smoke run
#   FUZZTIME=10m bash scripts/fuzz.sh     # long run (what `make fuzz` does)
#
# Targets are discovered by grepping *_test.go files for `^func Fuzz`, then
# asking `go test -list '^Fuzz'` for the real names per package (this respects
# build constraints). New failing inputs are written by `go test` to the
# package's testdata/fuzz/<Target>/ directory: commit them as regression cases.
#
# Environment:
#   FUZZTIME     per-target fuzz duration or count (go test -fuzztime), default 10s
#   FUZZ_GRACE   extra seconds allowed per target for building and the seed
#                corpus before the target is killed as hung, default 600
#
# The summary gives, per target, the time taken, the inputs run (the fuzzer's last
# "execs" figure) and the size of the corpus: the fuzzer's own count of interesting
# inputs ("total") and the files kept for it in $GOCACHE/fuzz plus testdata/fuzz.
set -euo pipefail

FUZZTIME="${FUZZTIME:-10s}"
FUZZ_GRACE="${FUZZ_GRACE:-600}"
GO="${GO:-go}"
GOCACHE_DIR=$("$GO" env GOCACHE)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Outer kill timer: FUZZTIME (when it is a plain duration) plus FUZZ_GRACE.
limit=""
if command -v timeout >/dev/null 2>&1; then
	if [[ "$FUZZTIME" =~ ^([0-9]+)(s|m|h)$ ]]; then
		n="${BASH_REMATCH[1]}"
		case "${BASH_REMATCH[2]}" in
		s) limit=$((n + FUZZ_GRACE)) ;;
		m) limit=$((n * 60 + FUZZ_GRACE)) ;;
		h) limit=$((n * 3600 + FUZZ_GRACE)) ;;
		esac
	fi
fi

# Files that declare fuzz functions, skipping directories the go tool ignores
# (testdata, vendor, and names starting with '.' or '_').
files=$(grep -rl --include='*_test.go' '^func Fuzz' . 2>/dev/null |
	grep -Ev '/(testdata|vendor)/|/[._][^/]*/' | sort || true)

if [ -z "$files" ]; then
	echo "fuzz: no fuzz targets"
	exit 0
fi

dirs=$(printf '%s\n' "$files" | xargs -n1 dirname | sort -u)

summary=()
passed=0
failed=0
total_targets=0

for dir in $dirs; do
	pkg="./${dir#./}"
	if ! list_out=$("$GO" test -list '^Fuzz' "$pkg" 2>&1); then
		printf '%s\n' "$list_out"
		summary+=("FAIL  (go test -list)  $pkg")
		failed=$((failed + 1))
		continue
	fi
	names=$(printf '%s\n' "$list_out" | grep -E '^Fuzz[A-Za-z0-9_]*$' || true)
	if [ -z "$names" ]; then
		echo "fuzz: $pkg: no fuzz targets for $("$GO" env GOOS)/$("$GO" env GOARCH) (build constraints)"
		continue
	fi
	for name in $names; do
		total_targets=$((total_targets + 1))
		echo "=== fuzz $name in $pkg for $FUZZTIME"
		start=$SECONDS
		cmd=("$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg")
		if [ -n "$limit" ]; then
			cmd=(timeout -k 30 "$limit" "${cmd[@]}")
		fi
		# Go's fuzzer sometimes ends a time-limited run with only "context deadline
		# exceeded" when its deadline passes while a worker is busy (a loaded
		# machine); no input failed then, and no crasher is written. Such a run is
		# retried once, and counts as passed if it happens again without a crasher.
		crashdir="$pkg/testdata/fuzz/$name"
		before=$({ ls "$crashdir" 2>/dev/null || true; } | wc -l)
		for attempt in 1 2; do
			rc=0
			out=$("${cmd[@]}" 2>&1) || rc=$?
			printf '%s\n' "$out"
			after=$({ ls "$crashdir" 2>/dev/null || true; } | wc -l)
			if [ "$rc" -ne 0 ] && [ "$after" -eq "$before" ] &&
				grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
				echo "fuzz: $name: the fuzzer hit its own deadline (no failing input); attempt $attempt"
				[ "$attempt" -eq 2 ] && rc=0
				continue
			fi
			break
		done
		elapsed=$((SECONDS - start))
		execs=$(grep -oE 'execs: [0-9]+' <<<"$out" | tail -n1 | grep -oE '[0-9]+' || true)
		total=$(grep -oE '\(total: [0-9]+\)' <<<"$out" | tail -n1 | grep -oE '[0-9]+' || true)
		importpath=$("$GO" list "$pkg" 2>/dev/null || echo "$pkg")
		cached=$({ ls "$GOCACHE_DIR/fuzz/$importpath/$name" 2>/dev/null || true; } | wc -l)
		seeds=$({ ls "$crashdir" 2>/dev/null || true; } | wc -l)
		stats="${elapsed}s, ${execs:-0} execs, corpus ${total:-0} (files: $cached cached + $seeds in testdata)"
		if [ "$rc" -eq 0 ]; then
			summary+=("PASS  $name  $pkg  ($stats)")
			passed=$((passed + 1))
		elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			summary+=("FAIL  $name  $pkg  ($stats, killed after ${limit}s: hung?)")
			failed=$((failed + 1))
		else
			summary+=("FAIL  $name  $pkg  ($stats, exit $rc; new crashers go to $pkg/testdata/fuzz/$name/)")
			failed=$((failed + 1))
		fi
	done
done

echo
echo "fuzz summary (FUZZTIME=$FUZZTIME):"
if [ "${#summary[@]}" -eq 0 ]; then
	echo "  no fuzz targets for this platform"
else
	printf '  %s\n' "${summary[@]}"
fi
if [ "$total_targets" -eq 0 ] && [ "$failed" -eq 0 ]; then
	echo "fuzz: no fuzz targets"
	exit 0
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
