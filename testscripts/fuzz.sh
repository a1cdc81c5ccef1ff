#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 30s; CI runs this
# after the tests). A longer hunt: FUZZTIME=10m bash testscripts/fuzz.sh
# Only failures are printed; a crasher is saved under the package's
# testdata/fuzz/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
fuzztime=${FUZZTIME:-30s}
status=0
for pkg in ./ckpt/image ./ckpt/proc ./transfer; do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		log=$(mktemp)
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
			echo "fuzz: $pkg $target: ok ($fuzztime)"
		else
			cat "$log" >&2
			echo "fuzz: $pkg $target: FAILED" >&2
			status=1
		fi
		rm -f "$log"
	done
done
exit $status
