package mem

import (
	"errors"
	"os/exec"
	"testing"
)

// A pagemap opened before the process's memory went away (an exec, an
// exit) reads nothing: Runs says so instead of reporting no pages.
func TestPagemapGone(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("sleep: %v", err)
	}
	defer cmd.Process.Kill()
	pm, err := OpenPagemap(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	r := Range{Start: 0x10000, End: 0x10000 + 64*PageSize}
	none := func(Range) error { return nil }
	all := func(uint64) bool { return true }
	if err := pm.Runs(r, 16, all, none); err != nil {
		t.Fatalf("live process: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	err = pm.Runs(r, 16, all, none)
	if !errors.Is(err, ErrGone) {
		t.Fatalf("after the exit: %v, want ErrGone", err)
	}
	// An answer about the world, printed as one line, not as a bug.
	var e interface{ Expected() bool }
	if !errors.As(err, &e) || !e.Expected() {
		t.Fatalf("%v is not marked expected", err)
	}
}
