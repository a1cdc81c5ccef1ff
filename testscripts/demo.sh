#!/usr/bin/env bash
# The README's first command: build relocate, start a counter, checkpoint it
# to a file, restore it, and show it still counting. Run as root.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/relocate-demo.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

echo "== building relocate (static)"
CGO_ENABLED=0 go build -o "$work/relocate" .
gcc -O1 -o "$work/counter" testscripts/workloads/counter.c
mkdir "$work/state"

echo "== starting a counter"
# Only stdio for the counter: a descriptor inherited from the caller (a pipe
# to some other process) is something relocate refuses to carry.
(
	for fd in $(ls /proc/self/fd); do
		[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true
	done
	exec setsid "$work/counter" "$work/state" </dev/null >/dev/null 2>&1
) &
pid=$!
disown "$pid"
while [ ! -s "$work/state/ready" ]; do sleep 0.1; done
sleep 1
echo "   pid $pid counted to $(cat "$work/state/count")"

echo "== relocate dump $pid -o job.img"
"$work/relocate" dump "$pid" -o "$work/job.img"
echo "   process $pid is gone: $(kill -0 "$pid" 2>/dev/null && echo no || echo yes)"
"$work/relocate" inspect "$work/job.img" | sed -n '1,4p'

echo "== relocate restore job.img"
"$work/relocate" restore "$work/job.img"
before=$(cat "$work/state/count")
sleep 1
after=$(cat "$work/state/count")
echo "   pid $pid counts on: $before -> $after"
[ "$after" -gt "$before" ] && echo "== demo OK" || { echo "== demo FAILED"; exit 1; }
