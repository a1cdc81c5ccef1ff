package ckpt

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
)

// ThreadSched is a thread's scheduling state: all of it is per thread in
// Linux (nice, policy and affinity set by one thread of a program are
// not its siblings').
type ThreadSched struct {
	Policy   uint32 `json:"policy"`
	Flags    uint64 `json:"flags,omitempty"` // SCHED_FLAG_RESET_ON_FORK, ...
	Nice     int32  `json:"nice,omitempty"`
	Priority uint32 `json:"priority,omitempty"` // SCHED_FIFO/SCHED_RR
	Runtime  uint64 `json:"runtime,omitempty"`  // SCHED_DEADLINE
	Deadline uint64 `json:"deadline,omitempty"`
	Period   uint64 `json:"period,omitempty"`
	// Affinity is the CPU mask, 64 CPUs a word (empty: not read).
	Affinity []uint64 `json:"affinity,omitempty"`
	// IOPrio is ioprio_get's answer; 0 or class NONE is the default
	// (derived from nice) and is not set again.
	IOPrio int `json:"ioprio,omitempty"`
}

// TaskFlags are process attributes set with prctl that only the process
// itself can read.
type TaskFlags struct {
	PDeathSig      int  `json:"pdeathsig,omitempty"` // the leader's PR_SET_PDEATHSIG
	ChildSubreaper bool `json:"child_subreaper,omitempty"`
	// Dumpable is PR_GET_DUMPABLE (0, 1, 2); a nil TaskFlags leaves it.
	Dumpable int `json:"dumpable"`
}

// Constants missing from x/sys (include/uapi/linux/ioprio.h).
const (
	ioprioWhoProcess = 1
	ioprioClassShift = 13
)

// collectSched reads a thread's scheduling state from outside.
func collectSched(tid int) (*ThreadSched, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return nil, fmt.Errorf("thread %d: sched_getattr: %w", tid, err)
	}
	s := &ThreadSched{Policy: a.Policy, Flags: a.Flags, Nice: a.Nice, Priority: a.Priority,
		Runtime: a.Runtime, Deadline: a.Deadline, Period: a.Period}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil, fmt.Errorf("thread %d: sched_getaffinity: %w", tid, err)
	}
	n := len(set)
	for n > 1 && set[n-1] == 0 {
		n--
	}
	for _, w := range set[:n] {
		s.Affinity = append(s.Affinity, uint64(w))
	}
	r, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if e != 0 {
		return nil, fmt.Errorf("thread %d: ioprio_get: %w", tid, e)
	}
	s.IOPrio = int(r)
	return s, nil
}

// restoreSched gives a restored thread (tid, as relocate sees it) its
// scheduling state, from outside: relocate may raise a priority the
// process itself, with its own credentials, could not.
func restoreSched(tid int, s *ThreadSched) error {
	if s == nil {
		return nil
	}
	a := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: s.Policy, Flags: s.Flags, Nice: s.Nice,
		Priority: s.Priority, Runtime: s.Runtime, Deadline: s.Deadline, Period: s.Period}
	if err := unix.SchedSetAttr(tid, &a, 0); err != nil {
		return fmt.Errorf("thread %d: scheduling policy %d, nice %d, priority %d: %w", tid, s.Policy, s.Nice, s.Priority, err)
	}
	if len(s.Affinity) > 0 {
		var set unix.CPUSet
		for i, w := range s.Affinity[:min(len(s.Affinity), len(set))] {
			for b := 0; b < 64; b++ {
				if w&(1<<b) != 0 {
					set.Set(64*i + b)
				}
			}
		}
		// CPUs this machine lacks are dropped by the kernel; a mask of
		// none of its CPUs (EINVAL) leaves the thread where it may run.
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("thread %d: CPU affinity: %w", tid, err)
		}
	}
	if class := s.IOPrio >> ioprioClassShift; class != 0 {
		if _, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(s.IOPrio)); e != 0 {
			return fmt.Errorf("thread %d: I/O priority %#x: %w", tid, s.IOPrio, e)
		}
	}
	return nil
}

// injectTaskFlags reads the prctl flags from inside the process.
func (d *dumper) injectTaskFlags(p *Process, in *injector) error {
	le := binary.LittleEndian
	var f TaskFlags
	if _, err := in.call(unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, in.scratch); err != nil {
		return fmt.Errorf("PR_GET_PDEATHSIG: %w", err)
	}
	b, err := in.read(4)
	if err != nil {
		return err
	}
	f.PDeathSig = int(int32(le.Uint32(b)))
	if _, err := in.call(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, in.scratch); err != nil {
		return fmt.Errorf("PR_GET_CHILD_SUBREAPER: %w", err)
	}
	if b, err = in.read(4); err != nil {
		return err
	}
	f.ChildSubreaper = le.Uint32(b) != 0
	v, err := in.call(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return fmt.Errorf("PR_GET_DUMPABLE: %w", err)
	}
	f.Dumpable = int(v)
	p.Flags = &f
	return nil
}

// restoreTaskState sets what restoreTasks leaves: the prctl flags from
// inside (after the credentials, whose change clears the parent-death
// signal and resets dumpable), scheduling from outside.
func (rs *restorer) restoreTaskState(L *remote) error {
	p := rs.p
	if f := p.Flags; f != nil {
		// The root's parent was outside the tree: its parent now is
		// relocate, whose exit would deliver the signal at once.
		if f.PDeathSig != 0 && p.PID != rs.cp.Root {
			if f.PDeathSig < 0 || f.PDeathSig > 64 {
				return fmt.Errorf("image: pid %d: parent-death signal %d: %w", p.PID, f.PDeathSig, image.ErrCorrupt)
			}
			if _, err := L.call(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(f.PDeathSig)); err != nil {
				return &ProcessError{PID: p.PID, Err: fmt.Errorf("PR_SET_PDEATHSIG %d: %w", f.PDeathSig, err)}
			}
		}
		if f.ChildSubreaper {
			if _, err := L.call(unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
				return &ProcessError{PID: p.PID, Err: fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)}
			}
		}
		// 2 (suid_dumpable) cannot be asked for; it is what the kernel
		// gave a process that changed credentials, as the restore did.
		if f.Dumpable == 0 || f.Dumpable == 1 {
			if _, err := L.call(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(f.Dumpable)); err != nil {
				return &ProcessError{PID: p.PID, Err: fmt.Errorf("PR_SET_DUMPABLE %d: %w", f.Dumpable, err)}
			}
		}
	}
	if err := rs.setForeground(L); err != nil {
		return err
	}
	for i, t := range p.Threads {
		if err := restoreSched(rs.threads[i].tid, t.Sched); err != nil {
			return &ProcessError{PID: p.PID, Err: err}
		}
	}
	return nil
}
