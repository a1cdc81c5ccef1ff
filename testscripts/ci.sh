#!/usr/bin/env bash
# The README's second command: install what the tests need and run them
# all, as root. .ci/run runs exactly this, with CI set (then a test that
# would skip for want of root or a tool fails instead).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

# gcc and libc6-dev: the C workloads; python3: the Python workloads;
# redis-server, redis-cli, nginx, dnsmasq, memcached, postgresql (psql), tmux: real programs; script (bsdutils): a terminal.
# gcc-aarch64-linux-gnu, qemu-system-arm: the arm64 tests (testscripts/arm64vm.sh);
# qemu-system-x86, kmod (depmod), xz-utils: the kernel matrix's guests.
need=0
for tool in gcc python3 redis-server redis-cli script sshd ssh-keygen arping nft ss unshare nsenter strace nginx dnsmasq memcached psql tmux aarch64-linux-gnu-gcc qemu-system-aarch64 qemu-system-x86_64 depmod xz; do
	command -v "$tool" >/dev/null || need=1
done
if [ "$need" = 1 ]; then
	log=$(mktemp)
	if ! {
		DEBIAN_FRONTEND=noninteractive apt-get update -q &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
				gcc libc6-dev python3 redis-server redis-tools bsdutils iputils-arping openssh-server openssh-client nftables iproute2 util-linux strace nginx-light dnsmasq-base memcached postgresql tmux \
				gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm qemu-system-x86 kmod xz-utils
	} >"$log" 2>&1; then
		cat "$log" >&2
		echo "ci: apt-get failed (see above)" >&2
		exit 1
	fi
	rm -f "$log"
fi

# The binary must stay static.
bin=$(mktemp)
CGO_ENABLED=0 go build -o "$bin" .
linkage=$(ldd "$bin" 2>&1 || true)
if [[ $linkage != *"not a dynamic executable"* ]]; then
	echo "ci: the relocate binary is not statically linked" >&2
	exit 1
fi
rm -f "$bin"
CGO_ENABLED=0 go vet ./...
# arm64, the release's other architecture: it must build and vet (tests
# included); testscripts/arm64vm.sh runs it, further down.
GOARCH=arm64 CGO_ENABLED=0 go build -o /dev/null .
GOARCH=arm64 CGO_ENABLED=0 go vet ./...
kernels='TestKernelMatrix|TestKernelImages'
CGO_ENABLED=0 go test -count=1 -timeout 25m -skip "$kernels" ./...
# The VM tests run beside the fuzzers, which fuzz for a fixed time anyway:
# the kernel matrix (Debian's 6.1 and 6.12 amd64 kernels in QEMU, emulated:
# about 4 minutes on a quiet machine) and the arm64 engine for real
# (testscripts/arm64vm.sh: Debian's 6.12 arm64 kernel under
# qemu-system-aarch64, TCG).
matrix_log=$(mktemp)
CGO_ENABLED=0 go test -count=1 -timeout 35m -run "^($kernels)\$" -v ./testscripts/ >"$matrix_log" 2>&1 &
matrix=$!
arm64log=$(mktemp)
KERNELS=6.12 bash testscripts/arm64vm.sh >"$arm64log" 2>&1 &
arm64=$!
# Fuzz targets (image reader, /proc parsers, ssh_config, the migration
# protocol, the checkpoint decode), a minute each (about 13 minutes);
# FUZZTIME=10m bash testscripts/fuzz.sh for a longer hunt.
fuzz=0
bash testscripts/fuzz.sh || fuzz=$?
status=0
wait "$matrix" || status=$?
grep -E '^(=== RUN|--- |\s+kernels_test|ok|FAIL)|^        [|]' "$matrix_log" || true
if [ "$status" != 0 ]; then
	cat "$matrix_log" >&2
	echo "ci: the kernel matrix failed (above)" >&2
	exit 1
fi
rm -f "$matrix_log"
if ! wait "$arm64"; then
	cat "$arm64log" >&2
	echo "ci: the arm64 tests failed (see above)" >&2
	exit 1
fi
rm -f "$arm64log"
exit "$fuzz"
