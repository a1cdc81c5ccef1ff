#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 1m; CI runs this after
# the tests, about 12 minutes in all), the whole-checkpoint decoder in ckpt
# for FUZZTIME_CKPT (default 30s: each run frames an image). A longer hunt:
#   FUZZTIME=10m bash testscripts/fuzz.sh
# A crasher is saved under the package's testdata/fuzz/ and fails the run
# with the fuzzer's output. The Go fuzzer sometimes ends a clean run with
# "context deadline exceeded" when its time is up while a worker is busy;
# without a failing input that is not a finding, and is reported as such.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
fuzztime=${FUZZTIME:-1m}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for pkg in ./ckpt/image ./ckpt/proc ./ckpt ./sock ./transfer; do
	t=$fuzztime
	[ "$pkg" = ./ckpt ] && t=${FUZZTIME_CKPT:-${FUZZTIME:-30s}}
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg" >"$log" 2>&1; then
			echo "fuzz: $pkg $target: ok ($t)"
		elif grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "fuzz: $pkg $target: ok ($t; the fuzzer's end-of-time deadline error, no failing input)"
		else
			cat "$log" >&2
			echo "fuzz: $pkg $target: FAILED" >&2
			status=1
		fi
	done
done
exit $status
