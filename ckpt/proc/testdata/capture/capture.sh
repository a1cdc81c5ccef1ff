#!/bin/bash
# capture.sh regenerates testdata/real from a live workload.c process:
# a comm with parentheses, mappings of files with spaces and " (deleted)" in
# their names, POSIX timers, eventfd, epoll, inotify, fanotify, timerfd,
# signalfd, pidfd, file locks, threads, children and a zombie.
# Needs gcc; fanotify needs CAP_SYS_ADMIN. Run from anywhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$here/.." && pwd)/real
tmp=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ]; then { kill "$pid" && wait; } 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

gcc -O1 -pthread -o "$tmp/workload" "$here/workload.c"
mkdir "$tmp/dir with space"
coproc W { "$tmp/workload" "$tmp/dir with space"; }
read -r pid zombie <&"${W[0]}"

mkdir -p "$out"
rm -f "$out"/*
p=/proc/$pid
for f in maps smaps stat status timers auxv limits; do
	cat "$p/$f" >"$out/$f"
done
for t in $(ls "$p/task"); do
	if [ "$t" != "$pid" ]; then
		cat "$p/task/$t/stat" >"$out/task_stat"
		cat "$p/task/$t/status" >"$out/task_status"
		break
	fi
done
cat /proc/$zombie/stat >"$out/zombie_stat"
cat /proc/$zombie/status >"$out/zombie_status"
cat /proc/$zombie/maps >"$out/zombie_maps"
cat /proc/2/stat >"$out/kthread_stat"
cat /proc/2/status >"$out/kthread_status"

for fd in $(ls "$p/fd"); do
	link=$(readlink "$p/fd/$fd" || true)
	info=$p/fdinfo/$fd
	name=
	case $link in
	"anon_inode:[eventfd]") name=eventfd ;;
	"anon_inode:[eventpoll]") name=epoll ;;
	"anon_inode:inotify") name=inotify ;;
	"anon_inode:[fanotify]") name=fanotify ;;
	"anon_inode:[signalfd]") name=signalfd ;;
	"anon_inode:[pidfd]") name=pidfd ;;
	"anon_inode:[timerfd]")
		if grep -q '^settime flags: 01' "$info"; then name=timerfd_abs; else name=timerfd; fi ;;
	*"/locked file")
		if grep -q FLOCK "$info"; then name=flock; else name=posixlock; fi ;;
	/memfd:*) name=memfd ;;
	pipe:*) [ "$fd" = 0 ] && name=pipe ;;
	esac
	if [ -n "$name" ]; then cat "$info" >"$out/fdinfo_$name"; fi
done
echo "captured pid $pid into $out"
