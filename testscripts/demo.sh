#!/usr/bin/env bash
# The README's first command: build relocate, start a counter, checkpoint it
# to a file (which ends it), restore it with its PID, and show it still
# counting. Run as root from anywhere; leaves ./relocate built in the
# repository.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (relocate uses ptrace and clone3 with set_tid)" >&2
	exit 1
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
if ! command -v gcc >/dev/null; then
	echo "== installing gcc for the demo's counter"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
fi

work=$(mktemp -d /tmp/relocate-demo.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

# count prints the counter's last count; advanced waits (10 s at most) until
# it passes $1.
count() { cat "$work/state/count" 2>/dev/null || echo 0; }
advanced() {
	for _ in $(seq 100); do
		[ "$(count)" -gt "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

echo "== go build -o relocate .   (static, CGO_ENABLED=0)"
CGO_ENABLED=0 go build -o relocate .
gcc -O1 -o "$work/counter" testscripts/workloads/counter.c
mkdir "$work/state"

echo "== starting a counter: it writes its count to a file 10 times a second"
# In a session of its own, with stdio only: relocate refuses a descriptor
# shared with a process outside the checkpoint (such as a pipe to this
# shell's caller).
(
	for fd in /proc/$BASHPID/fd/*; do
		fd=${fd##*/}
		if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
	done
	exec setsid "$work/counter" "$work/state" </dev/null >/dev/null 2>&1
) &
pid=$!
disown "$pid"
advanced 20
echo "   pid $pid has counted to $(count)"

echo "== relocate dump $pid -o counter.img"
./relocate dump "$pid" -o "$work/counter.img"
if kill -0 "$pid" 2>/dev/null; then gone=no; else gone=yes; fi
echo "   pid $pid gone: $gone; the count stays at $(count)"

echo "== relocate inspect counter.img"
./relocate inspect "$work/counter.img" | sed -n '1,5p'

echo "== relocate restore counter.img"
./relocate restore "$work/counter.img"
before=$(count)
if advanced "$((before + 10))"; then
	echo "   pid $pid counts on: $before -> $(count)"
	echo "== demo OK"
else
	echo "== demo FAILED: the restored counter is stuck at $(count)" >&2
	exit 1
fi
