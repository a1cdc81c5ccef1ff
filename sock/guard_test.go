package sock

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	if GuardMain() {
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestGuardRemovesLocksOfAKilledProcess: a process holding two locks is
// SIGKILLed; the one it had persisted stays (control: the check sees
// tables), the other is gone.
func TestGuardRemovesLocksOfAKilledProcess(t *testing.T) {
	if os.Getenv("RELOCATE_GUARD_CHILD") != "" {
		_, err1 := NewLock("relocate_2000000201", []Conn{{LocalPort: 1, PeerPort: 2}}, nil)
		b, err2 := NewLock("relocate_2000000202", []Conn{{LocalPort: 3, PeerPort: 4}}, []uint16{5})
		if err1 != nil || err2 != nil {
			os.Exit(3)
		}
		b.Persist()
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	needLock(t)
	t.Cleanup(func() { _ = UnlockTable("relocate_2000000202"); _ = UnlockTable("relocate_2000000201") })
	cmd := exec.Command(os.Args[0], "-test.run=^TestGuardRemovesLocksOfAKilledProcess$")
	cmd.Env = append(os.Environ(), "RELOCATE_GUARD_CHILD=1")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("child: %v", err)
	}
	// The guard notices the end of its pipe at once; give it a moment.
	gone := false
	for i := 0; i < 300 && !gone; i++ {
		gone = !tableNames(t)["relocate_2000000201"]
		if !gone {
			syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil)
		}
	}
	if !gone {
		t.Error("the table of the killed process is still there")
	}
	if !tableNames(t)["relocate_2000000202"] {
		t.Error("the persisted table went with its maker")
	}
}
