#!/usr/bin/env bash
# The README's first command: build relocate, make two simulated hosts on
# this machine (network, PID and mount namespaces, an sshd each: see
# simhosts.sh), start a counter on "src", move it alive to "dst" with
# `relocate PID dst` over SSH, and show it counting on there with the same
# PID. Then checkpoint it to a file on dst and restore it from the file.
# Run as root from anywhere; leaves ./relocate built in the repository and
# nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (namespaces, ptrace, clone3 with set_tid)" >&2
	exit 1
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
need=
for tool in gcc sshd ssh-keygen arping unshare nsenter; do
	command -v "$tool" >/dev/null || need=1
done
if [ -n "$need" ]; then
	echo "== installing gcc, openssh-server and arping for the demo"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		gcc libc6-dev openssh-server openssh-client iputils-arping iproute2 util-linux >/dev/null
fi

work=$(mktemp -d /tmp/relocate-demo.XXXXXX)
sim=testscripts/simhosts.sh
cleanup() {
	bash "$sim" down "$work/hosts" >/dev/null 2>&1 || true
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
on() { bash "$sim" exec "$work/hosts" "$@"; }
counts_on() {
	local before
	before=$(count)
	if advanced "$((before + 10))"; then
		echo "   $1 counts on: $before -> $(count)"
	else
		echo "== demo FAILED: the counter is stuck at $(count)" >&2
		exit 1
	fi
}

echo "== go build -o relocate .   (static, CGO_ENABLED=0)"
CGO_ENABLED=0 go build -o relocate .
gcc -O1 -o "$work/counter" testscripts/workloads/counter.c
mkdir "$work/state"

echo "== two simulated hosts: src and dst, each with its own sshd"
mkdir "$work/hosts"
n=$((200 + RANDOM % 50))
until bash "$sim" up "$work/hosts" "$n" >"$work/hosts.env" 2>"$work/hosts.err"; do
	if ! grep -q 'in use' "$work/hosts.err"; then
		cat "$work/hosts.err" >&2
		exit 1
	fi
	n=$((n + 1))
done
cfg=$work/hosts/ssh_config
grep -E '^(SRC_IP|DST_IP)=' "$work/hosts.env" | sed 's/^/   /'

echo "== starting a counter on src: it writes its count to a file 10 times a second"
on src sh -c 'echo 1000 > /proc/sys/kernel/ns_last_pid' # PIDs that dst has free
pid=$(bash "$sim" start "$work/hosts" src /dev/null "$work/counter" "$work/state")
advanced 20
echo "   pid $pid on src has counted to $(count)"

echo "== on src: relocate $pid -F ssh_config dst"
on src "$PWD/relocate" "$pid" -F "$cfg" dst
echo "   on src now: $(on src sh -c "cat /proc/$pid/comm 2>/dev/null || echo 'no pid $pid'")"
echo "   on dst now: $(on dst sh -c "cat /proc/$pid/comm 2>/dev/null || echo 'no pid $pid'")"
counts_on "pid $pid on dst"

echo "== on dst: relocate dump $pid -o counter.img, then relocate restore counter.img"
on dst "$PWD/relocate" dump "$pid" -o "$work/counter.img"
on dst "$PWD/relocate" restore "$work/counter.img" >/dev/null
counts_on "pid $pid, restored from the file,"
echo "== demo OK"
