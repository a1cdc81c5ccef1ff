package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SyscallInsn is "syscall; int3": the code relocate places in its own code
// page in a restore stub.
var SyscallInsn = []byte{0x0f, 0x05, 0xcc}

func setSyscallRegs(r *unix.PtraceRegs, ip, nr uint64, args []uint64) {
	r.Rip = ip
	r.Rax = nr
	r.Orig_rax = ^uint64(0) // not in a syscall: no restart on resume
	regs := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i := range regs {
		*regs[i] = 0
		if i < len(args) {
			*regs[i] = args[i]
		}
	}
}

func result(tid int, nr uint64, rax uint64) (uint64, error) {
	if int64(rax) < 0 && int64(rax) > -4096 {
		return rax, &Error{Op: fmt.Sprintf("injected syscall %d", nr), TID: tid, Err: unix.Errno(-int64(rax))}
	}
	return rax, nil
}

// InjectSyscallStop runs syscall nr in the stopped tracee by pointing rip at
// an existing syscall instruction at ip and stepping it with PTRACE_SYSCALL.
// Nothing is written into the tracee's memory. base is the register set to
// start from (the tracee's own, usually); the registers are left modified:
// the caller restores them and must call Rearm before the final detach.
// Precondition: called on the tracer thread; tid is in a ptrace stop and has
// every signal blocked (a pending signal would be delivered first).
func InjectSyscallStop(tid int, base *unix.PtraceRegs, ip, nr uint64, args ...uint64) (uint64, error) {
	r := *base
	setSyscallRegs(&r, ip, nr, args)
	if err := SetRegs(tid, &r); err != nil {
		return 0, err
	}
	for i := 0; i < 2; i++ { // syscall entry, then exit
		if err := Syscall(tid, 0); err != nil {
			return 0, err
		}
		s, err := WaitStop(tid)
		if err != nil {
			return 0, err
		}
		if !s.IsSyscall() {
			return 0, &Error{Op: fmt.Sprintf("injected syscall %d", nr), TID: tid, Err: fmt.Errorf("unexpected %s", s)}
		}
	}
	out, err := GetRegs(tid)
	if err != nil {
		return 0, err
	}
	return result(tid, nr, out.Rax)
}

// Rearm restores regs and brings a tracee that sits in a syscall-exit stop
// back into an interrupt (event) stop. This matters for a task frozen inside
// an interrupted syscall: the kernel restarts it (-ERESTART* in rax) only on
// the signal-delivery path, which an event stop is on and a syscall-exit stop
// is not.
// Precondition: called on the tracer thread; tid was seized.
func Rearm(tid int, regs *unix.PtraceRegs) error {
	if err := SetRegs(tid, regs); err != nil {
		return err
	}
	if err := Interrupt(tid); err != nil {
		return err
	}
	if err := Cont(tid, 0); err != nil {
		return err
	}
	s, err := WaitStop(tid)
	if err != nil {
		return err
	}
	if !s.IsGroupStop() {
		return &Error{Op: "rearm", TID: tid, Err: fmt.Errorf("unexpected %s", s)}
	}
	return nil
}

// InjectTrap runs syscall nr in the stopped tracee through SyscallInsn placed
// at ip, resuming it with PTRACE_CONT until the int3 traps. Used in restore
// stubs, whose registers are not worth keeping.
// Precondition: called on the tracer thread.
func InjectTrap(tid int, ip, nr uint64, args ...uint64) (uint64, error) {
	if err := StartTrap(tid, ip, nr, args...); err != nil {
		return 0, err
	}
	return FinishTrap(tid, nr)
}

// StartTrap sets up and resumes the syscall; FinishTrap waits for the int3.
// Split so that clone events can be handled in between.
func StartTrap(tid int, ip, nr uint64, args ...uint64) error {
	r, err := GetRegs(tid)
	if err != nil {
		return err
	}
	setSyscallRegs(&r, ip, nr, args)
	if err := SetRegs(tid, &r); err != nil {
		return err
	}
	return Cont(tid, 0)
}

// FinishTrap waits for the int3 after an injected syscall and returns rax.
func FinishTrap(tid int, nr uint64) (uint64, error) {
	s, err := WaitStop(tid)
	if err != nil {
		return 0, err
	}
	if s.Status.StopSignal() != unix.SIGTRAP || s.Event() != 0 {
		return 0, &Error{Op: fmt.Sprintf("injected syscall %d", nr), TID: tid, Err: fmt.Errorf("unexpected %s", s)}
	}
	r, err := GetRegs(tid)
	if err != nil {
		return 0, err
	}
	return result(tid, nr, r.Rax)
}
