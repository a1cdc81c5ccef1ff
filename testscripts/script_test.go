package testscripts

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/cmd"
	"github.com/relocate/relocate/sock"
)

// TestMain registers relocate itself as a command of the scripts. The test
// binary is re-executed under that name for every `exec relocate`, running
// the same cmd.Main as the real binary; so nothing expensive may happen
// here (the workloads are compiled once, in TestScripts).
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"relocate": func() { os.Exit(cmd.Main()) },
	})
}

// markerVar is set in the environment of everything a script starts, to
// the script's $WORK. A process that carries it (or whose cwd lies under
// $WORK) is a leftover of that script and is killed when the script ends.
const markerVar = "RELOCATE_TESTSCRIPT"

// inCI reports whether a skip must count as a failure: CI runs as root
// with every tool installed, so a test that skips there is a test that
// silently stopped testing.
func inCI() bool { return os.Getenv("CI") != "" }

// Keys of the values Setup stores for the commands: the script's
// testscript.T (to skip) and its *procs.
type (
	scriptTKey struct{}
	procsKey   struct{}
)

func TestScripts(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil && os.Getenv("RELOCATE_WORKLOADS") == "" {
		if inCI() {
			t.Fatal("gcc is missing: the workloads are C programs (the README's test command installs it)")
		}
		t.Skip("gcc is missing: the workloads are C programs (apt-get install gcc)")
	}
	// Descriptors this test inherited must not leak into workloads: relocate
	// would record a pipe to a process outside the checkpoint as external.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	bin := buildWorkloads(t)
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
			e.Setenv("PATH", bin+string(os.PathListSeparator)+e.Getenv("PATH"))
			e.Setenv("WORKLOADS", bin)
			e.Setenv(markerVar, e.WorkDir)
			if v := os.Getenv("RELOCATE_WAIT_SCALE"); v != "" {
				e.Setenv("RELOCATE_WAIT_SCALE", v) // for the workloads' own bounds
			}
			e.Values[scriptTKey{}] = e.T()
			e.Values[procsKey{}] = &procs{}
			e.Defer(func() { cleanup(e) })
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				if os.Geteuid() != 0 && inCI() {
					return false, errors.New("CI must run as root: privileged scripts may not skip")
				}
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: commands,
	})
}

// buildWorkloads compiles every workload into a temporary directory that
// the scripts get on their PATH (and as $WORKLOADS).
//
// RELOCATE_WORKLOADS names a directory of workloads built already: the
// kernel matrix builds them on the host and runs the scripts in guests
// that have no writable toolchain cache.
func buildWorkloads(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("RELOCATE_WORKLOADS"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	srcs, err := filepath.Glob("workloads/*.c")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no workloads/*.c (%v)", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(srcs))
	for i, src := range srcs {
		wg.Go(func() {
			name := strings.TrimSuffix(filepath.Base(src), ".c")
			out, err := exec.Command("gcc", "-Wall", "-Werror", "-O1", "-pthread",
				"-o", filepath.Join(dir, name), src, "-lrt").CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("gcc %s: %v\n%s", src, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "goticker"), "./workloads/goticker").CombinedOutput()
	if err != nil {
		t.Fatalf("go build goticker: %v\n%s", err, out)
	}
	pys, _ := filepath.Glob("workloads/*.py")
	for _, py := range pys {
		abs, err := filepath.Abs(py)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(dir, filepath.Base(py))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// procs remembers what a script started, to kill it at the end.
type procs struct {
	mu      sync.Mutex
	started map[int]uint64 // pid -> start time (clock ticks since boot)
	tracked map[int]bool
}

func scriptProcs(ts *testscript.TestScript) *procs {
	return ts.Value(procsKey{}).(*procs)
}

func (p *procs) start(pid int, starttime uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started == nil {
		p.started = map[int]uint64{}
	}
	p.started[pid] = starttime
}

func (p *procs) track(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tracked == nil {
		p.tracked = map[int]bool{}
	}
	p.tracked[pid] = true
}

// cleanup runs when a script ends, passed or failed. It SIGKILLs, by PID:
// every PID given to `track` (a restored process keeps its PID but not its
// start time); every process `start` started that is still that process
// (same start time: PIDs get reused); and every process that carries the
// script's marker in its environment or has its cwd under $WORK (children
// of workloads, restored processes, a pipeline's members). It goes on
// until none of the last two kinds is left, 10 s at most, identifying them
// afresh each round, so that a PID reused meanwhile is left alone.
func cleanup(e *testscript.Env) {
	p := e.Values[procsKey{}].(*procs)
	p.mu.Lock()
	defer p.mu.Unlock()
	kill := func(pid int) bool {
		if pid <= 1 || pid == os.Getpid() || !isAlive(pid) {
			return false
		}
		syscall.Kill(pid, syscall.SIGKILL)
		return true
	}
	for pid := range p.tracked {
		kill(pid)
	}
	marker := []byte(markerVar + "=" + e.WorkDir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for pid, st := range p.started {
			if got, ok := startTime(pid); ok && got == st && kill(pid) {
				left++
			}
		}
		for pid := range scriptLeftovers(marker, e.WorkDir) {
			if kill(pid) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.T().Log(fmt.Sprintf("cleanup: %d processes of the script still running after SIGKILL", left))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scriptLeftovers lists the live processes that belong to a script: those
// whose environment holds marker or whose cwd is under work.
func scriptLeftovers(marker []byte, work string) map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() || !isAlive(pid) {
			continue
		}
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
			for _, kv := range bytes.Split(env, []byte{0}) {
				if bytes.Equal(kv, marker) {
					out[pid] = true
				}
			}
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
			if cwd == work || strings.HasPrefix(cwd, work+"/") {
				out[pid] = true
			}
		}
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the comm, so that
// index 0 is field 3 (state) of proc(5).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// startTime is field 22 of /proc/PID/stat: with the PID, it identifies a
// process.
func startTime(pid int) (uint64, bool) {
	f := statFields(pid)
	if len(f) < 20 {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

// procState is the state letter of /proc/PID/stat, 0 if there is no such
// process.
func procState(pid int) byte {
	f := statFields(pid)
	if len(f) == 0 || f[0] == "" {
		return 0
	}
	return f[0][0]
}

// isAlive: the process exists and is neither a zombie nor dead.
func isAlive(pid int) bool {
	s := procState(pid)
	return s != 0 && s != 'Z' && s != 'X'
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
