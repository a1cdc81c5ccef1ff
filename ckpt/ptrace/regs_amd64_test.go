package ptrace

import (
	"testing"

	"golang.org/x/sys/unix"
)

// logFrozenInSyscall notes what x86 shows of sleep frozen in
// clock_nanosleep: the raw restart code, the syscall in orig_rax.
func logFrozenInSyscall(t *testing.T, r *Regs) {
	if int64(r.r.Rax) != -errRestartRestartBlck {
		t.Logf("rax at freeze = %d (expected -ERESTART_RESTARTBLOCK)", int64(r.r.Rax))
	}
}

// noRestart forgets that the task was in a syscall: the kernel then hands
// the raw restart code in rax (code, as the kernel left it) to the program.
func noRestart(r Regs, code uint64) Regs {
	r.r.Orig_rax = ^uint64(0)
	return r
}

func TestForResume(t *testing.T) {
	const nanosleep = 230
	for _, c := range []struct {
		name                 string
		rax, orig            uint64
		wantRax, wantRipBack uint64
	}{
		{"not in a syscall", 7, ^uint64(0), 7, 0},
		{"ERESTARTSYS", neg(errRestartSys), nanosleep, nanosleep, 2},
		{"ERESTARTNOINTR", neg(errRestartNoIntr), nanosleep, nanosleep, 2},
		{"ERESTARTNOHAND", neg(errRestartNoHand), nanosleep, nanosleep, 2},
		{"ERESTART_RESTARTBLOCK", neg(errRestartRestartBlck), nanosleep, nanosleep, 2},
		{"returned EINTR", neg(int(unix.EINTR)), nanosleep, neg(int(unix.EINTR)), 0},
		{"returned a value", 3, 0, 3, 0},
	} {
		in := Regs{unix.PtraceRegs{Rax: c.rax, Orig_rax: c.orig, Rip: 0x1000}}
		out := in.ForResume()
		if out.r.Rax != c.wantRax || out.r.Rip != 0x1000-c.wantRipBack || out.r.Orig_rax != ^uint64(0) {
			t.Errorf("%s: rax %#x rip %#x orig_rax %#x", c.name, out.r.Rax, out.r.Rip, out.r.Orig_rax)
		}
	}
}

func neg(e int) uint64 { return uint64(-int64(e)) }

// sampleRegs has 1 in its first word and 9 in its last.
func sampleRegs() Regs { return Regs{unix.PtraceRegs{R15: 1, Rip: 0x401000, Rsp: 0x7ffd0000, Gs: 9}} }
