#!/usr/bin/env bash
# migrate.sh: how long a heap-like process is frozen, and for how long it
# moves, when relocate migrates it between the two simulated hosts, side by
# side with a local `relocate dump` of the same process in the same run.
# Not run in CI (it takes minutes and its figures depend on the machine).
# Run as root from anywhere:
#
#   bash testscripts/bench/migrate.sh [-n RUNS] [-s "MIB..."] [-m "MODES..."]
#
# Every figure is the median of RUNS (3) runs; the modes alternate within a
# run. Modes: dump (relocate dump --leave-running to a file on the host's
# tmpfs), stop (relocate PID dst --precopy=off), precopy (relocate PID dst),
# fast (pre-copy of a process rewriting 128 MiB as fast as it can: throttled).
# The workload is testscripts/workloads/heap.c: MIB of malloc'd text-like
# memory, 16 MiB of it rewritten by a thread at about 256 MB/s; every
# migrated copy must pass its own check (cold checksum, hot pages against
# their stamps, the writer still running) or the benchmark fails.
#
# MB/s is raw memory per second frozen: the throughput of dump and stop
# (for precopy and fast it only says how little of the memory waited for
# the freeze). The machine's load is printed first: on a shared machine the
# modes of one run are comparable with each other, not with another run.
#
# BENCH_ARGS="-vv --log-file /tmp/x.log" adds arguments to every migration.
# RELOCATE_PPROF=DIR makes relocate write CPU profiles there (see
# cmd/profile.go); the benchmark passes it through to both hosts.
set -eEuo pipefail
trap 'echo "bench: line $LINENO: $BASH_COMMAND: failed (status $?)" >&2' ERR

runs=3
sizes="256 1024"
modes="dump stop precopy fast"
while getopts n:s:m: o; do
	case $o in
	n) runs=$OPTARG ;;
	s) sizes=$OPTARG ;;
	m) modes=$OPTARG ;;
	*) exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
sim=$repo/testscripts/simhosts.sh
work=$(mktemp -d /tmp/relocate-bench.XXXXXX)
hosts=$work/hosts
results=$work/results
: >"$results"
cleanup() {
	bash "$sim" down "$hosts" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo" && CGO_ENABLED=0 go build -o "$work/relocate" .)
gcc -Wall -Werror -O1 -pthread -o "$work/heap" "$repo/testscripts/workloads/heap.c"
# dst has no relocate: every migration uploads it (the same for every mode).
reloc=$work/relocate

for n in $(seq 230 250); do
	if bash "$sim" up "$hosts" "$n" >"$work/env" 2>"$work/up.err"; then
		break
	fi
	[ $? = 3 ] || { cat "$work/up.err" >&2; exit 1; }
done
# shellcheck disable=SC1091
. <(sed 's/^/export /' "$work/env")

hexec() { bash "$sim" exec "$hosts" "$@"; }

# start MIB HOT RATE: starts the workload in src; sets $pid (in src) and $state.
start() {
	state=$work/state.$RANDOM
	mkdir -p "$state"
	# PIDs high in src are free on dst.
	hexec src sh -c "echo $((2000 + RANDOM % 20000)) > /proc/sys/kernel/ns_last_pid"
	# Without the descriptors this script holds (pipes of $(...)): a
	# process with a pipe to outside its tree cannot be dumped.
	pid=$(bash "$sim" start "$hosts" src "$state/log" bash -c 'for f in /proc/$$/fd/*; do f=${f##*/}; [ "$f" -gt 2 ] && eval "exec $f>&-"; done 2>/dev/null; exec "$@"' heap "$work/heap" "$state" "$1" "$2" "$3")
	for _ in $(seq 600); do
		[ -f "$state/ready" ] && return 0
		sleep 0.1
	done
	echo "bench: the workload did not get ready" >&2
	exit 1
}

# verdict: asks the workload (wherever it runs now) to check itself.
verdict() {
	rm -f "$state/verdict"
	touch "$state/check"
	for _ in $(seq 600); do
		if [ -f "$state/verdict" ]; then
			if ! grep -q '^OK' "$state/verdict"; then
				echo "bench: the workload failed its check: $(cat "$state/verdict")" >&2
				exit 1
			fi
			return 0
		fi
		sleep 0.1
	done
	echo "bench: no verdict from the workload" >&2
	exit 1
}

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | tail -1; }

ms() { date +%s%3N; }

# one MODE MIB: one measured run; appends "mode mib frozen total bytes raw" to results.
one() {
	local mode=$1 mib=$2 hot=16 rate=64 out t0 t1 args
	[ "$mode" = fast ] && hot=128 rate=0
	start "$mib" "$hot" "$rate"
	verdict
	t0=$(ms)
	case $mode in
	dump)
		out=$(hexec src "$reloc" dump "$pid" -o /dev/shm/relocate-bench-$$.img --leave-running --json --quiet)
		t1=$(ms)
		hexec src rm -f /dev/shm/relocate-bench-$$.img
		echo "$mode $mib $(field frozen_ms <<<"$out") $((t1 - t0)) $(field bytes_stored <<<"$out") $(field bytes_raw <<<"$out") -" >>"$results"
		verdict
		hexec src kill -9 "$pid"
		return
		;;
	stop) args=(--precopy=off) && { "$reloc" --help | grep -q -- --precopy || args=(); } ;;
	*) args=() ;;
	esac
	# shellcheck disable=SC2086 # BENCH_ARGS is words on purpose
	out=$(hexec src "$reloc" "$pid" -F "$SSH_CONFIG" dst --json --quiet "${args[@]}" ${BENCH_ARGS:-})
	t1=$(ms)
	echo "$mode $mib $(field frozen_ms <<<"$out") $((t1 - t0)) $(field bytes_sent <<<"$out") $(field bytes_raw <<<"$out") $(sed -n 's/.*"throttle":\([0-9.]*\)[,}].*/\1/p' <<<"$out")" >>"$results"
	verdict
	hexec dst kill -9 "$pid"
}

echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$runs"); do
	for mib in $sizes; do
		for mode in $modes; do
			echo "bench: run $r, $mib MiB, $mode" >&2
			one "$mode" "$mib"
		done
	done
done

# The table: the median of each column per (mode, size); throughput is
# memory (raw bytes) per second frozen, from the median frozen time.
med() { # med MODE MIB COLUMN
	awk -v m="$1" -v s="$2" -v c="$3" '$1 == m && $2 == s { print $c }' "$results" | sort -n |
		awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
printf '%-8s %6s %10s %10s %12s %12s %8s %9s\n' mode MiB frozen_ms total_ms sent_bytes raw_bytes MB/s throttle
for mib in $sizes; do
	for mode in $modes; do
		f=$(med "$mode" "$mib" 3)
		[ -n "$f" ] || continue
		raw=$(med "$mode" "$mib" 6)
		printf '%-8s %6s %10s %10s %12s %12s %8s %9s\n' "$mode" "$mib" "$f" "$(med "$mode" "$mib" 4)" \
			"$(med "$mode" "$mib" 5)" "$raw" "$(awk -v r="$raw" -v f="$f" 'BEGIN { if (f > 0) printf "%.0f", r / 1e6 / (f / 1000) }')" \
			"$(med "$mode" "$mib" 7)"
	done
done
echo "raw results (mode MiB frozen_ms total_ms sent raw throttle):" >&2
cat "$results" >&2
