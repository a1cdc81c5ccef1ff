package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Error names the ptrace operation and the thread it failed on.
type Error struct {
	Op  string
	TID int
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("%s tid %d: %v", e.Op, e.TID, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Stop describes why a tracee stopped.
type Stop struct {
	Status unix.WaitStatus
}

// Event returns the PTRACE_EVENT_* of an event stop, or 0.
func (s Stop) Event() int {
	if !s.Status.Stopped() {
		return 0
	}
	return int(s.Status>>16) & 0xff
}

// IsSyscall reports a syscall-enter/exit stop (PTRACE_O_TRACESYSGOOD).
func (s Stop) IsSyscall() bool {
	return s.Status.Stopped() && s.Status.StopSignal() == unix.SIGTRAP|0x80
}

// IsGroupStop reports an event stop caused by PTRACE_INTERRUPT or a group
// stop of a seized tracee.
func (s Stop) IsGroupStop() bool { return s.Event() == unix.PTRACE_EVENT_STOP }

func (s Stop) String() string {
	ws := s.Status
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v", ws.Signal())
	case s.IsSyscall():
		return "syscall stop"
	case s.Event() != 0:
		return fmt.Sprintf("event stop %d (%v)", s.Event(), ws.StopSignal())
	case ws.Stopped():
		return fmt.Sprintf("stopped by %v", ws.StopSignal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// WaitStop waits for tid and returns the stop; a tracee that exited or was
// killed is an error.
// Precondition: called on the tracer thread.
func WaitStop(tid int) (Stop, error) {
	ws, err := Wait(tid)
	if err != nil {
		return Stop{}, err
	}
	s := Stop{Status: ws}
	if !ws.Stopped() {
		return s, &Error{Op: "wait", TID: tid, Err: fmt.Errorf("tracee %s", s)}
	}
	return s, nil
}

func wrap(op string, tid int, err error) error {
	if err != nil {
		return &Error{Op: op, TID: tid, Err: err}
	}
	return nil
}

// Interrupt asks a seized tracee to stop (PTRACE_INTERRUPT).
func Interrupt(tid int) error {
	return wrap("PTRACE_INTERRUPT", tid, ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0))
}

// Cont resumes the tracee delivering sig (0 for none).
func Cont(tid, sig int) error {
	return wrap("PTRACE_CONT", tid, ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig)))
}

// Syscall resumes the tracee until the next syscall entry or exit.
func Syscall(tid, sig int) error {
	return wrap("PTRACE_SYSCALL", tid, ptrace(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig)))
}

// Detach detaches from the tracee, delivering sig (0 for none).
func Detach(tid, sig int) error {
	return wrap("PTRACE_DETACH", tid, ptrace(unix.PTRACE_DETACH, tid, 0, uintptr(sig)))
}

// SetOptions sets PTRACE_O_* options.
func SetOptions(tid, opts int) error {
	return wrap("PTRACE_SETOPTIONS", tid, ptrace(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(opts)))
}

// EventMsg returns PTRACE_GETEVENTMSG (the new tid after a clone event).
func EventMsg(tid int) (uint64, error) {
	m, err := unix.PtraceGetEventMsg(tid)
	return uint64(m), wrap("PTRACE_GETEVENTMSG", tid, err)
}

// PokeData writes len(b) bytes (a multiple of 8) at addr in the tracee.
func PokeData(tid int, addr uintptr, b []byte) error {
	_, err := unix.PtracePokeData(tid, addr, b)
	return wrap("PTRACE_POKEDATA", tid, err)
}

// PeekData reads len(b) bytes at addr in the tracee.
func PeekData(tid int, addr uintptr, b []byte) error {
	_, err := unix.PtracePeekData(tid, addr, b)
	return wrap("PTRACE_PEEKDATA", tid, err)
}
