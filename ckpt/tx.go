package ckpt

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/ptrace"
	"github.com/relocate/relocate/sock"
)

// A migration needs both trees frozen at its decision point, and frozen in
// a way that outlives the relocate holding them: ptrace stops end when the
// tracer dies (its tracees run on), so a SIGKILLed relocate would leave a
// second running copy. Hold turns the ptrace freeze into a job-control
// stop: a SIGSTOP is queued while every thread sits in a ptrace stop and
// the threads are detached; each dequeues the SIGSTOP before it returns to
// user space, so not one instruction of the program runs, and the group
// stop survives relocate (a probe on this kernel: seized, SIGSTOP queued,
// tracer SIGKILLed with or without a detach: state T until SIGCONT).
// cgroup v2's cgroup.freeze would be proof against a stray SIGCONT too,
// but needs the tree moved into a cgroup of ours (which systemd would see)
// and a frozen task cannot run injected syscalls. The price of a group
// stop: the parent of the tree's root sees it stop and continue (SIGCHLD,
// CLD_STOPPED/CLD_CONTINUED), and a SIGCONT from someone else would resume
// it.

// undoList is what one operation must take back if it does not complete,
// newest first.
type undoList []func() error

func (u *undoList) push(f func() error) { *u = append(*u, f) }

// run takes everything back, newest first, and empties the list.
func (u *undoList) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		errs = append(errs, (*u)[i]())
	}
	*u = nil
	return errors.Join(errs...)
}

// Frozen is a dump transaction: the tree is frozen and its image written.
// It ends with Commit (the tree dies) or Rollback (it runs on as it was),
// exactly once; Hold in between makes the freeze outlive this process.
type Frozen struct {
	Result   *DumpResult
	tr       *ptrace.Tracer // nil once held or ended
	t        *tree
	opts     DumpOptions
	ls       *listeners
	frozenAt time.Time
	held     *Held
	undo     undoList // what a rollback takes back, besides the tree itself
	done     bool
	// untracked is closed once the pre-copy's write tracking is off the
	// tree (nil: there was none).
	untracked chan struct{}
}

// untrack ends the pre-copy's write tracking (stop) in the background:
// lifting the protection walks the page tables of all the tracked memory
// (about 30 ms for 1 GiB here), and the target, waiting for the end of
// the stream, need not wait for that too. The tree's pages may keep their
// protection while it runs on after a rollback: with asynchronous
// write-protection a write only takes a fault. end waits for it.
func (f *Frozen) untrack(stop func()) {
	ch := make(chan struct{})
	f.untracked = ch
	go func() {
		defer close(ch)
		stop()
	}()
}

func (f *Frozen) end() {
	f.done = true
	if f.tr != nil {
		f.tr.Close()
		f.tr = nil
	}
	if f.Result != nil {
		f.Result.Frozen = time.Since(f.frozenAt)
		f.Result.FrozenMS = f.Result.Frozen.Milliseconds()
	}
	if f.untracked != nil {
		<-f.untracked
		f.untracked = nil
	}
}

// FrozenFor is how long the tree has been frozen so far.
func (f *Frozen) FrozenFor() time.Duration { return time.Since(f.frozenAt) }

// OnRollback adds undo to what Rollback takes back (newest first, after
// the tree runs again): a hook's counterpart, say.
func (f *Frozen) OnRollback(undo func() error) { f.undo.push(undo) }

// Commit kills the tree. Its connections' sockets here are closed in
// repair mode (the peers hear nothing); the network lock stays for the
// restore unless DumpOptions.Unlock.
func (f *Frozen) Commit() error {
	if f.done {
		return errors.New("dump transaction already ended")
	}
	defer f.end()
	f.undo = nil // nothing to take back once the tree is gone
	if f.held != nil {
		f.Result.Killed = true
		return f.held.Kill(f.opts.Unlock)
	}
	var locked bool
	err := f.tr.Do(func() (err error) {
		locked, err = f.t.kill(f.opts.Unlock)
		return err
	})
	f.Result.Killed, f.Result.NetLocked = true, locked
	return errors.Join(err, f.releaseListeners())
}

func (f *Frozen) releaseListeners() error {
	if f.ls == nil {
		return nil
	}
	err := f.ls.release()
	f.ls = nil
	return err
}

// Rollback lets the tree run on as it was found: registers and signal masks
// put back, repair mode off, the network locks lifted.
func (f *Frozen) Rollback() error {
	if f.done {
		return errors.New("dump transaction already ended")
	}
	defer f.end()
	var err error
	if f.held != nil {
		err = f.held.Resume()
	} else {
		err = f.tr.Do(f.t.release)
	}
	return errors.Join(err, f.releaseListeners(), f.undo.run())
}

// Hold makes the freeze survive this process: from here on, if relocate
// dies, the tree stays stopped (see the top of this file) and its network
// locks stay, until Held.Resume or Held.Kill, from this process or from a
// later one given the Held record. Commit and Rollback still end it.
func (f *Frozen) Hold() (*Held, error) {
	if f.done || f.held != nil {
		return f.held, nil
	}
	h, err := f.Plan()
	if err != nil {
		return nil, err
	}
	err = f.tr.Do(func() error {
		var errs []error
		// Queue the stops first: a process must not run while another of
		// the tree is already let go.
		for _, d := range f.t.procs {
			if d.zombie == nil && d.stopSig == 0 {
				if err := unix.Kill(d.pid, unix.SIGSTOP); err != nil {
					return fmt.Errorf("pid %d: stop: %w", d.pid, err)
				}
			}
		}
		for _, d := range f.t.procs {
			d.lock.Persist()
			errs = append(errs, d.release())
			// The duplicates go; Held.Kill takes new ones.
			for _, t := range d.tcp {
				unix.Close(t.fd)
			}
			d.tcp = nil
		}
		return errors.Join(errs...)
	})
	if f.ls != nil && f.ls.lock != nil {
		f.ls.lock.Persist()
		f.ls.lock = nil // the held record owns it now
		_ = f.ls.release()
		f.ls = nil
	}
	f.tr.Close()
	f.tr = nil
	f.held = h
	if err == nil {
		err = h.waitStopped()
	}
	if err != nil {
		// Whatever was stopped must not stay so.
		return nil, errors.Join(err, h.Resume())
	}
	return h, nil
}

// waitStopped waits until every thread of the tree sits in its group stop.
// Let go by ptrace with the SIGSTOP pending, a thread runs no instruction
// of its own before it stops, but it is runnable (R) until it got a CPU to
// stop on: a busy machine takes milliseconds. Whoever decides on the
// strength of the hold (a commit) waits until it is plain to see.
func (h *Held) waitStopped() error {
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range h.Procs {
		for {
			if allStopped(p.PID) {
				break
			}
			if time.Now().After(deadline) {
				return &ProcessError{PID: p.PID, Err: errors.New("did not stop within 5 s of its SIGSTOP")}
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// allStopped reports whether every thread of pid is stopped (T), or pid
// is gone.
func allStopped(pid int) bool {
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true
	}
	for _, t := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		if b[i+2] != 'T' && b[i+2] != 'Z' && b[i+2] != 'X' {
			return false
		}
	}
	return true
}

// Plan returns what Hold will make of the tree, without touching it: a
// record written before Hold lets a later relocate find the tree whatever
// moment this one dies at.
func (f *Frozen) Plan() (*Held, error) {
	if f.held != nil {
		return f.held, nil
	}
	h := &Held{}
	for _, d := range f.t.procs {
		if d.zombie != nil {
			continue
		}
		start, err := StartTime(d.pid)
		if err != nil {
			return nil, &ProcessError{PID: d.pid, Err: err}
		}
		h.Procs = append(h.Procs, HeldProc{PID: d.pid, Start: start, Stopped: d.stopSig != 0})
		if d.lock != nil {
			h.Locks = append(h.Locks, lockName(d.pid))
		}
	}
	if f.ls != nil && f.ls.lock != nil {
		h.Locks = append(h.Locks, listenLockName(f.t.procs[0].pid))
	}
	return h, nil
}

// Held is a tree frozen by a job-control stop, with its network locks: a
// dumped tree waiting for a migration's outcome, or a restored one waiting
// for its commit. It is plain data, so that a later relocate can settle it
// from a record.
type Held struct {
	Procs []HeldProc `json:"procs"`
	Locks []string   `json:"locks,omitempty"` // nftables tables (inet) holding its connections and listeners
	// Reap: the root is this process's child (a restore), to reap after a kill.
	Reap bool `json:"-"`
}

// HeldProc is one process of a held tree, identified by PID and start time
// (a PID alone may have been reused since).
type HeldProc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // /proc/PID/stat starttime, clock ticks since boot
	// Stopped: it was stopped by job control before relocate came, and
	// stays so when the tree resumes.
	Stopped bool `json:"stopped,omitempty"`
}

// same reports whether p is still the process recorded.
func (p HeldProc) same() bool {
	st, err := StartTime(p.PID)
	return err == nil && st == p.Start
}

// Alive reports whether any process of the tree is still there.
func (h *Held) Alive() bool {
	for _, p := range h.Procs {
		if p.same() && !isZombie(p.PID) {
			return true
		}
	}
	return false
}

// Resume lets the tree run: locks lifted, then every process not stopped
// before relocate came continued. A socket a killed relocate left in
// repair mode (see Kill) is taken out of it first.
func (h *Held) Resume() error {
	var errs []error
	for _, p := range h.Procs {
		if !p.same() {
			continue
		}
		pidfd, err := unix.PidfdOpen(p.PID, 0)
		if err != nil {
			continue
		}
		for _, fd := range tcpDuplicates(p.PID, pidfd) {
			if on, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR); err == nil && on == 1 {
				errs = append(errs, setRepair(fd, tcpRepairOffNoWP))
			}
			unix.Close(fd)
		}
		unix.Close(pidfd)
	}
	for _, name := range h.Locks {
		errs = append(errs, sock.UnlockTable(name))
	}
	for _, p := range h.Procs {
		if p.Stopped || !p.same() {
			continue
		}
		if err := unix.Kill(p.PID, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("pid %d: continue: %w", p.PID, err))
		}
	}
	return errors.Join(errs...)
}

// tcpRepairOffNoWP is TCP_REPAIR_OFF_NO_WP (include/uapi/linux/tcp.h):
// repair off without the window probe TCP_REPAIR_OFF sends.
const tcpRepairOffNoWP = -1

func setRepair(fd, v int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, v); err != nil {
		return fmt.Errorf("TCP_REPAIR %d: %w", v, err)
	}
	return nil
}

// Kill ends the tree without a word on its connections: each TCP socket
// is put in repair mode (through a duplicate) while the tree is still
// stopped, the tree is killed, and the duplicates, the sockets' last
// references, are closed, which in repair mode sends nothing. The locks
// are lifted afterwards if unlock (their connections live elsewhere now).
func (h *Held) Kill(unlock bool) error {
	var errs []error
	var dups []int
	var pidfds []int
	for _, p := range h.Procs {
		if !p.same() {
			continue
		}
		pidfd, err := unix.PidfdOpen(p.PID, 0)
		if err != nil {
			continue // gone meanwhile
		}
		pidfds = append(pidfds, pidfd)
		for _, fd := range tcpDuplicates(p.PID, pidfd) {
			if err := setRepair(fd, unix.TCP_REPAIR_ON); err != nil {
				errs = append(errs, &ProcessError{PID: p.PID, Err: err})
			}
			dups = append(dups, fd)
		}
	}
	for _, fd := range pidfds {
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	for _, fd := range pidfds {
		// A pidfd turns readable when its process has exited.
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000)
		unix.Close(fd)
	}
	if h.Reap && len(h.Procs) > 0 {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(h.Procs[0].PID, &ws, unix.WALL|unix.WNOHANG, nil)
	}
	for _, fd := range dups {
		unix.Close(fd)
	}
	if unlock {
		errs = append(errs, h.Unlock())
	}
	return errors.Join(errs...)
}

// Unlock lifts the tree's network locks.
func (h *Held) Unlock() error {
	var errs []error
	for _, name := range h.Locks {
		errs = append(errs, sock.UnlockTable(name))
	}
	return errors.Join(errs...)
}

// tcpDuplicates takes a duplicate of each TCP socket pid holds, but its
// listeners.
func tcpDuplicates(pid, pidfd int) []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n))
		if !strings.HasPrefix(link, "socket:") {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			continue
		}
		typ, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		listening, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err1 != nil || err2 != nil || typ != unix.IPPROTO_TCP || listening != 0 {
			unix.Close(fd) // a listener sends nothing when it closes
			continue
		}
		out = append(out, fd)
	}
	return out
}

// StartTime reads pid's start time (field 22 of /proc/PID/stat).
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}
