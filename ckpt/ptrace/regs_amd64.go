package ptrace

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// Arch is the architecture this build handles, as Go names it.
const Arch = "amd64"

// SyscallInsn is "syscall; int3": the code relocate places in its own code
// page in a restore stub.
var SyscallInsn = []byte{0x0f, 0x05, 0xcc}

// Regs is a thread's general-purpose registers (struct user_regs_struct).
// orig_rax is among them: the syscall a thread is in, or -1.
type Regs struct{ r unix.PtraceRegs }

// PC returns the instruction pointer.
func (r *Regs) PC() uint64 { return r.r.Rip }

// SetPC points the thread at addr.
func (r *Regs) SetPC(addr uint64) { r.r.Rip = addr }

// SP returns the stack pointer.
func (r *Regs) SP() uint64 { return r.r.Rsp }

// Ret returns the register a syscall returns its result in.
func (r *Regs) Ret() uint64 { return r.r.Rax }

func (r *Regs) setSyscall(ip, nr uint64, args []uint64) {
	r.r.Rip = ip
	r.r.Rax = nr
	r.r.Orig_rax = ^uint64(0) // not in a syscall: no restart on resume
	regs := []*uint64{&r.r.Rdi, &r.r.Rsi, &r.r.Rdx, &r.r.R10, &r.r.R8, &r.r.R9}
	for i := range regs {
		*regs[i] = 0
		if i < len(args) {
			*regs[i] = args[i]
		}
	}
}

// Kernel-internal restart codes a task frozen in a syscall may show in rax
// (include/linux/errno.h).
const (
	errRestartSys         = 512
	errRestartNoIntr      = 513
	errRestartNoHand      = 514
	errRestartRestartBlck = 516
)

// ForResume turns the registers of a thread frozen in an interrupt stop
// into the registers it must resume with after a restore, on this kernel
// or another. x86 applies the restart rules after the stop
// (arch_do_signal_or_restart), so a tracer sees the raw -ERESTART* code in
// rax and orig_rax >= 0. A syscall interrupted by the freeze is set up to
// run again: its arguments are still in rdi..r9. That includes
// -ERESTART_RESTARTBLOCK (nanosleep, poll, futex with a timeout), whose
// kernel restart_block cannot migrate: re-running the original syscall
// waits a relative timeout again in full, where turning it into EINTR
// makes programs like tail -f exit. orig_rax becomes -1 so the restored
// kernel does not adjust the registers a second time.
func (r Regs) ForResume() Regs {
	if int64(r.r.Orig_rax) >= 0 {
		switch -int64(r.r.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlck:
			r.r.Rax = r.r.Orig_rax
			r.r.Rip -= 2
		}
	}
	r.r.Orig_rax = ^uint64(0)
	return r
}

// Marshal returns the registers as the NT_PRSTATUS regset.
func (r *Regs) Marshal() []byte { return marshalPrstatus(&r.r) }

// UnmarshalRegs decodes an NT_PRSTATUS regset.
func UnmarshalRegs(b []byte) (Regs, error) {
	r, err := unmarshalPrstatus(b)
	return Regs{r}, err
}

// GetRegs reads the general-purpose registers.
// Precondition: called on the tracer thread.
func GetRegs(tid int) (Regs, error) {
	var r Regs
	if err := unix.PtraceGetRegs(tid, &r.r); err != nil {
		return r, &Error{Op: "PTRACE_GETREGS", TID: tid, Err: err}
	}
	return r, nil
}

// SetRegs writes the general-purpose registers.
// Precondition: called on the tracer thread.
func SetRegs(tid int, r *Regs) error {
	if err := unix.PtraceSetRegs(tid, &r.r); err != nil {
		return &Error{Op: "PTRACE_SETREGS", TID: tid, Err: err}
	}
	return nil
}

// FindSyscallInsn returns the offset of a syscall instruction (0f 05) in
// code, or -1.
func FindSyscallInsn(code []byte) int { return bytes.Index(code, []byte{0x0f, 0x05}) }
