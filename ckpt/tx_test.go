package ckpt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// procState reads the state letter of pid.
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return b[bytes.LastIndexByte(b, ')')+2]
}

// TestHoldSurvivesAndSettles: a dumped tree, held, stays stopped (not
// traced) for as long as nobody settles it; Rollback lets it run again.
// Control: before Hold the process is traced, after Rollback it runs.
func TestHoldSurvivesAndSettles(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (ptrace)")
		}
		t.Skip("needs root (ptrace)")
	}
	c := exec.Command("/usr/bin/python3", "-c", "import os, time\nos.closerange(3, 4096)\nwhile True: time.sleep(0.01)")
	if err := c.Start(); err != nil {
		t.Skip("python3:", err)
	}
	defer c.Process.Kill()
	pid := c.Process.Pid
	for i := 0; i < 300; i++ { // until it closed what it inherited
		if fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); len(fds) == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := DumpTx(context.Background(), pid, io.Discard, DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := procState(t, pid); s != 't' {
		t.Fatalf("dumped process in state %c, want t (traced)", s)
	}
	h, err := f.Hold()
	if err != nil {
		t.Fatal(err)
	}
	var states []byte
	for i := 0; i < 50; i++ {
		states = append(states, procState(t, pid))
		time.Sleep(time.Millisecond)
	}
	if bytes.ContainsAny(states, "RS") {
		t.Fatalf("held process states, each ms: %s", states)
	}
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(st), "TracerPid:\t0") {
		t.Fatal("held process is still traced")
	}
	if len(h.Procs) != 1 || h.Procs[0].PID != pid || h.Procs[0].Stopped {
		t.Fatalf("held %+v", h.Procs)
	}
	if err := f.Rollback(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if s := procState(t, pid); s == 'T' || s == 't' {
		t.Fatalf("rolled back process in state %c", s)
	}
}
