#!/usr/bin/env bash
# simhosts.sh: two simulated hosts, "src" and "dst", on one Linux machine,
# for migrating a process between "machines" without a second machine. The
# test suite drives it (hosts_test.go) and so can a demo. Run as root.
#
#   bash simhosts.sh up DIR N [jump]   make the hosts, subnet 10.78.N.0/24
#   bash simhosts.sh down DIR          remove what up made (idempotent)
#   bash simhosts.sh exec DIR HOST CMD...         run CMD in HOST
#   bash simhosts.sh start DIR HOST LOG CMD...    start CMD detached in HOST
#   bash simhosts.sh vip DIR HOST add|del         move the service address
#
# A host is a long-lived init (PID 1 of new PID, network, mount and UTS
# namespaces; it reaps orphans) whose /proc shows the host's own PIDs, with
# a private tmpfs at /run/relocate-sim for host-local files, its own
# /run/sshd and /run/relocate (migration state records), hostname HOST, an eth0 on the bridge rlbN of the root
# namespace (10.78.N.1) and an sshd on port 22 of its address: src is
# 10.78.N.2, dst 10.78.N.3. The service address VIP=10.78.N.100 belongs to
# no host until `vip DIR HOST add` gives it to one (and announces it with a
# gratuitous ARP); `vip DIR HOST del` takes it away. Both work from the
# root namespace and from inside HOST (a hook run there).
#
# up prints KEY=VALUE lines (also kept in DIR/env): SRC_IP DST_IP VIP
# SSH_CONFIG KNOWN_HOSTS WRONG_KNOWN_HOSTS IDENTITY SRC_PID DST_PID (the
# inits' PIDs in the root namespace) BRIDGE SUBNET (N) HOSTS_DIR SIMHOSTS
# (this script). `ssh -F $SSH_CONFIG src|dst` logs in as root with a
# throwaway key, checking the host key against DIR/known_hosts;
# DIR/wrong_known_hosts holds another key for both addresses. In the hosts
# root's shell rc files are masked and sshd sets
# PATH=/usr/bin:/bin:/usr/sbin:/sbin, so a login finds only what is
# installed system-wide, and TMPDIR=DIR/HOST/tmp (a test can see what a
# login left in its temporary directory). DIR/HOST/sshd.pid holds sshd's PID in HOST. /sys
# is the root namespace's (/sys/class/net lists its links, not HOST's).
#
# With "jump", a third host "jump" (10.78.N.4, an sshd and nothing else)
# is the only one dst takes SSH connections from (an nftables table
# simhosts_jump in dst drops the others): dst is then reached with
# ProxyJump jump, or a ProxyCommand through it. JUMP_IP is printed.
#
# Certificates: DIR/cert_ed25519 is a client key that is in no
# authorized_keys file; DIR/user_cert.pub certifies it for root, signed by
# DIR/user_ca, which every sshd trusts (TrustedUserCAKeys). Each sshd also
# presents a host certificate signed by DIR/host_ca, and
# DIR/ca_known_hosts holds only "@cert-authority 10.78.N.* host_ca.pub".
# ssh_config has, besides the hosts, "dstcert" (dst with the certificate
# and ca_known_hosts) and "dstnocert" (dst with the bare key of the
# certificate): both go through jump when it is up. Printed: CERT_IDENTITY
# USER_CERT CA_KNOWN_HOSTS.
#
# down kills the inits (which kills every process of the hosts) and deletes
# the links up made; it leaves DIR's files (keys, logs) to the caller.
# /run/relocate-sim and /run/sshd are left as empty directories in the root
# namespace: they are the mount points of every running host's tmpfs, and
# removing a mount point unmounts it in all namespaces.
set -eEuo pipefail
trap 'echo "simhosts: line $LINENO: $BASH_COMMAND: failed (status $?)" >&2' ERR
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}
HOSTS=(src dst)

die() {
	echo "simhosts: $*" >&2
	exit 1
}

# try DESC CMD...: runs CMD; on failure dies with DESC and CMD's output on
# one line.
try() {
	local desc=$1 out
	shift
	if ! out=$("$@" 2>&1); then
		die "$desc: $(echo "$out" | tr '\n' ' ' | sed 's/ *$//')"
	fi
}

ipof() { # ipof N HOST
	case $2 in
	src) echo "10.78.$1.2" ;;
	dst) echo "10.78.$1.3" ;;
	jump) echo "10.78.$1.4" ;;
	*) die "unknown host $2 (src, dst or jump)" ;;
	esac
}

nsinode() { stat -L -c %i "/proc/$1/ns/$2" 2>/dev/null; }
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# initpid DIR HOST: the init's global PID, if it is still that process.
initpid() {
	local d=$1/$2 pid
	pid=$(cat "$d/init.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ "$(nsinode "$pid" pid)" = "$(cat "$d/pidns" 2>/dev/null)" ] || return 1
	echo "$pid"
}

# inhost DIR HOST: whether this process already runs in HOST's namespaces
# (a hook run there, where the root namespace's PIDs mean nothing).
inhost() {
	[ "$(stat -L -c %i /proc/self/ns/net)" = "$(cat "$1/$2/netns" 2>/dev/null)" ] &&
		[ "$(stat -L -c %i /proc/self/ns/pid)" = "$(cat "$1/$2/pidns" 2>/dev/null)" ]
}

# enter DIR HOST CMD...: runs CMD in HOST with the current directory.
enter() {
	local dir=$1 host=$2 pid
	shift 2
	if inhost "$dir" "$host"; then
		exec "$@"
	fi
	pid=$(initpid "$dir" "$host") || die "host $host of $dir is not up (or not seen from here: run this in the root namespace or in $host)"
	exec nsenter -t "$pid" --net --pid --mount --uts --wdns="$PWD" -- "$@"
}

# The init of a host, as PID 1: its mounts, then reaping forever.
# Arguments: DIR HOST. up writes it to DIR/hostinit.sh.
read -r -d '' INIT <<'EOF' || true
set -e
mount -t tmpfs -o mode=0755,size=64m simhost-local /run/relocate-sim
mount -t tmpfs -o mode=0755,size=1m simhost-sshd /run/sshd
mount -t tmpfs -o mode=0700,size=1m simhost-state /run/relocate
for f in /root/.bashrc /root/.profile /root/.bash_profile /root/.bash_login; do
	if [ -f "$f" ]; then mount --bind /dev/null "$f"; fi
done
echo "$2" >/proc/sys/kernel/hostname
echo "$$" >"$1/$2/init.ready"
set +e
trap '' TERM INT HUP
while :; do
	sleep infinity &
	wait
done
EOF

cmd_up() {
	[ $# = 2 ] || { [ $# = 3 ] && [ "$3" = jump ]; } || die "usage: simhosts.sh up DIR N [jump]"
	local dir=$1 n=$2 h
	if [ $# = 3 ]; then
		HOSTS=(src dst jump)
	fi
	[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "up: N must be 1..250, not $n"
	[[ $dir != *[[:space:]\'\"\\\$]* ]] || die "up: DIR must not contain spaces, quotes, \\ or \$: $dir"
	[ "$(id -u)" = 0 ] || die "up: must run as root"
	for t in unshare nsenter ip ssh ssh-keygen arping setsid timeout; do
		command -v "$t" >/dev/null || die "up: $t is missing (util-linux, iproute2, openssh-client, iputils-arping)"
	done
	[ -x /usr/sbin/sshd ] || die "up: /usr/sbin/sshd is missing (apt-get install openssh-server)"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ ! -e "$dir/n" ] || die "up: $dir is already up (simhosts.sh down $dir first)"
	if [ -e "/sys/class/net/rlb$n" ]; then
		echo "simhosts: up: bridge rlb$n exists: subnet $n is in use" >&2
		exit 3
	fi
	echo "$n" >"$dir/n"
	echo "${HOSTS[*]}" >"$dir/hosts"
	: >"$dir/made"
	UPDIR=$dir
	trap 'if [ $? != 0 ]; then cmd_down "$UPDIR" >/dev/null 2>&1 || true; fi' EXIT

	# The mount points of the hosts' tmpfs, shared by all hosts (and sshd -t
	# wants /run/sshd).
	mkdir -p /run/relocate-sim /run/sshd /run/relocate

	# Keys: the client's, each host's, and a wrong one.
	for h in "${HOSTS[@]}"; do
		mkdir -p "$dir/$h" "$dir/$h/tmp"
		rm -f "$dir/$h/ssh_host_ed25519_key"{,.pub} "$dir/$h/init.ready"
		try "ssh-keygen" ssh-keygen -q -t ed25519 -N '' -C "simhost-$h" -f "$dir/$h/ssh_host_ed25519_key"
	done
	rm -f "$dir/id_ed25519"{,.pub} "$dir/wrong_ed25519_key"{,.pub}
	try "ssh-keygen" ssh-keygen -q -t ed25519 -N '' -C simhosts-client -f "$dir/id_ed25519"
	try "ssh-keygen" ssh-keygen -q -t ed25519 -N '' -C simhosts-wrong -f "$dir/wrong_ed25519_key"
	cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
	rm -f "$dir/cert_ed25519"{,.pub} "$dir/user_ca"{,.pub} "$dir/host_ca"{,.pub} "$dir/user_cert.pub"
	try "ssh-keygen" ssh-keygen -q -t ed25519 -N '' -C simhosts-cert -f "$dir/cert_ed25519"
	try "ssh-keygen" ssh-keygen -q -t ed25519 -N '' -C simhosts-user-ca -f "$dir/user_ca"
	try "ssh-keygen" ssh-keygen -q -t ed25519 -N '' -C simhosts-host-ca -f "$dir/host_ca"
	try "ssh-keygen -s" ssh-keygen -q -s "$dir/user_ca" -I simhosts-user -n root -V -5m:+1d "$dir/cert_ed25519.pub"
	mv "$dir/cert_ed25519-cert.pub" "$dir/user_cert.pub"
	echo "@cert-authority 10.78.$n.* $(cut -d' ' -f1,2 "$dir/host_ca.pub")" >"$dir/ca_known_hosts"
	: >"$dir/known_hosts"
	: >"$dir/wrong_known_hosts"
	: >"$dir/ssh_config"
	for h in "${HOSTS[@]}"; do
		local ip
		ip=$(ipof "$n" "$h")
		echo "$ip $(cut -d' ' -f1,2 "$dir/$h/ssh_host_ed25519_key.pub")" >>"$dir/known_hosts"
		echo "$ip $(cut -d' ' -f1,2 "$dir/wrong_ed25519_key.pub")" >>"$dir/wrong_known_hosts"
		cat >>"$dir/ssh_config" <<-EOF
			Host $h $ip
			  HostName $ip
			  User root
			  Port 22
			  IdentityFile $dir/id_ed25519
			  IdentitiesOnly yes
			  UserKnownHostsFile $dir/known_hosts
			  GlobalKnownHostsFile /dev/null
			  StrictHostKeyChecking yes
			  BatchMode yes
			  ConnectTimeout 10
			  LogLevel ERROR

		EOF
		cat >"$dir/$h/sshd_config" <<-EOF
			ListenAddress $ip:22
			HostKey $dir/$h/ssh_host_ed25519_key
			HostCertificate $dir/$h/ssh_host_ed25519_key-cert.pub
			TrustedUserCAKeys $dir/user_ca.pub
			PidFile $dir/$h/sshd.pid
			PermitRootLogin prohibit-password
			PubkeyAuthentication yes
			AuthorizedKeysFile $dir/authorized_keys
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			StrictModes no
			UsePAM no
			UseDNS no
			PrintMotd no
			PrintLastLog no
			X11Forwarding no
			LogLevel ERROR
			SetEnv PATH=/usr/bin:/bin:/usr/sbin:/sbin TMPDIR=$dir/$h/tmp${RELOCATE_PPROF:+ RELOCATE_PPROF=$RELOCATE_PPROF}
			Subsystem sftp internal-sftp
		EOF
		try "ssh-keygen -s ($h)" ssh-keygen -q -s "$dir/host_ca" -h -I "simhost-$h" -n "$ip" -V -5m:+1d "$dir/$h/ssh_host_ed25519_key.pub"
		try "sshd -t ($h)" /usr/sbin/sshd -t -f "$dir/$h/sshd_config"
	done
	local via=
	if [ "${#HOSTS[@]}" = 3 ]; then
		via="  ProxyJump jump"
	fi
	local dstip
	dstip=$(ipof "$n" dst)
	cat >>"$dir/ssh_config" <<-EOF
		Host dstcert
		  HostName $dstip
		  User root
		  IdentityFile $dir/cert_ed25519
		  CertificateFile $dir/user_cert.pub
		  IdentitiesOnly yes
		  UserKnownHostsFile $dir/ca_known_hosts
		  GlobalKnownHostsFile /dev/null
		  StrictHostKeyChecking yes
		  BatchMode yes
		  ConnectTimeout 10
		  LogLevel ERROR
		$via

		Host dstnocert
		  HostName $dstip
		  User root
		  IdentityFile $dir/cert_ed25519
		  IdentitiesOnly yes
		  UserKnownHostsFile $dir/known_hosts
		  GlobalKnownHostsFile /dev/null
		  StrictHostKeyChecking yes
		  BatchMode yes
		  ConnectTimeout 10
		  LogLevel ERROR
		$via

	EOF

	# The inits. setsid does not fork here (a background job of a
	# non-interactive shell leads no process group), so $! is unshare's PID.
	printf '%s\n' "$INIT" >"$dir/hostinit.sh"
	for h in "${HOSTS[@]}"; do
		setsid unshare --net --pid --mount --uts --fork --kill-child --mount-proc --propagation private \
			bash "$dir/hostinit.sh" "$dir" "$h" </dev/null >"$dir/$h/init.log" 2>&1 &
		echo "$!" >"$dir/$h/unshare.pid"
		starttime "$!" >"$dir/$h/unshare.start" || true
	done
	for h in "${HOSTS[@]}"; do
		local upid pid=
		upid=$(cat "$dir/$h/unshare.pid")
		for _ in $(seq 500); do
			pid=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null | cut -d' ' -f1) || true
			[ -n "$pid" ] && break
			[ -e "/proc/$upid" ] || break
			sleep 0.01
		done
		[ -n "$pid" ] || die "up: $h: no init ($(tr '\n' ' ' <"$dir/$h/init.log"))"
		nsinode "$pid" pid >"$dir/$h/pidns" || die "up: $h: init $pid is gone: $(tr '\n' ' ' <"$dir/$h/init.log")"
		nsinode "$pid" net >"$dir/$h/netns" || die "up: $h: init $pid is gone: $(tr '\n' ' ' <"$dir/$h/init.log")"
		echo "$pid" >"$dir/$h/init.pid"
		for _ in $(seq 500); do
			[ -s "$dir/$h/init.ready" ] && break
			[ -e "/proc/$pid" ] || break
			sleep 0.01
		done
		[ -s "$dir/$h/init.ready" ] || die "up: $h: init failed: $(tr '\n' ' ' <"$dir/$h/init.log")"
	done

	# The network.
	local br=rlb$n
	local out
	if ! out=$(ip link add "$br" type bridge 2>&1); then
		if [ -e "/sys/class/net/$br" ]; then
			echo "simhosts: up: bridge $br exists: subnet $n is in use" >&2
			exit 3
		fi
		die "bridge $br: $out"
	fi
	echo "link $br" >>"$dir/made"
	try "bridge $br" ip addr add "10.78.$n.1/24" dev "$br"
	try "bridge $br" ip link set "$br" up
	for h in "${HOSTS[@]}"; do
		local pid veth=$br-$h
		pid=$(cat "$dir/$h/init.pid")
		try "veth $veth" ip link add "$veth" type veth peer name eth0 netns "$pid"
		echo "link $veth" >>"$dir/made"
		try "veth $veth" ip link set "$veth" master "$br" up
		try "$h network" nsenter -t "$pid" --net ip -batch - <<-EOF
			link set lo up
			addr add $(ipof "$n" "$h")/24 dev eth0
			link set eth0 up
			route add default via 10.78.$n.1
		EOF
	done

	# The sshds, children of the inits (setsid -f forks and its parent
	# exits, so the init adopts them).
	for h in "${HOSTS[@]}"; do
		local pid
		pid=$(cat "$dir/$h/init.pid")
		rm -f "$dir/$h/sshd.pid"
		: >"$dir/$h/sshd.log"
		nsenter -t "$pid" --net --pid --mount --uts --wdns=/ -- \
			setsid -f /usr/sbin/sshd -D -e -f "$dir/$h/sshd_config" </dev/null >>"$dir/$h/sshd.log" 2>&1 ||
			die "up: $h: cannot start sshd: $(tail -n 3 "$dir/$h/sshd.log" | tr '\n' ' ')"
	done
	# Each sshd answers with its banner within 10 s; it logs only errors
	# (such as a probe that closes without a banner of its own).
	local deadline=$((SECONDS + 10))
	for h in "${HOSTS[@]}"; do
		local ip ok=
		ip=$(ipof "$n" "$h")
		while [ -z "$ok" ] && [ ! -s "$dir/$h/sshd.log" ] && [ "$SECONDS" -le "$deadline" ]; do
			if [ "$(timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/22" && head -c 4 <&3 && printf "SSH-2.0-probe\r\n" >&3' "$ip" 2>/dev/null)" = SSH- ]; then
				ok=1
			else
				sleep 0.02
			fi
		done
		[ -n "$ok" ] || die "up: $h: sshd does not answer on $ip:22: $(tail -n 3 "$dir/$h/sshd.log" | tr '\n' ' ')"
	done

	# With a jump host, dst takes SSH from it alone (once the probe above
	# has seen its sshd answer).
	if [ "${#HOSTS[@]}" = 3 ]; then
		command -v nft >/dev/null || die "up: nft is missing (nftables)"
		try "dst firewall" nsenter -t "$(cat "$dir/dst/init.pid")" --net nft -f - <<-EOF
			table inet simhosts_jump {
				chain input {
					type filter hook input priority 0; policy accept;
					tcp dport 22 ip saddr != $(ipof "$n" jump) drop
				}
			}
		EOF
	fi

	{
		echo "SRC_IP=$(ipof "$n" src)"
		echo "DST_IP=$(ipof "$n" dst)"
		echo "VIP=10.78.$n.100"
		echo "SSH_CONFIG=$dir/ssh_config"
		echo "KNOWN_HOSTS=$dir/known_hosts"
		echo "WRONG_KNOWN_HOSTS=$dir/wrong_known_hosts"
		echo "IDENTITY=$dir/id_ed25519"
		echo "CERT_IDENTITY=$dir/cert_ed25519"
		echo "USER_CERT=$dir/user_cert.pub"
		echo "CA_KNOWN_HOSTS=$dir/ca_known_hosts"
		if [ "${#HOSTS[@]}" = 3 ]; then
			echo "JUMP_IP=$(ipof "$n" jump)"
		fi
		echo "SRC_PID=$(cat "$dir/src/init.pid")"
		echo "DST_PID=$(cat "$dir/dst/init.pid")"
		echo "BRIDGE=$br"
		echo "SUBNET=$n"
		echo "HOSTS_DIR=$dir"
		echo "SIMHOSTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
	} >"$dir/env"
	cat "$dir/env"
}

cmd_down() {
	[ $# = 1 ] || die "usage: simhosts.sh down DIR"
	local dir=$1 h pid upid
	[ -e "$dir/n" ] || return 0
	if [ -s "$dir/hosts" ]; then
		read -r -a HOSTS <"$dir/hosts"
	fi
	for h in "${HOSTS[@]}"; do
		# Killing a PID namespace's init kills every process in it.
		if pid=$(initpid "$dir" "$h"); then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		upid=$(cat "$dir/$h/unshare.pid" 2>/dev/null) || upid=
		if [ -n "$upid" ] && [ "$(starttime "$upid")" = "$(cat "$dir/$h/unshare.start" 2>/dev/null)" ]; then
			kill -KILL "$upid" 2>/dev/null || true
		fi
	done
	local link
	while read -r kind link; do
		[ "$kind" = link ] || continue
		ip link del "$link" 2>/dev/null || true
	done < <(tac "$dir/made" 2>/dev/null)
	# The inits are gone once their namespace is.
	for h in "${HOSTS[@]}"; do
		for _ in $(seq 200); do
			initpid "$dir" "$h" >/dev/null || break
			sleep 0.01
		done
		! initpid "$dir" "$h" >/dev/null || die "down: $h: init $(cat "$dir/$h/init.pid") survives SIGKILL"
		rm -f "$dir/$h/init.pid" "$dir/$h/unshare.pid" "$dir/$h/unshare.start" "$dir/$h/init.ready"
	done
	while read -r kind link; do
		[ "$kind" = link ] || continue
		[ ! -e "/sys/class/net/$link" ] || die "down: link $link is still there"
	done <"$dir/made"
	rm -f "$dir/made" "$dir/n" "$dir/hosts"
}

cmd_exec() {
	[ $# -ge 3 ] || die "usage: simhosts.sh exec DIR HOST CMD..."
	ipof 0 "$2" >/dev/null
	enter "$@"
}

# start DIR HOST LOG CMD...: CMD in its own session in HOST, stdin
# /dev/null, output appended to LOG, cwd the current directory; the host's
# init adopts it. Prints its PID in the host.
cmd_start() {
	[ $# -ge 4 ] || die "usage: simhosts.sh start DIR HOST LOG CMD..."
	local dir=$1 host=$2 log=$3
	shift 3
	ipof 0 "$host" >/dev/null
	# setsid does not fork (a background job here leads no process group):
	# $! is CMD's PID.
	enter "$dir" "$host" bash -c 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!' simhosts-start "$log" "$@"
}

txpackets() { awk '$1 == "eth0:" { print $11 }' /proc/net/dev; }

cmd_vip() {
	[ $# = 3 ] || die "usage: simhosts.sh vip DIR HOST add|del"
	local dir=$1 host=$2 op=$3 vip
	ipof 0 "$host" >/dev/null
	vip=$(sed -n 's/^VIP=//p' "$dir/env" 2>/dev/null) || true
	[ -n "$vip" ] || die "vip: $dir is not up"
	if ! inhost "$dir" "$host"; then
		enter "$dir" "$host" bash "${BASH_SOURCE[0]}" vip "$dir" "$host" "$op"
	fi
	case $op in
	add)
		try "vip add" ip addr replace "$vip/24" dev eth0
		# Unsolicited ARP: neighbours (the root namespace, the other host)
		# point their entry for the VIP at this host's MAC. arping sends at
		# once but then waits a second for replies that never come; it is
		# left to that in the background, and this waits (1 s at most) for
		# eth0 to have sent a packet since.
		# (/proc/net/dev: /sys/class/net shows the root namespace's links.)
		command -v arping >/dev/null || die "vip add: arping is missing (apt-get install iputils-arping)"
		local before
		before=$(txpackets)
		setsid arping -q -U -c 1 -I eth0 "$vip" </dev/null >/dev/null 2>&1 &
		for _ in $(seq 100); do
			[ "$(txpackets)" -le "$before" ] || break
			sleep 0.01
		done
		[ "$(txpackets)" -gt "$before" ] || die "vip add: arping sent nothing in 1 s"
		;;
	del)
		if [ -n "$(ip -o addr show dev eth0 to "$vip/32")" ]; then
			try "vip del" ip addr del "$vip/24" dev eth0
		fi
		;;
	*) die "usage: simhosts.sh vip DIR HOST add|del" ;;
	esac
}

[ $# -ge 1 ] || die "usage: simhosts.sh up|down|exec|start|vip DIR ..."
sub=$1
shift
case $sub in
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
exec) cmd_exec "$@" ;;
start) cmd_start "$@" ;;
vip) cmd_vip "$@" ;;
*) die "unknown command $sub (up, down, exec, start, vip)" ;;
esac
