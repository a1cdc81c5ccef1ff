#!/usr/bin/env bash
# Runs relocate's arm64 engine for real: Debian's arm64 kernels under
# qemu-system-aarch64 -M virt -cpu max (TCG, via testscripts/vm), with the
# tests cross-compiled for arm64 (static Go test binaries, which are also
# the relocate under test) and the C workloads cross-compiled with
# aarch64-linux-gnu-gcc -static. The guest's root is this machine's
# (amd64) root shared read-only, so everything it runs comes from the share:
# the test binaries, the workloads and a static arm64 busybox (Debian's
# busybox-static, downloaded, never installed) for the scripts' sh, cat
# and grep. Prints each guest's test output; exits non-zero if any kernel
# failed. As root:
#
#	bash testscripts/arm64vm.sh                 # kernels 6.1 and 6.12, the arm64 subset
#	KERNELS=6.12 SCRIPTS='counter signals' bash testscripts/arm64vm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
repo=$PWD

kernels=${KERNELS:-6.1 6.12}
# Every area whose scripts need nothing but relocate, the workloads and
# busybox (no python, no servers, no nftables: the guest has no arm64
# user space of its own). Not here: pipeline (its awk must be POSIX awk
# fast enough; busybox's under TCG is not) and interrupt (its ^C cleanup
# deadline is shorter than a TCG guest takes to roll back), and signals
# until relocate restores POSIX timer ids without PR_TIMER_CREATE_RESTORE_IDS
# (Linux 6.15): on 6.1 and 6.12 its restore is refused for that, as on amd64.
scripts=${SCRIPTS:-counter threads memory tree events files sharedmem unixpair leave_running stopped_job pidns}

for tool in aarch64-linux-gnu-gcc qemu-system-aarch64 apt-get dpkg-deb; do
	command -v "$tool" >/dev/null || {
		echo "arm64vm: $tool is missing (apt-get install gcc-aarch64-linux-gnu qemu-system-arm)" >&2
		exit 1
	}
done

share=$(mktemp -d /tmp/relocate-arm64.XXXXXX)
trap 'rm -rf "$share"' EXIT
mkdir -p "$share/workloads" "$share/bin"

for src in testscripts/workloads/*.c; do
	name=$(basename "$src" .c)
	aarch64-linux-gnu-gcc -static -Wall -Werror -O1 -pthread -o "$share/workloads/$name" "$src" -lrt &
done
wait
GOARCH=arm64 CGO_ENABLED=0 go build -o "$share/workloads/goticker" ./testscripts/workloads/goticker
for pkg in testscripts ckpt ckpt/ptrace; do
	GOARCH=arm64 CGO_ENABLED=0 go test -c -o "$share/$(basename $pkg).test" ./$pkg
done

# busybox-static for arm64, from Debian bookworm, cached like the kernels.
cache=/var/cache/relocate-vm/busybox-arm64
if [ ! -x "$cache/bin/busybox" ]; then
	mkdir -p "$cache/lists/partial" "$cache/cache/archives/partial" "$cache/dl"
	echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" >"$cache/sources.list"
	opts=(-q -o "Dir::Etc::SourceList=$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache/cache"
		-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
	apt-get "${opts[@]}" update >/dev/null
	(cd "$cache/dl" && apt-get "${opts[@]}" download busybox-static >/dev/null)
	dpkg-deb -x "$(ls "$cache"/dl/busybox-static_*.deb | tail -1)" "$cache/x"
	mkdir -p "$cache/bin" && cp "$cache/x/bin/busybox" "$cache/bin/busybox"
	rm -rf "$cache/x" "$cache/lists" "$cache/cache"
fi
cp "$cache/bin/busybox" "$share/bin/busybox"
for c in modprobe sh awk cat grep sleep test mkfifo touch tail head kill ls rm mkdir echo true false sed tr wc; do
	ln -s busybox "$share/bin/$c"
done

# The guest mounts a fresh tmpfs on /tmp, which would hide a checkout
# there (a CI clone in /tmp): the tests run in a copy of their directories.
mkdir -p "$share/repo"
cp -a "$repo/ckpt" "$repo/testscripts" "$share/repo/"
repo=$share/repo

run=$(printf '%s|' $scripts)
cat >"$share/guest.sh" <<GUEST
# An emulated guest is often ten times slower: the scripts' waits stretch.
export PATH=$share/bin:/usr/bin:/bin CI=true RELOCATE_WORKLOADS=$share/workloads RELOCATE_WAIT_SCALE=10
echo "arm64vm: guest \$(uname -rm)"
# The kernel loads modules (unix_diag, ...) with this modprobe: the host's is amd64.
echo $share/bin/modprobe >/proc/sys/kernel/modprobe
rc=0
cd $repo/ckpt/ptrace && $share/ptrace.test -test.count=1 -test.v >/tmp/ptrace.out 2>&1 || rc=1
cd $repo/ckpt && $share/ckpt.test -test.count=1 >/tmp/ckpt.out 2>&1 || rc=1
cd $repo/testscripts && $share/testscripts.test -test.count=1 -test.timeout=30m -test.v \
	-test.parallel=2 -test.run 'TestScripts/^(${run%|})\$' >/tmp/scripts.out 2>&1 || rc=1
for f in /tmp/ptrace.out /tmp/ckpt.out /tmp/scripts.out; do
	grep -aE '^ *--- |^(ok|FAIL|PASS)' \$f
done
[ \$rc = 0 ] || cat /tmp/ptrace.out /tmp/ckpt.out /tmp/scripts.out
exit \$rc
GUEST

status=0
for k in $kernels; do
	echo "arm64vm: kernel $k"
	if ! go run ./testscripts/vm/vmrun -arch aarch64 -kernel "$k" -share "$share" -- "$share/bin/busybox" sh "$share/guest.sh" |
		grep -avE '^\[ *[0-9]+\.[0-9]+\]'; then
		status=1
	fi
done
exit $status
