package ptrace

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Arch is the architecture this build handles, as Go names it.
const Arch = "arm64"

// SyscallInsn is "svc #0; brk #0" (0xd4000001, 0xd4200000): the code
// relocate places in its own code page in a restore stub. brk traps with
// SIGTRAP and leaves pc on itself.
var SyscallInsn = []byte{0x01, 0x00, 0x00, 0xd4, 0x00, 0x00, 0x20, 0xd4}

// Regs is a thread's general-purpose registers (struct user_pt_regs: x0 to
// x30, sp, pc, pstate). The syscall number the kernel acts on is not among
// them: SetRegs sets it (NT_ARM_SYSTEM_CALL) to "none".
type Regs struct{ r unix.PtraceRegs }

// PC returns the program counter.
func (r *Regs) PC() uint64 { return r.r.Pc }

// SetPC points the thread at addr.
func (r *Regs) SetPC(addr uint64) { r.r.Pc = addr }

// SP returns the stack pointer.
func (r *Regs) SP() uint64 { return r.r.Sp }

// Ret returns the register a syscall returns its result in (x0).
func (r *Regs) Ret() uint64 { return r.r.Regs[0] }

// setSyscall follows the arm64 syscall convention: number in x8,
// arguments in x0 to x5.
func (r *Regs) setSyscall(ip, nr uint64, args []uint64) {
	r.r.Pc = ip
	r.r.Regs[8] = nr
	for i := 0; i < 6; i++ {
		r.r.Regs[i] = 0
		if i < len(args) {
			r.r.Regs[i] = args[i]
		}
	}
}

// ForResume turns the registers of a thread frozen in an interrupt stop
// into the registers it must resume with after a restore. Unlike x86,
// arm64 applies the restart rules before the stop, "so that a debugger
// will see the already changed PC" (arch/arm64/kernel/signal.c,
// do_signal): for -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND and
// -ERESTART_RESTARTBLOCK the kernel has put orig_x0 back into x0 and
// moved pc back 4 bytes onto the svc, and forgotten the syscall (syscallno
// -1). x8 still holds the original syscall number: only after the stop
// would the kernel swap in restart_syscall for -ERESTART_RESTARTBLOCK, and
// that restart_block cannot migrate anyway. So the registers as seen
// re-run the interrupted syscall with its own arguments (a relative
// timeout waits again in full), as on amd64, and need no change; the
// syscall number register is reset by SetRegs.
func (r Regs) ForResume() Regs { return r }

// Marshal returns the registers as the NT_PRSTATUS regset.
func (r *Regs) Marshal() []byte { return marshalPrstatus(&r.r) }

// UnmarshalRegs decodes an NT_PRSTATUS regset.
func UnmarshalRegs(b []byte) (Regs, error) {
	r, err := unmarshalPrstatus(b)
	return Regs{r}, err
}

// GetRegs reads the general-purpose registers (arm64 has no
// PTRACE_GETREGS: NT_PRSTATUS through PTRACE_GETREGSET).
// Precondition: called on the tracer thread.
func GetRegs(tid int) (Regs, error) {
	b, err := GetRegSet(tid, unix.NT_PRSTATUS, make([]byte, PrstatusSize))
	if err != nil {
		return Regs{}, err
	}
	r, err := unmarshalPrstatus(b)
	if err != nil {
		return Regs{}, &Error{Op: "PTRACE_GETREGSET(NT_PRSTATUS)", TID: tid, Err: err}
	}
	return Regs{r}, nil
}

// SetRegs writes the general-purpose registers and sets the syscall
// number register to -1 (NO_SYSCALL), the arm64 counterpart of orig_rax =
// -1: whatever stop the thread is in, the kernel takes it as not inside a
// syscall and applies no restart rule to the registers just written. Never
// called in a syscall-entry stop, where -1 would skip the syscall.
// Precondition: called on the tracer thread.
func SetRegs(tid int, r *Regs) error {
	if err := SetRegSet(tid, unix.NT_PRSTATUS, r.Marshal()); err != nil {
		return err
	}
	no := make([]byte, 4)
	binary.LittleEndian.PutUint32(no, ^uint32(0))
	return SetRegSet(tid, unix.NT_ARM_SYSTEM_CALL, no)
}

// FindSyscallInsn returns the offset of an svc #0 instruction in code,
// or -1. Instructions are 4-byte aligned.
func FindSyscallInsn(code []byte) int {
	for i := 0; i+4 <= len(code); i += 4 {
		if binary.LittleEndian.Uint32(code[i:]) == 0xd4000001 {
			return i
		}
	}
	return -1
}
