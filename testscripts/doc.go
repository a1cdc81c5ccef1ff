// Package testscripts holds relocate's end-to-end tests: testscript files
// under testdata/ that read like a sysadmin's session, and the workloads
// they run (workloads/), which check their own state after a restore.
//
// # The self-check protocol
//
// A workload takes a state directory DIR as its first argument. Once set
// up it writes DIR/ready (key=value lines: pid= and whatever a control
// run needs, such as addr=), then polls for DIR/check every 10 ms in
// nanosleep. When DIR/check appears it checks itself, writes DIR/verdict
// ("OK details" or "FAIL reason", via a rename) and removes DIR/check. It
// never exits on a failed check. workloads/proto.h implements it for C.
//
// # Commands
//
// Besides testscript's own, the scripts have (see commands_test.go):
//
//	start [-as UID:GID[:GIDS]] NAME PROG ARGS...  start a detached workload, set $NAME_pid
//	track PID                 kill PID when the script ends
//	require PROG...           skip without PROG (fail under CI)
//	waitfile [-t S] FILE [RE] wait for FILE (matching RE)
//	verdict DIR               run the self-check; ! verdict expects FAIL
//	alive PID                 running, not a zombie
//	waitgone PID              no such process any more (reaped)
//	stopped PID               some thread stopped; ! stopped: none
//	readvars FILE PREFIX      $PREFIX_KEY for each KEY=VALUE line
//	pokemem PID ADDR VALUE    write 8 bytes through /proc/PID/mem
//	signal PID SIG            send a signal
//	parent PID                print "ppid=N comm=NAME"
//	truncate FILE SIZE        cut a file (half, -N)
//	corrupt FILE OFFSET       flip a byte (middle, -N)
//	lines FILE N              FILE (stdout, stderr) has N lines
//	oneerror [FILE]           one "relocate: error:" line, then only hints
//	netlocks NAME...          relocate's nftables lock tables exist (! netlocks: none)
//	unlock PID                lift the lock a dump of PID left
//
// and, for migrations, two simulated hosts (see hosts_test.go, simhosts.sh):
//
//	hosts up                  make hosts src and dst (namespaces, bridge, sshd each)
//	host HOST CMD...          run CMD in HOST, as exec does
//	hstart HOST NAME PROG...  start in HOST; $NAME_pid there, $NAME_gpid here
//	hostgpid HOST PID VAR     wait for PID in HOST; $VAR its PID here
//	vip HOST add|del          move the service address $vip
//
// The condition [root] holds when running as root; under CI (env CI set)
// it is an error not to be root, so privileged scripts cannot skip there.
// When a script ends, every process it left behind is killed: those
// started and still the same process, those tracked, and any carrying the
// script's marker in its environment or with its cwd under $WORK.
package testscripts
