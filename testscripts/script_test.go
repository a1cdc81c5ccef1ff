package testscripts

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/cmd"
	"github.com/relocate/relocate/sock"
)

// workloadBin is where TestMain compiled the C workloads.
var workloadBin string

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"relocate": func() { os.Exit(cmd.Main()) },
	})
}

// lockTables lists relocate's nftables lock tables.
func lockTables() map[string]bool {
	out := map[string]bool{}
	c, err := nftables.New()
	if err != nil {
		return out
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return out
	}
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "relocate_") {
			out[tb.Name] = true
		}
	}
	return out
}

// inCI reports whether a skipped privileged test must count as a failure.
func inCI() bool { return os.Getenv("CI") != "" }

func buildWorkloads(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	srcs, _ := filepath.Glob("workloads/*.c")
	for _, src := range srcs {
		name := strings.TrimSuffix(filepath.Base(src), ".c")
		out, err := exec.Command("gcc", "-Wall", "-Werror", "-O1", "-pthread", "-o", filepath.Join(dir, name), src).CombinedOutput()
		if err != nil {
			t.Fatalf("compile %s: %v\n%s", src, err, out)
		}
	}
	goOut, err := exec.Command("go", "build", "-o", filepath.Join(dir, "goticker"), "./workloads/goticker").CombinedOutput()
	if err != nil {
		t.Fatalf("build goticker: %v\n%s", err, goOut)
	}
	for _, py := range []string{"pydict.py", "tcpclient.py"} {
		abs, _ := filepath.Abs(filepath.Join("workloads", py))
		if err := os.Symlink(abs, filepath.Join(dir, py)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestScripts(t *testing.T) {
	for _, tool := range []string{"gcc", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			if inCI() {
				t.Fatalf("%s is missing (the README's test command installs it)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	// Descriptors this test inherited must not leak into workloads: relocate
	// would rightly refuse a pipe to a process outside the checkpoint.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	workloadBin = buildWorkloads(t)
	// Dumps of processes with TCP connections leave their network lock
	// (an nftables table) for the restore; remove any the scripts left.
	before := lockTables()
	t.Cleanup(func() {
		for name := range lockTables() {
			if !before[name] {
				if err := sock.UnlockTable(name); err != nil {
					t.Errorf("remove %s: %v", name, err)
				}
			}
		}
	})
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("PATH", workloadBin+string(os.PathListSeparator)+e.Getenv("PATH"))
			e.Setenv("WORKLOADS", workloadBin)
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				if os.Geteuid() != 0 && inCI() {
					return false, fmt.Errorf("CI must run as root: privileged scripts may not skip")
				}
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"start":    cmdStart,
			"waitfile": cmdWaitfile,
			"verdict":  cmdVerdict,
			"alive":    cmdAlive,
			"waitgone": cmdWaitgone,
			"pokemem":  cmdPokemem,
			"signal":   cmdSignal,
			"parent":   cmdParent,
			"truncate": cmdTruncate,
			"corrupt":  cmdCorrupt,
			"track":    cmdTrack,
			"lines":    cmdLines,
			"stopped":  cmdStopped,
			"netlocks": cmdNetlocks,
			"unlock":   cmdUnlock,
		},
	})
}

// cmdStart: start NAME PROG ARGS... starts a workload detached from the
// test (own session, stdin /dev/null, output to $WORK/NAME.log) and sets
// $NAME_pid. Every started PID is killed when the script ends: restored
// processes keep their PID, so this also ends them.
//
// start -as UID:GID[:GROUP,...] ... runs it with those credentials; the
// test's own directories are made traversable for it.
func cmdStart(ts *testscript.TestScript, neg bool, args []string) {
	var cred *syscall.Credential
	if len(args) > 1 && args[0] == "-as" {
		cred = parseCred(ts, args[1])
		args = args[2:]
		for _, d := range []string{ts.Getenv("WORK"), workloadBin} {
			for ; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
				ts.Check(os.Chmod(d, 0o755))
			}
		}
	}
	if neg || len(args) < 2 {
		ts.Fatalf("usage: start [-as UID:GID[:GROUPS]] NAME PROG [ARGS...]")
	}
	name := args[0]
	log, err := os.Create(ts.MkAbs(name + ".log"))
	ts.Check(err)
	defer log.Close()
	prog := args[1]
	if p, err := exec.LookPath(prog); err == nil {
		prog = p
	} else if p := filepath.Join(workloadBin, prog); fileExists(p) {
		prog = p
	}
	c := exec.Command(prog, args[2:]...)
	c.Dir = ts.Getenv("WORK")
	c.Stdout, c.Stderr = log, log
	c.Env = append(os.Environ(), "MEMORY_MARKER=1")
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	ts.Check(c.Start())
	pid := c.Process.Pid
	ts.Setenv(name+"_pid", strconv.Itoa(pid))
	// Reap it if it dies while we are its parent, and kill it at the end.
	go c.Wait()
	ts.Defer(func() { killPID(pid) })
}

func parseCred(ts *testscript.TestScript, s string) *syscall.Credential {
	f := strings.Split(s, ":")
	if len(f) < 2 {
		ts.Fatalf("-as wants UID:GID[:GROUP,...], not %q", s)
	}
	c := &syscall.Credential{Uid: uint32(atoi(ts, f[0])), Gid: uint32(atoi(ts, f[1]))}
	if len(f) > 2 {
		for _, g := range strings.Split(f[2], ",") {
			c.Groups = append(c.Groups, uint32(atoi(ts, g)))
		}
	}
	return c
}

func killPID(pid int) {
	if pid > 1 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cmdTrack: track PID kills PID when the script ends.
func cmdTrack(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: track PID")
	}
	pid := atoi(ts, args[0])
	ts.Defer(func() { killPID(pid) })
}

func atoi(ts *testscript.TestScript, s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		ts.Fatalf("%q is not a number", s)
	}
	return n
}

// waitFor polls cond every 10 ms until it holds or the timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdWaitfile: waitfile [-t SECONDS] FILE [REGEXP].
func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	timeout := 30 * time.Second
	if len(args) > 2 && args[0] == "-t" {
		timeout = time.Duration(atoi(ts, args[1])) * time.Second
		args = args[2:]
	}
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: waitfile [-t SECONDS] FILE [REGEXP]")
	}
	path := ts.MkAbs(args[0])
	var re *regexp.Regexp
	if len(args) == 2 {
		re = regexp.MustCompile(args[1])
	}
	var last []byte
	ok := waitFor(timeout, func() bool {
		if re == nil { // existence is enough (the path may be a socket)
			_, err := os.Stat(path)
			return err == nil
		}
		b, err := os.ReadFile(path)
		last = b
		return err == nil && re.Match(b)
	})
	if !ok {
		ts.Fatalf("waitfile %s: timed out; content: %q", args[0], last)
	}
}

// cmdVerdict: verdict DIR asks a workload for its self-check.
func cmdVerdict(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: verdict DIR")
	}
	dir := ts.MkAbs(args[0])
	verdict := filepath.Join(dir, "verdict")
	os.Remove(verdict)
	ts.Check(os.WriteFile(filepath.Join(dir, "check"), nil, 0o644))
	var v []byte
	if !waitFor(30*time.Second, func() bool {
		b, err := os.ReadFile(verdict)
		v = b
		return err == nil
	}) {
		ts.Fatalf("no verdict from the workload in %s within 30 s", args[0])
	}
	fmt.Fprintf(ts.Stdout(), "%s", v)
	ok := bytes.HasPrefix(v, []byte("OK"))
	if ok == neg {
		ts.Fatalf("verdict: %s", bytes.TrimSpace(v))
	}
}

func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

func isAlive(pid int) bool {
	s := procState(pid)
	return s != 0 && s != 'Z' && s != 'X'
}

// cmdAlive: alive PID (or ! alive PID).
func cmdAlive(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: alive PID")
	}
	if isAlive(atoi(ts, args[0])) == neg {
		if neg {
			ts.Fatalf("process %s is alive", args[0])
		}
		ts.Fatalf("process %s is not running", args[0])
	}
}

// cmdStopped: stopped PID waits until some thread of PID is in a stop
// (ptrace or job control); ! stopped PID waits until none is. 30 s at most.
func cmdStopped(ts *testscript.TestScript, neg bool, args []string) {
	pid := atoi(ts, args[0])
	anyStopped := func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && (b[i+2] == 't' || b[i+2] == 'T') {
				return true
			}
		}
		return false
	}
	if !waitFor(30*time.Second, func() bool { return anyStopped() != neg }) {
		ts.Fatalf("process %d: stopped=%v after 30 s", pid, !neg)
	}
}

// cmdWaitgone: waitgone PID waits until PID is gone and reaped, so that a
// restore may take the PID again.
func cmdWaitgone(ts *testscript.TestScript, neg bool, args []string) {
	pid := atoi(ts, args[0])
	if !waitFor(30*time.Second, func() bool { return procState(pid) == 0 }) {
		ts.Fatalf("process %d still exists after 30 s (state %c)", pid, procState(pid))
	}
}

// cmdPokemem: pokemem PID READYFILE VALUE writes the 8-byte VALUE into the
// process at the address the workload published as addr= in READYFILE.
func cmdPokemem(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: pokemem PID READYFILE VALUE")
	}
	m := regexp.MustCompile(`(?m)^addr=0x([0-9a-f]+)$`).FindStringSubmatch(ts.ReadFile(args[1]))
	if m == nil {
		ts.Fatalf("%s has no addr= line", args[1])
	}
	addr, err := strconv.ParseUint(m[1], 16, 64)
	ts.Check(err)
	val, err := strconv.ParseUint(args[2], 0, 64)
	ts.Check(err)
	f, err := os.OpenFile(fmt.Sprintf("/proc/%s/mem", args[0]), os.O_WRONLY, 0)
	ts.Check(err)
	defer f.Close()
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, val)
	_, err = f.WriteAt(b, int64(addr))
	ts.Check(err)
}

// cmdSignal: signal PID NAME.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	sigs := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "INT": syscall.SIGINT,
		"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT}
	s, ok := sigs[strings.TrimPrefix(args[1], "SIG")]
	if !ok {
		ts.Fatalf("unknown signal %s", args[1])
	}
	ts.Check(syscall.Kill(atoi(ts, args[0]), s))
}

// cmdParent: parent PID prints "ppid=N comm=NAME" of PID's parent.
func cmdParent(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/stat", args[0]))
	ts.Check(err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%s/comm", f[1]))
	fmt.Fprintf(ts.Stdout(), "ppid=%s comm=%s\n", f[1], bytes.TrimSpace(comm))
}

// cmdTruncate: truncate FILE SIZE|half.
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	path := ts.MkAbs(args[0])
	fi, err := os.Stat(path)
	ts.Check(err)
	size := fi.Size() / 2
	if args[1] != "half" {
		size = int64(atoi(ts, args[1]))
		if size < 0 {
			size += fi.Size()
		}
	}
	ts.Check(os.Truncate(path, size))
}

// cmdCorrupt: corrupt FILE OFFSET flips the bits of one byte (a negative
// offset counts from the end, "middle" is the middle).
func cmdCorrupt(ts *testscript.TestScript, neg bool, args []string) {
	path := ts.MkAbs(args[0])
	b, err := os.ReadFile(path)
	ts.Check(err)
	off := len(b) / 2
	if args[1] != "middle" {
		off = atoi(ts, args[1])
		if off < 0 {
			off += len(b)
		}
	}
	b[off] ^= 0xff
	ts.Check(os.WriteFile(path, b, 0o600))
}

// cmdLines: lines FILE N checks FILE (stdout, stderr or a path) has N lines.
func cmdLines(ts *testscript.TestScript, neg bool, args []string) {
	var text string
	switch args[0] {
	case "stdout", "stderr":
		text = ts.ReadFile(args[0])
	default:
		text = ts.ReadFile(args[0])
	}
	n := strings.Count(text, "\n")
	if n != atoi(ts, args[1]) {
		ts.Fatalf("%s has %d lines, want %s:\n%s", args[0], n, args[1], text)
	}
}

// cmdNetlocks: netlocks NAME... checks those lock tables exist; ! netlocks
// checks relocate left none at all (the ruleset is as before the test).
func cmdNetlocks(ts *testscript.TestScript, neg bool, args []string) {
	have := lockTables()
	if neg {
		if len(have) > 0 {
			ts.Fatalf("network lock tables left: %v", have)
		}
		return
	}
	for _, name := range args {
		if !have[name] {
			ts.Fatalf("no network lock table %s (have %v)", name, have)
		}
	}
}

// cmdUnlock: unlock PID lifts the network lock a dump of PID left (for
// control runs that show what the lock is for).
func cmdUnlock(ts *testscript.TestScript, neg bool, args []string) {
	ts.Check(sock.UnlockTable("relocate_" + args[0]))
}
