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

// TestInjectIntoInterruptedSleep freezes sleep(1) inside clock_nanosleep,
// injects getpid and detaches: sleep must finish normally, which needs the
// kernel to restart the interrupted syscall (rax = -ERESTART_RESTARTBLOCK).
func TestInjectIntoInterruptedSleep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ptrace")
	}
	for _, rearm := range []bool{true, false} {
		t.Run(fmt.Sprintf("restart=%v", rearm), func(t *testing.T) {
			cmd := exec.Command("sleep", "0.3")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			// Wait until sleep is in clock_nanosleep (state S).
			for {
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				if i := bytes.LastIndexByte(st, ')'); i > 0 && st[i+2] == 'S' {
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
				logFrozenInSyscall(t, &saved)
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
				if !rearm {
					// Control: hand sleep the raw -ERESTART_RESTARTBLOCK
					// instead of restarting its syscall.
					broken := noRestart(saved)
					if err := SetRegs(pid, &broken); err != nil {
						return err
					}
				}
				return Detach(pid, 0)
			})
			if err != nil {
				t.Fatal(err)
			}
			werr := cmd.Wait()
			if rearm && werr != nil {
				t.Fatalf("sleep after injection: %v", werr)
			}
			if !rearm && werr == nil {
				t.Fatal("control: without the restart sleep should see the raw -ERESTART code and fail")
			}
		})
	}
}
