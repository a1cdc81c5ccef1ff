package ptrace

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHelperThreads is no test: run by TestWaitKilledLeader as a
// multi-threaded process (a Go program has several threads) that sleeps.
func TestHelperThreads(t *testing.T) {
	if os.Getenv("PTRACE_TEST_HELPER") != "threads" {
		t.Skip("a helper process for TestWaitKilledLeader")
	}
	time.Sleep(time.Minute)
}

// TestWaitKilledLeader seizes every thread of a multi-threaded process,
// kills it, and waits for its leader: the leader's exit is reported only
// once the other threads, which we trace, are reaped, and Wait must see
// to it rather than wait for ever (a dump hung so when the process was
// killed under an injected syscall, in CI). The bound is a guard against
// that hang, not a speed check.
func TestWaitKilledLeader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ptrace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperThreads$")
	cmd.Env = append(os.Environ(), "PTRACE_TEST_HELPER=threads")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	var tids []int
	for i := 0; len(tids) < 3; i++ {
		if i > 1000 {
			t.Fatalf("the helper has %d threads, want 3 or more", len(tids))
		}
		time.Sleep(5 * time.Millisecond)
		ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		tids = tids[:0]
		for _, e := range ents {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				tids = append(tids, n)
			}
		}
	}
	tr := NewTracer()
	defer tr.Close()
	if err := tr.Do(func() error {
		for _, tid := range tids {
			if err := Seize(tid, 0); err != nil {
				return err
			}
			if err := Interrupt(tid); err != nil {
				return err
			}
		}
		for _, tid := range tids {
			if _, err := WaitStop(tid); err != nil {
				return err
			}
		}
		return unix.Kill(pid, unix.SIGKILL)
	}); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		got <- tr.Do(func() error {
			ws, err := Wait(pid)
			if err == nil && !ws.Signaled() {
				t.Errorf("the leader reported %v, want killed", ws)
			}
			return err
		})
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait for a killed leader hangs: its other threads, traced, were never reaped")
	}
}
