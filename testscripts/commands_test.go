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
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/sock"
)

// commands are the scripts' own commands, each described at its function.
// Every wait is bounded.
var commands = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"start":      cmdStart,
	"track":      cmdTrack,
	"require":    cmdRequire,
	"waitfile":   cmdWaitfile,
	"verdict":    cmdVerdict,
	"alive":      cmdAlive,
	"waitgone":   cmdWaitgone,
	"stopped":    cmdStopped,
	"readvars":   cmdReadvars,
	"pokemem":    cmdPokemem,
	"signal":     cmdSignal,
	"parent":     cmdParent,
	"truncate":   cmdTruncate,
	"corrupt":    cmdCorrupt,
	"lines":      cmdLines,
	"oneerror":   cmdOneerror,
	"netlocks":   cmdNetlocks,
	"ruleset":    cmdRuleset,
	"unlock":     cmdUnlock,
	"hosts":      cmdHosts,
	"host":       cmdHost,
	"hstart":     cmdHstart,
	"hostgpid":   cmdHostgpid,
	"vip":        cmdVip,
	"jsonschema": cmdJSONSchema,
}

// defaultWait bounds every wait of a script; RELOCATE_WAIT_SCALE=N
// stretches it and waitfile's -t N times (the kernel matrix sets it: its
// guests are emulated, often ten times slower).
var defaultWait = 30 * time.Second * waitScale

var waitScale = func() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("RELOCATE_WAIT_SCALE")); err == nil && n > 1 {
		return time.Duration(n)
	}
	return 1
}()

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

func usage(ts *testscript.TestScript, ok bool, text string) {
	if !ok {
		ts.Fatalf("usage: %s", text)
	}
}

func atoi(ts *testscript.TestScript, s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		ts.Fatalf("%q is not a number", s)
	}
	return n
}

// cmdStart: start [-as UID:GID[:GID,...]] NAME PROG [ARGS...] starts a
// workload detached from the test: its own session, stdin /dev/null,
// stdout and stderr to $WORK/NAME.log (a file, not a pipe: relocate would
// record a pipe to a process outside the checkpoint as external), cwd $WORK. It sets $NAME_pid.
// PROG is looked up among the compiled workloads, then on the script's
// PATH. The process is killed when the script ends if it is still the same
// process (same PID and start time). With -as it runs with those
// credentials, and the test's directories are made traversable for it.
func cmdStart(ts *testscript.TestScript, neg bool, args []string) {
	var cred *syscall.Credential
	if len(args) > 1 && args[0] == "-as" {
		cred = parseCred(ts, args[1])
		args = args[2:]
		for _, top := range []string{ts.Getenv("WORK"), ts.Getenv("WORKLOADS")} {
			for d := top; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
				ts.Check(os.Chmod(d, 0o755))
			}
		}
	}
	usage(ts, !neg && len(args) >= 2, "start [-as UID:GID[:GID,...]] NAME PROG [ARGS...]")
	name := args[0]
	log, err := os.Create(ts.MkAbs(name + ".log"))
	ts.Check(err)
	defer log.Close()
	c := exec.Command(lookPath(ts, args[1]), args[2:]...)
	c.Dir = ts.Getenv("WORK")
	c.Stdout, c.Stderr = log, log // and stdin is /dev/null
	c.Env = append(os.Environ(),
		"PATH="+ts.Getenv("PATH"),
		markerVar+"="+ts.Getenv(markerVar),
	)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	ts.Check(c.Start())
	pid := c.Process.Pid
	// Not reaped before Wait is called, so this is the process we started.
	st, ok := startTime(pid)
	if !ok {
		ts.Fatalf("start %s: no /proc/%d/stat", name, pid)
	}
	scriptProcs(ts).start(pid, st)
	go c.Wait() // reap it when it dies while it is our child
	ts.Setenv(name+"_pid", strconv.Itoa(pid))
}

func parseCred(ts *testscript.TestScript, s string) *syscall.Credential {
	f := strings.Split(s, ":")
	if len(f) < 2 {
		ts.Fatalf("-as wants UID:GID[:GID,...], not %q", s)
	}
	c := &syscall.Credential{Uid: uint32(atoi(ts, f[0])), Gid: uint32(atoi(ts, f[1]))}
	if len(f) > 2 {
		for _, g := range strings.Split(f[2], ",") {
			c.Groups = append(c.Groups, uint32(atoi(ts, g)))
		}
	}
	return c
}

// lookPath finds prog among the workloads, then on the script's PATH; a
// name with a slash is taken as it is (relative to $WORK).
func lookPath(ts *testscript.TestScript, prog string) string {
	if strings.Contains(prog, "/") {
		return ts.MkAbs(prog)
	}
	for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
		p := filepath.Join(dir, prog)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	ts.Fatalf("start: %s: not found among the workloads or on PATH", prog)
	return ""
}

// cmdTrack: track PID kills PID when the script ends, whatever process it
// is then (a restored process keeps its PID but not its start time).
func cmdTrack(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 1, "track PID")
	scriptProcs(ts).track(atoi(ts, args[0]))
}

// cmdRequire: require PROG... skips the script when a program is missing
// from PATH; under CI (env CI set) a missing program fails it instead.
// Put it at the top, before anything starts.
func cmdRequire(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) > 0, "require PROG...")
	var missing []string
	for _, prog := range args {
		found := false
		for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
			if fi, err := os.Stat(filepath.Join(dir, prog)); err == nil && fi.Mode()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, prog)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s (the README's test command installs it)", strings.Join(missing, ", "))
	if inCI() {
		ts.Fatalf("%s; CI may not skip", msg)
	}
	ts.Value(scriptTKey{}).(testscript.T).Skip(msg)
}

// cmdWaitfile: waitfile [-t SECONDS] FILE [REGEXP] waits until FILE exists
// (it may be a socket or a FIFO) and, given REGEXP, its content matches
// (in multi-line mode, as for stdout and grep). 30 s at most.
func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	timeout := defaultWait
	if len(args) > 2 && args[0] == "-t" {
		timeout = time.Duration(atoi(ts, args[1])) * time.Second * waitScale
		args = args[2:]
	}
	usage(ts, !neg && len(args) >= 1 && len(args) <= 2, "waitfile [-t SECONDS] FILE [REGEXP]")
	path := ts.MkAbs(args[0])
	var re *regexp.Regexp
	if len(args) == 2 {
		var err error
		re, err = regexp.Compile("(?m)" + args[1])
		ts.Check(err)
	}
	var last []byte
	var lastErr error
	ok := waitFor(timeout, func() bool {
		if re == nil {
			_, lastErr = os.Stat(path)
			return lastErr == nil
		}
		last, lastErr = os.ReadFile(path)
		return lastErr == nil && re.Match(last)
	})
	if !ok {
		if lastErr != nil {
			ts.Fatalf("waitfile %s: not there after %v: %v", args[0], timeout, lastErr)
		}
		ts.Fatalf("waitfile %s: no match for %q after %v; content:\n%s", args[0], args[1], timeout, last)
	}
}

// cmdVerdict: verdict DIR asks the workload whose state directory is DIR
// for its self-check: it removes DIR/verdict, creates DIR/check, waits up
// to 30 s for DIR/verdict and prints it on stdout. It fails unless the
// verdict starts with "OK"; `! verdict DIR` fails unless the verdict is
// there and does not (a control run). It gives up early when the pid=
// that DIR/ready names is no longer running.
func cmdVerdict(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, len(args) == 1, "verdict DIR")
	dir := ts.MkAbs(args[0])
	verdict := filepath.Join(dir, "verdict")
	pid := 0
	if m := regexp.MustCompile(`(?m)^pid=(\d+)$`).FindSubmatch(readOrNil(filepath.Join(dir, "ready"))); m != nil {
		pid, _ = strconv.Atoi(string(m[1]))
	}
	if err := os.Remove(verdict); err != nil && !os.IsNotExist(err) {
		ts.Fatalf("verdict: %v", err)
	}
	ts.Check(os.WriteFile(filepath.Join(dir, "check"), nil, 0o644))
	var v []byte
	died := false
	ok := waitFor(defaultWait, func() bool {
		var err error
		if v, err = os.ReadFile(verdict); err == nil {
			return true
		}
		died = pid > 0 && !isAlive(pid) && !aliveInChildNS(pid)
		return died
	})
	switch {
	case died:
		ts.Fatalf("verdict %s: workload pid %d is not running", args[0], pid)
	case !ok:
		ts.Fatalf("verdict %s: no verdict within %v", args[0], defaultWait)
	}
	fmt.Fprintf(ts.Stdout(), "%s", v)
	if bytes.HasPrefix(v, []byte("OK")) == neg {
		ts.Fatalf("verdict: %s", bytes.TrimSpace(v))
	}
}

// aliveInChildNS reports whether a live process has PID pid in a PID
// namespace below ours (a workload of a simulated host names itself so).
func aliveInChildNS(pid int) bool {
	statuses, _ := filepath.Glob("/proc/[0-9]*/status")
	want := []byte("\t" + strconv.Itoa(pid) + "\n")
	for _, st := range statuses {
		b, _ := os.ReadFile(st)
		i := bytes.Index(b, []byte("\nNSpid:"))
		if i < 0 {
			continue
		}
		line := b[i+1:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j+1]
		}
		if bytes.Count(line, []byte("\t")) > 1 && bytes.HasSuffix(line, want) && !bytes.Contains(b, []byte("State:\tZ")) {
			return true
		}
	}
	return false
}

func readOrNil(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// cmdAlive: alive PID checks the process exists and is not a zombie;
// ! alive PID checks it does not run (gone or a zombie). No waiting.
func cmdAlive(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, len(args) == 1, "alive PID")
	pid := atoi(ts, args[0])
	if isAlive(pid) == neg {
		if neg {
			ts.Fatalf("process %d is running (state %c)", pid, procState(pid))
		}
		ts.Fatalf("process %d is not running", pid)
	}
}

// cmdWaitgone: waitgone PID waits, 30 s at most, until PID is no process
// at all. A zombie still holds its PID (a restore cannot take it), so
// waitgone waits for it to be reaped too; the test reaps what `start`
// started.
func cmdWaitgone(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 1, "waitgone PID")
	pid := atoi(ts, args[0])
	if !waitFor(defaultWait, func() bool { return procState(pid) == 0 }) {
		ts.Fatalf("process %d still exists after %v (state %c)", pid, defaultWait, procState(pid))
	}
}

// cmdStopped: stopped PID waits until some thread of PID is stopped
// (ptrace or job control); ! stopped PID waits until none is. 30 s at most.
func cmdStopped(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, len(args) == 1, "stopped PID")
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
	if !waitFor(defaultWait, func() bool { return anyStopped() != neg }) {
		ts.Fatalf("process %d: stopped=%v after %v", pid, !neg, defaultWait)
	}
}

// cmdReadvars: readvars FILE PREFIX sets $PREFIX_KEY for every KEY=VALUE
// line of FILE (a workload's ready file: pid=, addr=, ...).
func cmdReadvars(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2, "readvars FILE PREFIX")
	n := 0
	for _, line := range strings.Split(ts.ReadFile(args[0]), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			ts.Setenv(args[1]+"_"+k, v)
			n++
		}
	}
	if n == 0 {
		ts.Fatalf("readvars: no KEY=VALUE line in %s", args[0])
	}
}

// cmdPokemem: pokemem PID ADDR VALUE writes VALUE as 8 little-endian bytes
// at the hex address ADDR of the process, through /proc/PID/mem: a control
// run changes the memory behind the workload's back and expects its check
// to notice.
func cmdPokemem(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 3, "pokemem PID ADDR VALUE")
	addr, err := strconv.ParseUint(strings.TrimPrefix(args[1], "0x"), 16, 64)
	if err != nil {
		ts.Fatalf("pokemem: address %q is not hexadecimal", args[1])
	}
	val, err := strconv.ParseUint(args[2], 0, 64)
	ts.Check(err)
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", atoi(ts, args[0])), os.O_WRONLY, 0)
	ts.Check(err)
	defer f.Close()
	b := binary.LittleEndian.AppendUint64(nil, val)
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		ts.Fatalf("pokemem: write at %#x: %v", addr, err)
	}
}

// cmdSignal: signal PID SIG sends SIG (a name, with or without SIG, or a
// number) to PID.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2, "signal PID SIGNAME")
	name := strings.ToUpper(args[1])
	sig := unix.SignalNum(name)
	if sig == 0 {
		sig = unix.SignalNum("SIG" + name)
	}
	if n, err := strconv.Atoi(name); err == nil {
		sig = syscall.Signal(n)
	}
	if sig == 0 {
		ts.Fatalf("signal: unknown signal %s", args[1])
	}
	ts.Check(syscall.Kill(atoi(ts, args[0]), sig))
}

// cmdParent: parent PID prints "ppid=N comm=NAME" for PID's parent, so a
// script can check a restored process is not relocate's child.
func cmdParent(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 1, "parent PID")
	f := statFields(atoi(ts, args[0]))
	if len(f) < 2 {
		ts.Fatalf("parent: no process %s", args[0])
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%s/comm", f[1]))
	fmt.Fprintf(ts.Stdout(), "ppid=%s comm=%s\n", f[1], bytes.TrimSpace(comm))
}

// offsetArg reads OFFSET for truncate and corrupt: a byte count, "half"
// (of size), or a negative count from the end.
func offsetArg(ts *testscript.TestScript, s string, size int64) int64 {
	if s == "half" || s == "middle" {
		return size / 2
	}
	n := int64(atoi(ts, s))
	if n < 0 {
		n += size
	}
	if n < 0 || n > size {
		ts.Fatalf("offset %s is outside a file of %d bytes", s, size)
	}
	return n
}

// cmdTruncate: truncate FILE SIZE cuts FILE to SIZE bytes: a number,
// "half", or -N (N bytes fewer).
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2, "truncate FILE SIZE|half|-N")
	path := ts.MkAbs(args[0])
	fi, err := os.Stat(path)
	ts.Check(err)
	ts.Check(os.Truncate(path, offsetArg(ts, args[1], fi.Size())))
}

// cmdCorrupt: corrupt FILE OFFSET flips every bit of the byte at OFFSET: a
// number, "middle", or -N (the Nth byte from the end).
func cmdCorrupt(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2, "corrupt FILE OFFSET|middle|-N")
	path := ts.MkAbs(args[0])
	b, err := os.ReadFile(path)
	ts.Check(err)
	off := offsetArg(ts, args[1], int64(len(b)))
	if off >= int64(len(b)) {
		ts.Fatalf("corrupt: offset %d is past the end of %s (%d bytes)", off, args[0], len(b))
	}
	b[off] ^= 0xff
	ts.Check(os.WriteFile(path, b, 0o600))
}

// cmdLines: lines FILE N checks FILE (stdout, stderr or a path) has
// exactly N lines.
func cmdLines(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2, "lines stdout|stderr|FILE N")
	text := ts.ReadFile(args[0])
	n := strings.Count(text, "\n")
	if text != "" && !strings.HasSuffix(text, "\n") {
		n++
	}
	if n != atoi(ts, args[1]) {
		ts.Fatalf("%s has %d lines, want %s:\n%s", args[0], n, args[1], text)
	}
}

// cmdOneerror: oneerror [stderr|FILE] checks the text (stderr by default)
// is what an expected failure prints: exactly one "relocate: error: " line,
// then nothing but "relocate: hint: " lines, and no hint that it looks like
// a bug (that is for failures nobody expected).
func cmdOneerror(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) <= 1, "oneerror [stderr|FILE]")
	name := "stderr"
	if len(args) == 1 {
		name = args[0]
	}
	text := ts.ReadFile(name)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	bad := !strings.HasPrefix(lines[0], "relocate: error: ")
	for _, l := range lines[1:] {
		bad = bad || !strings.HasPrefix(l, "relocate: hint: ") || strings.Contains(l, "looks like a bug")
	}
	if bad || !strings.HasSuffix(text, "\n") {
		ts.Fatalf("%s is not one error line and hints:\n%s", name, text)
	}
}

// cmdNetlocks: netlocks NAME... checks those network lock tables exist;
// ! netlocks NAME... checks those do not; ! netlocks alone checks
// relocate left none at all.
func cmdNetlocks(ts *testscript.TestScript, neg bool, args []string) {
	have := lockTables()
	if neg && len(args) > 0 {
		for _, name := range args {
			if have[name] {
				ts.Fatalf("network lock table %s left (have %v)", name, have)
			}
		}
		return
	}
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

// cmdRuleset: ruleset prints `nft list ruleset` without relocate's lock
// tables, which scripts running alongside may be holding; a script checks
// its own with netlocks.
func cmdRuleset(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 0, "ruleset")
	out, err := exec.Command("nft", "list", "ruleset").Output()
	ts.Check(err)
	skip := false
	for _, line := range strings.SplitAfter(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "table inet relocate_"):
			skip = true
		case skip && strings.TrimSpace(line) == "}" && !strings.HasPrefix(line, "\t"):
			skip = false
		case !skip:
			fmt.Fprint(ts.Stdout(), line)
		}
	}
}

// cmdUnlock: unlock PID lifts the network lock a dump of PID left (for
// control runs that show what the lock is for).
func cmdUnlock(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 1, "unlock PID")
	ts.Check(sock.UnlockTable("relocate_" + args[0]))
}
