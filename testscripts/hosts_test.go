package testscripts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// Simulated hosts: simhosts.sh makes two, "src" and "dst", each a PID 1 in
// new PID, network, mount and UTS namespaces with an sshd, on a bridge of
// the root namespace; the commands below drive it. See simhosts.sh.

// simhostsScript is simhosts.sh's absolute path (the tests run in the
// package directory).
var simhostsScript, _ = filepath.Abs("simhosts.sh")

// hostCmdTimeout bounds `host`: a command that hangs in a host fails the
// script instead of the whole test binary.
const hostCmdTimeout = 120 * time.Second

// nextSubnet hands out N for 10.78.N.0/24 and the bridge rlbN: from a
// start derived from the test process's PID (so that concurrent test
// processes start apart), one more for every `hosts up` of the process.
var (
	subnetOnce sync.Once
	nextSubnet atomic.Int64
)

func allocSubnet() int {
	subnetOnce.Do(func() { nextSubnet.Store(int64(os.Getpid() % 200)) })
	return int((nextSubnet.Add(1)-1)%250) + 1
}

// hostsDir is the simhosts.sh DIR of the script, once `hosts up` ran.
func hostsDir(ts *testscript.TestScript) string {
	dir := ts.Getenv("hosts_dir")
	if dir == "" {
		ts.Fatalf("no simulated hosts: run `hosts up` first")
	}
	return dir
}

func hostArg(ts *testscript.TestScript, host string) string {
	if host != "src" && host != "dst" && host != "jump" {
		ts.Fatalf("unknown host %q (src, dst or jump)", host)
	}
	return host
}

// cmdHosts: hosts up makes the simulated hosts src and dst in $WORK/hosts
// (simhosts.sh up, on a subnet no other script of this machine uses) and
// sets the variables it prints, in lower case: $src_ip, $dst_ip, $vip,
// $ssh_config, $known_hosts, $wrong_known_hosts, $identity, $src_pid and
// $dst_pid (the inits' PIDs), $bridge, $subnet, $hosts_dir, $simhosts,
// $cert_identity, $user_cert, $ca_known_hosts. hosts up jump adds the host
// jump ($jump_ip), the only one dst takes SSH from.
// `ssh -F $ssh_config dst CMD` logs into dst as root. They are torn down
// when the script ends, passed or failed (simhosts.sh down: every process
// in a host dies with it); the test fails if the bridge is left. hosts
// down tears them down earlier. Needs root.
func cmdHosts(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && (len(args) == 1 && (args[0] == "up" || args[0] == "down") || len(args) == 2 && args[0] == "up" && args[1] == "jump"), "hosts up [jump]|down")
	dir := ts.MkAbs("hosts")
	if args[0] == "down" {
		if err := hostsDown(dir, ts.Getenv("bridge")); err != nil {
			ts.Fatalf("hosts down: %v", err)
		}
		return
	}
	if ts.Getenv("hosts_dir") != "" {
		ts.Fatalf("hosts up: already up")
	}
	var deferred bool
	for try := 0; try < 250; try++ {
		n := allocSubnet()
		bridge := fmt.Sprintf("rlb%d", n)
		if _, err := os.Lstat("/sys/class/net/" + bridge); err == nil {
			continue // another test process's
		}
		if !deferred {
			deferred = true
			ts.Defer(func() {
				if err := hostsDown(dir, ""); err != nil {
					ts.Value(scriptTKey{}).(testscript.T).Fatal("hosts: " + err.Error())
				}
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c := exec.CommandContext(ctx, "bash", append([]string{simhostsScript, "up", dir, strconv.Itoa(n)}, args[1:]...)...)
		c.Env = append(os.Environ(), markerVar+"="+ts.Getenv(markerVar))
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		start := time.Now()
		err := c.Run()
		cancel()
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 3 && try < 10 {
			continue // the subnet was taken meanwhile
		}
		if err != nil {
			ts.Fatalf("hosts up: %v\n%s", err, stderr.Bytes())
		}
		ts.Logf("hosts up: subnet 10.78.%d.0/24 in %v", n, time.Since(start).Round(time.Millisecond))
		for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok || !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`).MatchString(k) {
				ts.Fatalf("hosts up: unexpected output line %q", line)
			}
			ts.Setenv(strings.ToLower(k), v)
		}
		if ts.Getenv("bridge") != bridge || ts.Getenv("hosts_dir") == "" {
			ts.Fatalf("hosts up: incomplete output:\n%s", stdout.Bytes())
		}
		return
	}
	ts.Fatalf("hosts up: no free subnet")
}

// hostsDown runs simhosts.sh down DIR and checks the bridge (from DIR/n
// if not given) is gone.
func hostsDown(dir, bridge string) error {
	if bridge == "" {
		if b, err := os.ReadFile(filepath.Join(dir, "n")); err == nil {
			bridge = "rlb" + strings.TrimSpace(string(b))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", simhostsScript, "down", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("simhosts.sh down: %v\n%s", err, out)
	}
	if bridge != "" {
		if _, err := os.Lstat("/sys/class/net/" + bridge); err == nil {
			return fmt.Errorf("bridge %s is still there after simhosts.sh down", bridge)
		}
	}
	return nil
}

// cmdHost: host HOST CMD [ARGS...] runs CMD in the simulated host HOST
// (src or dst) and waits for it, as exec would: the script's environment
// and directory, CMD looked up as start does (workloads, then the
// script's PATH: relocate is testscript's copy), its output in stdout and
// stderr for the assertions that follow; `! host ...` expects it to fail.
// 120 s at most: then the script fails either way.
func cmdHost(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, len(args) >= 2, "host src|dst CMD [ARGS...]")
	host := hostArg(ts, args[0])
	secs := strconv.Itoa(int(hostCmdTimeout / time.Second))
	// timeout kills CMD's process group, in the host too, when time is up.
	start := time.Now()
	err := ts.Exec("timeout", append([]string{"-k", "5", secs, "bash", simhostsScript, "exec",
		hostsDir(ts), host, lookPath(ts, args[1])}, args[2:]...)...)
	if err != nil && time.Since(start) >= hostCmdTimeout {
		ts.Fatalf("host %s %s: still running after %s s", host, args[1], secs)
	}
	if err == nil && neg {
		ts.Fatalf("host %s %s: unexpected success", host, args[1])
	}
	if err != nil && !neg {
		ts.Fatalf("host %s %s: %v", host, args[1], err)
	}
}

// cmdHstart: hstart HOST NAME PROG [ARGS...] starts a workload in HOST as
// start does outside: its own session, stdin /dev/null, stdout and stderr
// to $WORK/NAME.log, cwd $WORK; the host's init is its parent. It sets
// $NAME_pid to its PID in the host (what relocate running there sees) and
// $NAME_gpid to its PID in the root namespace (for alive, signal, track,
// ...). It dies with the host, if not before.
func cmdHstart(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) >= 3, "hstart src|dst NAME PROG [ARGS...]")
	host, name := hostArg(ts, args[0]), args[1]
	dir := hostsDir(ts)
	logPath := ts.MkAbs(name + ".log")
	log, err := os.Create(logPath)
	ts.Check(err)
	log.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", append([]string{simhostsScript, "start", dir, host, logPath,
		lookPath(ts, args[2])}, args[3:]...)...)
	c.Dir = ts.Getenv("WORK")
	c.Env = append(os.Environ(),
		"PATH="+ts.Getenv("PATH"),
		markerVar+"="+ts.Getenv(markerVar),
	)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		ts.Fatalf("hstart %s %s: %v\n%s", host, name, err, stderr.Bytes())
	}
	hpid := atoi(ts, string(out))
	gpid, ok := globalPID(dir, host, hpid)
	if !ok {
		ts.Fatalf("hstart %s %s: pid %d is gone at once; %s.log:\n%s", host, name, hpid, name, readOrNil(logPath))
	}
	if st, ok := startTime(gpid); ok {
		scriptProcs(ts).start(gpid, st)
	}
	ts.Setenv(name+"_pid", strconv.Itoa(hpid))
	ts.Setenv(name+"_gpid", strconv.Itoa(gpid))
}

// cmdHostgpid: hostgpid HOST PID VAR waits (30 s at most) until the host
// has a process PID (say a restored one) and sets $VAR to its PID in the
// root namespace. ! hostgpid HOST PID checks the host has no process PID
// now.
func cmdHostgpid(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, (neg && len(args) == 2) || (!neg && len(args) == 3), "hostgpid src|dst PID VAR; ! hostgpid src|dst PID")
	host, hpid := hostArg(ts, args[0]), atoi(ts, args[1])
	dir := hostsDir(ts)
	if neg {
		if gpid, ok := globalPID(dir, host, hpid); ok {
			ts.Fatalf("host %s has a process %d (pid %d outside)", host, hpid, gpid)
		}
		return
	}
	var gpid int
	if !waitFor(defaultWait, func() bool {
		var ok bool
		gpid, ok = globalPID(dir, host, hpid)
		return ok
	}) {
		ts.Fatalf("host %s has no process %d after %v", host, hpid, defaultWait)
	}
	ts.Setenv(args[2], strconv.Itoa(gpid))
}

// cmdVip: vip HOST add|del gives the service address $vip to HOST (and
// announces it with a gratuitous ARP) or takes it away.
func cmdVip(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2 && (args[1] == "add" || args[1] == "del"), "vip src|dst add|del")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", simhostsScript, "vip", hostsDir(ts), hostArg(ts, args[0]), args[1]).CombinedOutput()
	if err != nil {
		ts.Fatalf("vip %s %s: %v\n%s", args[0], args[1], err, out)
	}
}

// globalPID finds the root namespace's PID of process hpid of the host:
// the process whose NSpid ends with hpid and whose PID namespace is the
// host's.
func globalPID(dir, host string, hpid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, host, "pidns"))
	if err != nil {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false
	}
	ents, _ := os.ReadDir("/proc")
	want := strconv.Itoa(hpid)
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		i := bytes.Index(status, []byte("\nNSpid:"))
		if i < 0 {
			continue
		}
		line, _, _ := bytes.Cut(status[i+len("\nNSpid:"):], []byte("\n"))
		f := strings.Fields(string(line))
		if len(f) < 2 || f[len(f)-1] != want {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st) == nil && st.Ino == ino {
			return pid, true
		}
	}
	return 0, false
}
