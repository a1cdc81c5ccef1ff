package ckpt

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/ptrace"
)

// frozenTask is one seized, stopped thread of the process being dumped.
type frozenTask struct {
	tid   int
	pid   int         // its thread group
	regs  ptrace.Regs // as found at the freeze
	mask  uint64      // blocked signals as found at the freeze
	dirty bool        // regs or mask changed by injection: restore before detach
	// leftGroupStop: it was stopped by job control, and was let go on to
	// the interrupt's trap.
	leftGroupStop bool
}

// PTRACE_O_SUSPEND_SECCOMP: the syscalls the dump injects are not the
// process's own, and its seccomp filters must not stop them.
const seizeOptions = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_SUSPEND_SECCOMP

// freeze seizes and stops every thread of d.pid, re-scanning until no new
// thread appears. Threads created by a clone racing with the seize are
// attached automatically (PTRACE_O_TRACECLONE) and collected from the clone
// events.
// Precondition: called on the tracer thread.
func (d *dumper) freeze() error {
	for round := 0; ; round++ {
		tids, err := d.fs.Tasks(d.pid)
		if err != nil {
			if len(d.tids()) == 0 {
				return &ProcessError{PID: d.pid, Err: ErrNoProcess}
			}
			return err
		}
		var fresh []int
		for _, tid := range tids {
			if _, ok := d.tasks[tid]; !ok {
				fresh = append(fresh, tid)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		if round > 100 {
			return fmt.Errorf("pid %d keeps creating threads; cannot freeze it", d.pid)
		}
		var waiting []int
		for _, tid := range fresh {
			if err := ptrace.Seize(tid, seizeOptions); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // exited meanwhile
				}
				if errors.Is(err, unix.EPERM) {
					return &ProcessError{PID: d.pid, Err: fmt.Errorf("cannot attach to thread %d (already traced, or not permitted): %w", tid, unix.EPERM)}
				}
				return err
			}
			d.tasks[tid] = &frozenTask{tid: tid, pid: d.pid}
			if err := ptrace.Interrupt(tid); err != nil {
				return err
			}
			waiting = append(waiting, tid)
		}
		for len(waiting) > 0 {
			tid := waiting[0]
			waiting = waiting[1:]
			added, err := d.waitFrozen(tid)
			if err != nil {
				return err
			}
			waiting = append(waiting, added...)
		}
	}
}

// waitFrozen waits until tid sits in an interrupt stop. It returns threads
// that tid created meanwhile (already attached, still to be waited for).
func (d *dumper) waitFrozen(tid int) ([]int, error) {
	var added []int
	for {
		ws, err := ptrace.Wait(tid)
		if err != nil {
			return added, err
		}
		s := ptrace.Stop{Status: ws}
		switch {
		case ws.Exited() || ws.Signaled():
			delete(d.tasks, tid)
			return added, nil
		case s.IsGroupStop() && isStopSignal(ws.StopSignal()) && !d.tasks[tid].leftGroupStop:
			// Stopped by job control before we came: the seize made it
			// report its group stop first. Remember the signal and let it
			// go on to the trap of our interrupt (reported with the stop
			// signal too, as the group is still stopped); from that trap
			// it runs injected syscalls. The group stop stays in effect:
			// detached, it stops again; restore stops it anew.
			d.stopSig = ws.StopSignal()
			d.tasks[tid].leftGroupStop = true
			if err := ptrace.Cont(tid, 0); err != nil {
				return added, err
			}
		case s.IsGroupStop():
			return added, nil
		case s.Event() == unix.PTRACE_EVENT_CLONE:
			msg, err := ptrace.EventMsg(tid)
			if err != nil {
				return added, err
			}
			nt := int(msg)
			if _, ok := d.tasks[nt]; !ok {
				d.tasks[nt] = &frozenTask{tid: nt, pid: d.pid}
				added = append(added, nt)
			}
			if err := ptrace.Cont(tid, 0); err != nil {
				return added, err
			}
		case s.Event() != 0:
			if err := ptrace.Cont(tid, 0); err != nil {
				return added, err
			}
		default:
			// A signal arrived before the interrupt: let the task have it;
			// the interrupt is still pending and stops it right after.
			if err := ptrace.Cont(tid, int(ws.StopSignal())); err != nil {
				return added, err
			}
		}
	}
}

// tids returns the frozen threads of this process, the leader first.
func (d *dumper) tids() []int {
	var out []int
	for tid, t := range d.tasks {
		if t.pid == d.pid {
			out = append(out, tid)
		}
	}
	slices.Sort(out)
	if i := slices.Index(out, d.pid); i > 0 {
		out[0], out[i] = out[i], out[0]
	}
	return out
}

// isStopSignal reports the job-control signals that stop a process.
func isStopSignal(sig unix.Signal) bool {
	return sig == unix.SIGSTOP || sig == unix.SIGTSTP || sig == unix.SIGTTIN || sig == unix.SIGTTOU
}

// release puts every thread back as it was found and detaches it.
// Precondition: called on the tracer thread.
func (d *dumper) release() error {
	var errs []error
	// A process stopped by job control needs nothing: its group stop is
	// still in effect, and the kernel stops each thread again as it
	// leaves ptrace.
	for _, tid := range d.tids() {
		t := d.tasks[tid]
		if t.dirty {
			if err := ptrace.SetSigMask(tid, t.mask); err != nil {
				errs = append(errs, err)
			}
			if err := ptrace.Rearm(tid, &t.regs); err != nil {
				errs = append(errs, err)
			}
		}
		if err := ptrace.Detach(tid, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
		delete(d.tasks, tid)
	}
	return errors.Join(errs...)
}

// waitKilled waits until every thread of a process sent SIGKILL is gone.
// The leader's exit is reported only after every other thread was reaped:
// it comes last.
// Precondition: called on the tracer thread.
func (d *dumper) waitKilled() {
	tids := d.tids()
	if len(tids) == 0 {
		return
	}
	for _, tid := range append(tids[1:], tids[0]) {
		waitGone(tid)
		delete(d.tasks, tid)
	}
}

// waitGone waits until a traced thread that was killed has exited.
// Precondition: called on the tracer thread.
func waitGone(tid int) {
	for {
		ws, err := ptrace.Wait(tid)
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}
