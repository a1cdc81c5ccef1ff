#!/usr/bin/env bash
# The README's second command: install what the tests need and run them all,
# as root. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v gcc >/dev/null || ! command -v python3 >/dev/null || ! command -v redis-server >/dev/null ||
	! command -v script >/dev/null; then
	apt-get update -q
	apt-get install -y -q gcc libc6-dev python3 redis-server redis-tools bsdutils
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
# The binary must stay static.
CGO_ENABLED=0 go build -o /tmp/relocate-ci-bin .
linkage=$(ldd /tmp/relocate-ci-bin 2>&1 || true)
if [[ $linkage != *"not a dynamic executable"* ]]; then
	echo "ci: the relocate binary is not statically linked" >&2
	exit 1
fi
rm -f /tmp/relocate-ci-bin
CGO_ENABLED=0 go vet ./...
CGO_ENABLED=0 go test -count=1 -timeout 20m ./...
