package ptrace

import (
	"testing"

	"golang.org/x/sys/unix"
)

// logFrozenInSyscall notes what arm64 shows of sleep frozen in
// clock_nanosleep: pc already back on the svc, x8 the syscall.
func logFrozenInSyscall(t *testing.T, r *Regs) {
	if r.r.Regs[8] != unix.SYS_CLOCK_NANOSLEEP {
		t.Logf("x8 at freeze = %d (expected clock_nanosleep)", r.r.Regs[8])
	}
}

// noRestart undoes the kernel's restart: pc after the svc, the raw
// -code in x0 as the syscall's result.
func noRestart(r Regs, code uint64) Regs {
	r.r.Pc += 4
	r.r.Regs[0] = -code
	return r
}

func TestFindSyscallInsn(t *testing.T) {
	code := []byte{0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0xd4, 0x00, 0x01, 0x00, 0x00, 0xd4}
	if got := FindSyscallInsn(code); got != 8 {
		t.Fatalf("svc at %d, want 8 (an unaligned match does not count)", got)
	}
}

// sampleRegs has 1 in its first word and 9 in its last.
func sampleRegs() Regs {
	r := Regs{unix.PtraceRegs{Sp: 0xffff0000, Pc: 0x400000, Pstate: 9}}
	r.r.Regs[0] = 1
	return r
}
