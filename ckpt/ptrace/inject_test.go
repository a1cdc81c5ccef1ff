package ptrace

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// vdsoSyscall finds a syscall instruction in pid's vDSO.
func vdsoSyscall(t *testing.T, pid int) uint64 {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		if !strings.HasSuffix(sc.Text(), "[vdso]") {
			continue
		}
		rng := strings.SplitN(strings.Fields(sc.Text())[0], "-", 2)
		lo, _ := strconv.ParseUint(rng[0], 16, 64)
		hi, _ := strconv.ParseUint(rng[1], 16, 64)
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, hi-lo)
		if _, err := f.ReadAt(b, int64(lo)); err != nil {
			t.Fatal(err)
		}
		if i := FindSyscallInsn(b); i >= 0 {
			return lo + uint64(i)
		}
	}
	t.Fatal("no syscall instruction in the vDSO")
	return 0
}

// TestInjectIntoInterruptedSyscall freezes a program inside a blocking
// syscall, injects getpid and detaches: the program must go on normally,
// which needs the kernel to restart the interrupted syscall. sleep is in
// clock_nanosleep (-ERESTART_RESTARTBLOCK), cat in read from an empty pipe
// (-ERESTARTSYS). The control hands cat the raw restart code instead: its
// read fails. (sleep is no control: busybox's ignores a failed nanosleep.)
func TestInjectIntoInterruptedSyscall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ptrace")
	}
	for _, c := range []struct {
		prog    string
		restart bool
	}{{"sleep", true}, {"cat", true}, {"cat", false}} {
		t.Run(fmt.Sprintf("%s/restart=%v", c.prog, c.restart), func(t *testing.T) {
			// Long enough to be still asleep when seized in a slow (TCG) guest.
			cmd := exec.Command("sleep", "2")
			var in *os.File
			var out bytes.Buffer
			if c.prog == "cat" {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				cmd = exec.Command("cat")
				cmd.Stdin, cmd.Stdout, in = r, &out, w
				defer r.Close()
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			// Wait until it runs the program (not the forked test binary
			// before its exec) and blocks in its syscall (state S).
			for {
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				if i := bytes.LastIndexByte(st, ')'); i > 0 && st[i+2] == 'S' && bytes.Contains(st, []byte("("+c.prog+")")) {
					break
				}
			}
			ip := vdsoSyscall(t, pid)
			tr := NewTracer()
			defer tr.Close()
			err := tr.Do(func() error {
				if err := Seize(pid, unix.PTRACE_O_TRACESYSGOOD); err != nil {
					return err
				}
				if err := Interrupt(pid); err != nil {
					return err
				}
				if _, err := WaitStop(pid); err != nil {
					return err
				}
				saved, err := GetRegs(pid)
				if err != nil {
					return err
				}
				if c.prog == "sleep" {
					logFrozenInSyscall(t, &saved)
				}
				got, err := InjectSyscallStop(pid, &saved, ip, unix.SYS_GETPID)
				if err != nil {
					return err
				}
				if int(got) != pid {
					return fmt.Errorf("injected getpid = %d, want %d", got, pid)
				}
				if err := Rearm(pid, &saved); err != nil {
					return err
				}
				if !c.restart {
					broken := noRestart(saved, 512) // -ERESTARTSYS
					if err := SetRegs(pid, &broken); err != nil {
						return err
					}
				}
				return Detach(pid, 0)
			})
			if err != nil {
				t.Fatal(err)
			}
			if in != nil {
				in.WriteString("after\n")
				in.Close()
			}
			werr := cmd.Wait()
			if c.restart && (werr != nil || (c.prog == "cat" && out.String() != "after\n")) {
				t.Fatalf("%s after injection: %v, output %q", c.prog, werr, out.String())
			}
			if !c.restart && werr == nil {
				t.Fatalf("control: without the restart %s should see the raw -ERESTART code and fail (output %q)", c.prog, out.String())
			}
		})
	}
}
