package ckpt

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/proc"
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
	// stopped: it reported the stop the freeze waits for (a freeze that
	// failed part-way leaves others seized and running).
	stopped bool
}

// freezeLimit bounds the wait for the threads of a process to stop: one
// that sleeps in the kernel where no ptrace interrupt reaches it (a parent
// in vfork() whose child does not go on, a wait on a dead file server)
// fails the freeze with the reason, rather than hang it.
const freezeLimit = 15 * time.Second

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
		seized, stopReaper := d.reapWhileSeizing()
		for _, tid := range fresh {
			if err := ptrace.Seize(tid, seizeOptions); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // exited meanwhile
				}
				if !errors.Is(err, unix.EPERM) {
					stopReaper()
					return err
				}
				exiting, ours := d.seizeRefused(tid)
				if exiting {
					continue
				}
				if !ours {
					stopReaper()
					return &ProcessError{PID: d.pid, Err: fmt.Errorf("cannot attach to thread %d (already traced, or not permitted): %w", tid, unix.EPERM)}
				}
				// Attached with its creator's clone, whose event never
				// came (an exec killed the creator first): it stops by
				// itself, with no interrupt.
				d.tasks[tid] = &frozenTask{tid: tid, pid: d.pid}
			} else {
				d.tasks[tid] = &frozenTask{tid: tid, pid: d.pid}
				if err := ptrace.Interrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
					stopReaper()
					return err
				}
			}
			seized(tid)
			waiting = append(waiting, tid)
		}
		stopReaper()
		if err := d.waitFrozen(waiting, freezeLimit); err != nil {
			return err
		}
	}
}

// reapWhileSeizing reaps, from another thread, the threads of the process
// we trace that exit while the tracer thread seizes more: seized adds one,
// stop ends it. An exec kills every other thread and waits until each is
// released, holding a lock PTRACE_SEIZE takes; a thread we trace is
// released only once we reap it, so a seize that met an exec would wait
// forever for the exec, and the exec for us (the tracer thread, blocked,
// cannot reap). The reaped threads' wait4 then fails with ECHILD, which
// waitFrozen takes as gone.
func (d *dumper) reapWhileSeizing() (seized func(int), stop func()) {
	var mu sync.Mutex
	tids := d.tids()
	// Seizing takes microseconds a thread: only a seize that waits needs
	// the reaper, and it looks every few milliseconds.
	stop = ptrace.ReapEvery(5*time.Millisecond, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(tids)
	})
	seized = func(tid int) {
		mu.Lock()
		tids = append(tids, tid)
		mu.Unlock()
	}
	return seized, stop
}

// seizeRefused tells why seizing thread tid failed with EPERM, when the
// reason is harmless: it is exiting (an exec killed it, or it ended; the
// kernel attaches to no thread that has), or this tracer thread traces it
// already.
// Precondition: called on the tracer thread.
func (d *dumper) seizeRefused(tid int) (exiting, ours bool) {
	b, err := d.fs.ReadTask(d.pid, tid, "status")
	if err != nil {
		return true, false // gone
	}
	st, err := proc.ParseStatus(b)
	if err != nil {
		return false, false
	}
	if st.State == 'Z' || st.State == 'X' {
		return true, false
	}
	return false, st.TracerPID == unix.Gettid()
}

// waitFrozen waits until every thread of waiting sits in an interrupt stop
// or is gone, and so does every thread they create meanwhile (attached by
// PTRACE_O_TRACECLONE).
//
// It takes the reports of every thread of the process as they come, those
// already stopped too, never waiting for one thread alone: a thread that
// execs kills the others (stopped ones as well) and waits until each is
// released, and a thread we trace is released only once we reap it; the
// exec'ing thread stops only after its exec. Waiting for it alone would
// wait forever (the CI's kernel matrix hung so, freezing a process that
// exec'd; exec_storm.txtar does it thirty times).
//
// limit, when not zero, bounds the wait.
func (d *dumper) waitFrozen(waiting []int, limit time.Duration) error {
	start := time.Now()
	pending := make(map[int]bool, len(waiting))
	for _, tid := range waiting {
		pending[tid] = true
	}
	idle := time.Duration(0)
	for {
		// Every pass looks at every thread, those not waited for too: one
		// may have been reaped meanwhile (reapWhileSeizing) or killed.
		progress := false
		for _, tid := range d.tids() {
			ws, ok, err := ptrace.Poll(tid)
			if errors.Is(err, unix.ECHILD) {
				// Not ours to wait for any more: reaped already, or a
				// thread that exec'd took the leader's thread ID (whose
				// stop reports it).
				delete(d.tasks, tid)
				delete(pending, tid)
				continue
			}
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			progress = true
			done, added, err := d.frozenEvent(tid, ws)
			if err != nil {
				return err
			}
			if done {
				delete(pending, tid)
			} else {
				pending[tid] = true
			}
			for _, nt := range added {
				pending[nt] = true
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if progress {
			idle = 0
			continue
		}
		// A stop takes tens of microseconds; a thread busy in the kernel
		// (an exec, a page fault on a slow file) longer.
		if limit > 0 && time.Since(start) > limit {
			return &ProcessError{PID: d.pid, Err: d.notStopping(pending, limit)}
		}
		idle = min(max(2*idle, 20*time.Microsecond), 2*time.Millisecond)
		time.Sleep(idle)
	}
}

// notStopping says which thread of pending does not stop, and where in
// the kernel it waits.
func (d *dumper) notStopping(pending map[int]bool, limit time.Duration) error {
	tids := slices.Sorted(maps.Keys(pending))
	tid := tids[0]
	where := ""
	if b, err := d.fs.ReadTask(d.pid, tid, "stat"); err == nil {
		if st, err := proc.ParseStat(b); err == nil {
			where = fmt.Sprintf(" (state %c", st.State)
			if w, err := d.fs.ReadTask(d.pid, tid, "wchan"); err == nil && len(w) > 0 && string(w) != "0" {
				where += ", in " + string(w)
			}
			where += ")"
		}
	}
	hint := ""
	if strings.Contains(where, "clone") || strings.Contains(where, "vfork") {
		hint = ": it waits in vfork() for its child to exec or exit"
	}
	more := ""
	if len(tids) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(tids)-1)
	}
	return fmt.Errorf("thread %d%s did not stop within %v%s%s; nothing was changed", tid, where, limit, more, hint)
}

// frozenEvent handles one state change ws of tid while it is being
// frozen: done once tid sits in the interrupt stop or is gone; added are
// threads it created (already attached, still to be waited for).
//
// Other stops are resumed with the interrupt asked for again: any ptrace
// stop (a clone event, a signal) clears a pending interrupt, and a thread
// let go without one would run on while we wait for it (a thread seized
// inside clone did so, in exec_storm.txtar). Where the first interrupt
// was still pending, one trap takes both or a second trap follows the
// first; the injection skips such a leftover (ptrace.InjectSyscallStop).
func (d *dumper) frozenEvent(tid int, ws unix.WaitStatus) (done bool, added []int, err error) {
	resume := func(sig int) error {
		if err := ptrace.Cont(tid, sig); err != nil {
			return err
		}
		if err := ptrace.Interrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			return err // ESRCH: killed meanwhile, which it reports next
		}
		return nil
	}
	s := ptrace.Stop{Status: ws}
	switch {
	case ws.Exited() || ws.Signaled():
		delete(d.tasks, tid)
		return true, nil, nil
	case s.IsGroupStop() && isStopSignal(ws.StopSignal()) && !d.tasks[tid].leftGroupStop:
		// Stopped by job control before we came: the seize made it
		// report its group stop first. Remember the signal and let it
		// go on to the trap of our interrupt (reported with the stop
		// signal too, as the group is still stopped); from that trap
		// it runs injected syscalls. The group stop stays in effect:
		// detached, it stops again; restore stops it anew.
		// (No new interrupt: the group stop traps it again anyway.)
		d.stopSig = ws.StopSignal()
		d.tasks[tid].leftGroupStop = true
		return false, nil, ptrace.Cont(tid, 0)
	case s.IsGroupStop():
		d.tasks[tid].stopped = true
		return true, nil, nil
	case s.Event() == unix.PTRACE_EVENT_CLONE:
		msg, err := ptrace.EventMsg(tid)
		if err != nil {
			return false, nil, err
		}
		nt := int(msg)
		if _, ok := d.tasks[nt]; !ok {
			d.tasks[nt] = &frozenTask{tid: nt, pid: d.pid}
			added = append(added, nt)
		}
		return false, added, resume(0)
	case s.Event() != 0:
		return false, nil, resume(0)
	default:
		// A signal arrived before the interrupt: let the task have it,
		// and stop right after.
		return false, nil, resume(int(ws.StopSignal()))
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
	// Only a stopped tracee can be detached: a freeze that failed part-way
	// may leave threads seized and running (or on their way to the stop),
	// which would stay attached, and stop, until relocate exits.
	var running []int
	for _, tid := range d.tids() {
		if !d.tasks[tid].stopped {
			if err := ptrace.Interrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
			running = append(running, tid)
		}
	}
	if len(running) > 0 {
		// Bounded: a thread stuck in the kernel (what failed the freeze,
		// often) stays attached, and runs on as it was once relocate
		// exits, rather than hang the release.
		if err := d.waitFrozen(running, 5*time.Second); err != nil {
			logDebug(d.opts.Log, "release: left attached until relocate exits", "error", err)
		}
	}
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
