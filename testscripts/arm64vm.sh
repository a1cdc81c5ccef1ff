#!/usr/bin/env bash
# Runs relocate's arm64 engine for real: Debian's arm64 kernels under
# qemu-system-aarch64 -M virt -cpu max (TCG, via testscripts/vm), with the
# tests cross-compiled for arm64 (static Go test binaries, which are also
# the relocate under test) and the C workloads cross-compiled with
# aarch64-linux-gnu-gcc -static. The guest's root is this machine's
# (amd64) root shared read-only under a tmpfs overlay, so its arm64 user
# space comes from elsewhere: the test binaries and the workloads from the
# share, and Debian bookworm's arm64 packages of busybox-static (the
# scripts' sh, cat, grep, awk, ...) and python3.11 (the scripts' python3),
# downloaded and unpacked, never installed, into /var/cache/relocate-vm.
# Prints each guest's test output; exits non-zero if any kernel failed.
# As root:
#
#	bash testscripts/arm64vm.sh                 # kernels 6.1 and 6.12, the arm64 subset
#	KERNELS=6.12 SCRIPTS='counter signals' bash testscripts/arm64vm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
repo=$PWD

kernels=${KERNELS:-6.1 6.12}
# The kernel matrix's areas (kernels_test.go: matrixAreas) plus shared
# memory, --leave-running, a job-control stop, --pidns and a Go program.
# Not here: interrupt (its ^C cleanup deadline is shorter than a TCG guest
# takes to roll back).
scripts=${SCRIPTS:-memory threads signals events files pipeline tree unixpair udp_queue tcp_established syslog_client counter sharedmem leave_running stopped_job pidns go_program}

for tool in aarch64-linux-gnu-gcc qemu-system-aarch64 apt-get dpkg-deb flock; do
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
cp testscripts/workloads/*.py "$share/workloads/"
for pkg in testscripts ckpt ckpt/ptrace; do
	GOARCH=arm64 CGO_ENABLED=0 go test -c -o "$share/$(basename $pkg).test" ./$pkg
done

# The guest's arm64 user space, from Debian bookworm's arm64 packages,
# downloaded with a private apt configuration (the host's apt and dpkg
# state are left alone) and unpacked into the cache once, like the kernels:
# the guest sees the cache through its share of this machine's root.
# busybox-static: sh and the other tools of the scripts (its sh runs its
# own applets before PATH's programs, awk included); python3.11 with its
# standard library: the peers of udp_queue and tcp_established, the
# keep-alive client of go_program and, in syslog_client, the interpreter
# dumped and restored; libc6 and the libraries they link (the standard
# library's other extension modules, whose libraries are left out, are not
# imported by the scripts). About 10 MB to download.
userland_pkgs="busybox-static python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libexpat1 zlib1g libssl3"
userland=/var/cache/relocate-vm/bookworm-arm64-userland
mkdir -p "$userland"
exec 9>"$userland/.lock"
flock 9 # another run may be unpacking it
if [ "$(cat "$userland/root.pkgs" 2>/dev/null)" != "$userland_pkgs" ]; then
	rm -rf "$userland/root" "$userland/root.pkgs" "$userland/tmp" "$userland/dl"
	mkdir -p "$userland/lists/partial" "$userland/cache/archives/partial" "$userland/dl" "$userland/tmp"
	echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" >"$userland/sources.list"
	opts=(-q -o "Dir::Etc::SourceList=$userland/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$userland/lists" -o "Dir::Cache=$userland/cache"
		-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
	apt-get "${opts[@]}" update >/dev/null
	(cd "$userland/dl" && apt-get "${opts[@]}" download $userland_pkgs >/dev/null)
	for deb in "$userland"/dl/*.deb; do
		dpkg-deb -x "$deb" "$userland/tmp"
	done
	rm -rf "$userland"/tmp/usr/share/{doc,man,lintian,locale} "$userland/tmp/usr/lib/aarch64-linux-gnu/gconv"
	mv "$userland/tmp" "$userland/root"
	echo "$userland_pkgs" >"$userland/root.pkgs"
	rm -rf "$userland/dl" "$userland/lists" "$userland/cache"
fi
exec 9>&-
arm64root=$userland/root
cp "$arm64root/bin/busybox" "$share/bin/busybox"
for c in modprobe sh awk cat grep sleep test mkfifo touch tail head kill ls rm mkdir echo true false sed tr wc ln; do
	ln -s busybox "$share/bin/$c"
done
ln -s "$arm64root/usr/bin/python3.11" "$share/bin/python3"

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
# Debian's arm64 python3 is dynamically linked: its loader and libraries
# where it looks for them, in the guest's root (a tmpfs overlay: nothing
# reaches this machine's).
ln -s $arm64root/lib/ld-linux-aarch64.so.1 /lib/ld-linux-aarch64.so.1
mkdir -p /usr/lib/aarch64-linux-gnu
for lib in $arm64root/lib/aarch64-linux-gnu/* $arm64root/usr/lib/aarch64-linux-gnu/*; do
	ln -s \$lib /usr/lib/aarch64-linux-gnu/
done
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
