package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func result(tid int, nr uint64, ret uint64) (uint64, error) {
	if int64(ret) < 0 && int64(ret) > -4096 {
		return ret, &Error{Op: fmt.Sprintf("injected syscall %d", nr), TID: tid, Err: unix.Errno(-int64(ret))}
	}
	return ret, nil
}

// InjectSyscallStop runs syscall nr in the stopped tracee by pointing the
// program counter at an existing syscall instruction at ip and stepping it
// with PTRACE_SYSCALL. Nothing is written into the tracee's memory. base is
// the register set to start from (the tracee's own, usually); the
// registers are left modified: the caller restores them and must call
// Rearm before the final detach.
// Precondition: called on the tracer thread; tid is in a ptrace stop and has
// every signal blocked (a pending signal would be delivered first).
func InjectSyscallStop(tid int, base *Regs, ip, nr uint64, args ...uint64) (uint64, error) {
	r := *base
	r.setSyscall(ip, nr, args)
	if err := SetRegs(tid, &r); err != nil {
		return 0, err
	}
	leftovers := 0
	for i := 0; i < 2; i++ { // syscall entry, then exit
		if err := Syscall(tid, 0); err != nil {
			return 0, err
		}
		s, err := WaitStop(tid)
		if err != nil {
			return 0, err
		}
		if i == 0 && s.IsGroupStop() && leftovers < 2 {
			// An interrupt left pending by the freeze (asked for twice,
			// taken once) traps before the syscall starts: nothing ran.
			leftovers++
			i--
			continue
		}
		if !s.IsSyscall() {
			return 0, &Error{Op: fmt.Sprintf("injected syscall %d", nr), TID: tid, Err: fmt.Errorf("unexpected %s", s)}
		}
	}
	out, err := GetRegs(tid)
	if err != nil {
		return 0, err
	}
	return result(tid, nr, out.Ret())
}

// Rearm restores regs and brings a tracee that sits in a syscall-exit stop
// back into an interrupt (event) stop. This matters for a task frozen inside
// an interrupted syscall: the kernel restarts it (-ERESTART* in the return
// register) only on the signal-delivery path, which an event stop is on and
// a syscall-exit stop is not.
// Precondition: called on the tracer thread; tid was seized.
func Rearm(tid int, regs *Regs) error {
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
// at ip, resuming it with PTRACE_CONT until the trap after it. Used in
// restore stubs, whose registers are not worth keeping.
// Precondition: called on the tracer thread.
func InjectTrap(tid int, ip, nr uint64, args ...uint64) (uint64, error) {
	if err := StartTrap(tid, ip, nr, args...); err != nil {
		return 0, err
	}
	return FinishTrap(tid, nr)
}

// StartTrap sets up and resumes the syscall; FinishTrap waits for the trap.
// Split so that clone events can be handled in between.
func StartTrap(tid int, ip, nr uint64, args ...uint64) error {
	r, err := GetRegs(tid)
	if err != nil {
		return err
	}
	r.setSyscall(ip, nr, args)
	if err := SetRegs(tid, &r); err != nil {
		return err
	}
	return Cont(tid, 0)
}

// FinishTrap waits for the trap after an injected syscall and returns the
// syscall's result.
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
	return result(tid, nr, r.Ret())
}

// TrapResult returns the return register of a tracee that stopped in the
// trap after SyscallInsn: the raw result of its syscall (-errno on
// failure), for a caller that waited for the stop itself.
// Precondition: called on the tracer thread.
func TrapResult(tid int) (uint64, error) {
	r, err := GetRegs(tid)
	if err != nil {
		return 0, err
	}
	return r.Ret(), nil
}
