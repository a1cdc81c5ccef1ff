package ckpt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/ptrace"
	"github.com/relocate/relocate/sock"
)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	Progress *Progress
	// Log, if set, gets a debug line with the duration of each step.
	Log *slog.Logger
	// PIDNS restores into a new PID namespace, where the processes keep
	// their PIDs whatever holds those PIDs here; the namespace's init is a
	// few instructions that reap. RestoreResult.PID is the root's PID as
	// seen from outside.
	PIDNS bool
	// CgroupRoot places each process's cgroup v2 path under this cgroup
	// instead of the hierarchy's root.
	CgroupRoot string
	// TCPClose resets the image's established TCP connections instead of
	// resuming them (a checkpoint restored long after): the peer gets a
	// reset, the process ECONNRESET on its next use. Listeners come back.
	TCPClose bool
	// TimeNS restores into a new time namespace whose CLOCK_MONOTONIC and
	// CLOCK_BOOTTIME continue from the image's clocks.
	TimeNS bool
	// BeforeNet, if set, runs before the image's sockets are created (a
	// migration's pre-restore hook brings the service address up there).
	// The undo it returns, if any, runs if the restore is given up, after
	// the tree is gone and before its network locks are lifted (so that
	// the peers meet silence, not a host that resets them).
	BeforeNet func(cp *Checkpoint) (undo func() error, err error)
	// Holding, with RestoreTx, runs once the tree is complete, just before
	// it is held for good: until then a relocate that dies takes the tree
	// with it, so a record of it written here never names a tree that is
	// not there. An error gives the restore up.
	Holding func(h *Held) error
	// External says where descriptors that led outside the tree go
	// (FileExternal); without a rule that matches, /dev/null.
	External []ExternalRule
}

// RestoreResult summarises a restore.
type RestoreResult struct {
	PID       int           `json:"pid"`
	Processes int           `json:"processes"`
	Threads   int           `json:"threads"`
	BytesRead int64         `json:"bytes_read"`
	Pages     int64         `json:"pages"`
	Duration  time.Duration `json:"-"`
	// Externals tells where each descriptor that led outside the tree went.
	Externals []ExternalNote `json:"externals,omitempty"`
	Warnings  []string       `json:"warnings,omitempty"` // what could not be applied (cgroup limits)
}

// ReadCheckpoint reads the header and metadata record of an image. Pages
// of a pre-copy before the metadata are skipped.
func ReadCheckpoint(r *image.Reader) (*Checkpoint, error) {
	return readCheckpoint(r, nil)
}

// readCheckpoint reads the metadata record; keep, if set, takes the page
// records a pre-copy put before it (nil skips them).
func readCheckpoint(r *image.Reader, keep func(*image.Pages) error) (*Checkpoint, error) {
	rec, err := r.Next()
	for err == nil && rec.Kind == image.KindPages {
		if keep != nil {
			if err := keep(rec.Pages); err != nil {
				return nil, err
			}
		}
		rec, err = r.Next()
	}
	if err == io.EOF {
		return nil, fmt.Errorf("image has no metadata: %w", image.ErrCorrupt)
	}
	if err != nil {
		return nil, err
	}
	if rec.Kind != image.KindMeta {
		return nil, fmt.Errorf("image: first record is not metadata: %w", image.ErrCorrupt)
	}
	return parseCheckpoint(rec.Meta)
}

func parseCheckpoint(meta []byte) (*Checkpoint, error) {
	var cp Checkpoint
	if err := decodeMeta(meta, &cp); err != nil {
		return nil, fmt.Errorf("image metadata: %v: %w", err, image.ErrCorrupt)
	}
	for i := range cp.Processes {
		for j := range cp.Processes[i].Threads {
			if t := &cp.Processes[i].Threads[j]; len(t.RegSets) == 0 && len(t.LegacyRegs) > 0 {
				if err := upgradeLegacyRegs(t); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := cp.validate(); err != nil {
		return nil, err
	}
	return &cp, nil
}

// validate checks the metadata for internal consistency: whatever restore
// indexes or sizes with it must be in range.
func (cp *Checkpoint) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("image metadata: %s: %w", fmt.Sprintf(format, a...), image.ErrCorrupt)
	}
	if len(cp.Processes) == 0 || cp.Processes[0].PID != cp.Root {
		return bad("the first process is not the root %d", cp.Root)
	}
	if err := cp.validateCounts(); err != nil {
		return err
	}
	if err := cp.validNetLocks(); err != nil {
		return err
	}
	for _, f := range cp.Files {
		if f.Obj != 0 && (f.Obj < 0 || f.Obj > len(cp.Files) || cp.Files[f.Obj-1].Kind != FileShmem) {
			return bad("a %s file refers to shared memory object %d", f.Kind, f.Obj)
		}
	}
	seen := map[int]bool{}
	for i, p := range cp.Processes {
		if p.Zombie && i > 0 && p.PID > 0 && !seen[p.PID] && seen[p.PPID] && len(p.Threads) == 0 {
			seen[p.PID] = true
			continue
		}
		if p.PID <= 0 || len(p.Threads) == 0 || p.Threads[0].TID != p.PID || seen[p.PID] {
			return bad("pid %d has no leader thread, or appears twice", p.PID)
		}
		if i > 0 && !seen[p.PPID] {
			return bad("pid %d comes before its parent %d", p.PID, p.PPID)
		}
		seen[p.PID] = true
		for _, t := range p.Threads {
			if err := checkRegSets(t.TID, t.RegSets); err != nil {
				return err
			}
		}
		for _, fd := range p.FDs {
			if fd.File < 0 || fd.File >= len(cp.Files) || fd.FD < 0 {
				return bad("pid %d fd %d refers to file %d", p.PID, fd.FD, fd.File)
			}
		}
		var prev uint64
		for _, v := range p.VMAs {
			if v.Start >= v.End || v.Start < prev || v.Start%mem.PageSize != 0 || v.End%mem.PageSize != 0 {
				return bad("pid %d mapping %#x-%#x is out of order", p.PID, v.Start, v.End)
			}
			if v.Obj != 0 && (v.Obj < 0 || v.Obj > len(cp.Files) || cp.Files[v.Obj-1].Kind != FileShmem || v.Pages != 0) {
				return bad("pid %d mapping %#x-%#x refers to shared memory object %d", p.PID, v.Start, v.End, v.Obj)
			}
			prev = v.End
		}
		if len(p.MM.Auxv) > 2*64 || len(p.MM.Auxv)%2 != 0 {
			return bad("auxv of %d words", len(p.MM.Auxv))
		}
	}
	return nil
}

// Restore rebuilds the processes of an image stream and lets them run. The
// whole stream is read and verified before anything runs; on any error
// nothing is left behind.
func Restore(ctx context.Context, in io.Reader, opts RestoreOptions) (*RestoreResult, error) {
	sh, res, err := restore(ctx, in, opts, false)
	if err != nil {
		return nil, err
	}
	sh.closeFiles()
	return res, nil
}

// RestoreTx rebuilds the processes of an image stream and keeps them
// frozen, not yet visible to anyone: every thread has its registers, its
// sockets are connected, but the processes are stopped (see Hold) and the
// network locks still drop their connections' packets and new
// connections to their listeners. The caller ends it with Resume or Abort.
func RestoreTx(ctx context.Context, in io.Reader, opts RestoreOptions) (*Prepared, error) {
	sh, res, err := restore(ctx, in, opts, true)
	if err != nil {
		return nil, err
	}
	p := &Prepared{Result: res, sh: sh, Held: sh.held}
	if err := sh.held.waitStopped(); err != nil {
		return nil, errors.Join(err, p.Abort())
	}
	return p, nil
}

// heldTree describes the restored tree for Held: PIDs as seen here with
// their start times, and the lock tables this restore installed (a
// migration restores on another host than the dump's: each of the
// image's locks is ours).
func (sh *shared) heldTree() (*Held, error) {
	h := &Held{Reap: sh.init == nil}
	for _, rs := range sh.order {
		start, err := StartTime(rs.host)
		if err != nil {
			return nil, &ProcessError{PID: rs.p.PID, Err: err}
		}
		h.Procs = append(h.Procs, HeldProc{PID: rs.host, Start: start, Stopped: rs.p.Stopped != 0})
	}
	for name, conns := range sh.netConns() {
		if len(conns) > 0 {
			h.Locks = append(h.Locks, name)
		}
	}
	if sh.listenLock != nil {
		h.Locks = append(h.Locks, listenLockName(sh.cp.Root))
	}
	return h, nil
}

// Prepared is a restored tree held frozen (RestoreTx).
type Prepared struct {
	Result *RestoreResult
	// Held describes the frozen tree, for a record that lets a later
	// relocate settle it if this one dies.
	Held *Held
	sh   *shared
	done bool
}

// Resume lets the tree run: its network locks are lifted, then its
// processes continued.
func (p *Prepared) Resume() error {
	if p.done {
		return errors.New("restore transaction already ended")
	}
	p.done = true
	err := p.Held.Resume()
	p.sh.locks = nil
	p.sh.closeFiles()
	return err
}

// Abort kills the tree without a word on its connections (their other
// copy lives on elsewhere) and removes the locks it installed.
func (p *Prepared) Abort() error {
	if p.done {
		return errors.New("restore transaction already ended")
	}
	p.done = true
	return p.sh.killRestored()
}

// restore does Restore's work; with hold it leaves the tree frozen (see
// RestoreTx).
func restore(ctx context.Context, in io.Reader, opts RestoreOptions, hold bool) (*shared, *RestoreResult, error) {
	start := time.Now()
	r, err := image.NewReader(in)
	if err != nil {
		return nil, nil, err
	}
	if err := checkHeader(r.Header()); err != nil {
		return nil, nil, err
	}
	tr := ptrace.NewTracer()
	defer tr.Close()
	early := newEarlyPages(tr, r.Header(), opts.Log)
	defer early.close() // unless the restore took its stub
	cp, err := readCheckpoint(r, early.add)
	if err != nil {
		return nil, nil, err
	}
	sh := &shared{cp: cp, r: r, opts: opts, hold: hold, blobs: map[uint32]*blobSink{}, procs: map[int]*restorer{}, early: early}
	logDebug(opts.Log, "restore: metadata read")
	threads := 0
	for i := range cp.Processes {
		p := &cp.Processes[i]
		if err := precheckRestore(p, !opts.PIDNS); err != nil {
			return nil, nil, err
		}
		if err := checkMappings(p, cp.sameHost()); err != nil {
			return nil, nil, err
		}
		rs := &restorer{shared: sh, p: p}
		sh.order = append(sh.order, rs)
		sh.procs[p.PID] = rs
		threads += len(p.Threads)
	}
	if err := sh.resolveExternals(opts.External); err != nil {
		sh.closeFiles()
		return nil, nil, err
	}
	err = tr.Do(func() (err error) {
		defer func() {
			if err != nil {
				sh.abort()
			}
		}()
		return sh.run(ctx)
	})
	if err != nil {
		sh.closeFiles()
		return nil, nil, errors.Join(err, sh.undoErrs)
	}
	res := &RestoreResult{PID: sh.procs[cp.Root].host, Processes: len(cp.Processes), Threads: threads, BytesRead: r.Offset(),
		Pages: sh.pages, Duration: time.Since(start), Externals: sh.notes, Warnings: sh.warnings}
	return sh, res, nil
}

func checkHeader(h image.Header) error {
	if h.Arch == "" {
		return fmt.Errorf("image header names no architecture: %w", image.ErrCorrupt)
	}
	if h.Arch != archName {
		return fmt.Errorf("image is for %s, this machine is %s: %w", h.Arch, archName, ErrUnsupported)
	}
	if h.PageSize != os.Getpagesize() {
		return fmt.Errorf("image has %d-byte pages, this machine %d: %w", h.PageSize, os.Getpagesize(), ErrUnsupported)
	}
	if missing := missingCPUFlags(h.CPU.Flags, cpuFlags()); len(missing) > 0 {
		return fmt.Errorf("this CPU lacks features the process may use: %v: %w", missing, ErrUnsupported)
	}
	return nil
}

// precheckRestore refuses what would fail half-way: a PID in use, files
// that are gone or changed.
func precheckRestore(p *Process, pidsHere bool) error {
	for _, t := range p.Timers {
		if t.ID > maxSequentialTimerID && !timerRestoreIDs() {
			return &ProcessError{PID: p.PID, Err: fmt.Errorf(
				"POSIX timer id %d: without PR_TIMER_CREATE_RESTORE_IDS (Linux 6.15) ids above %d are not restored: %w",
				t.ID, maxSequentialTimerID, ErrUnsupported)}
		}
	}
	tids := []int{p.PID}
	if !pidsHere {
		tids = nil // a new PID namespace has them all free
	}
	for _, t := range p.Threads[min(1, len(p.Threads)):] {
		tids = append(tids, t.TID)
	}
	for _, tid := range tids {
		t := Thread{TID: tid}
		// A process killed a moment ago (by the dump, say) can still be a
		// zombie its parent or init has not reaped: give it a moment.
		for i := 0; i < 300 && isZombie(t.TID); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if err := unix.Kill(t.TID, 0); err == nil || errors.Is(err, unix.EPERM) {
			holder := pidHolder(t.TID)
			if t.TID == p.PID {
				return fmt.Errorf("pid %d %w by %s", p.PID, ErrPIDTaken, holder)
			}
			return &ProcessError{PID: p.PID, Err: fmt.Errorf("thread id %d %w by %s", t.TID, ErrPIDTaken, holder)}
		}
	}
	return nil
}

// isZombie reports whether pid is a zombie (or dead and not yet reaped).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// pidHolder describes the task that holds a PID, for error messages.
func pidHolder(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "a running process"
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i || j+4 > len(s) {
		return "a running process"
	}
	comm := s[i+1 : j]
	if s[j+2] == 'Z' {
		ppid := strings.Fields(s[j+2:])[1]
		return fmt.Sprintf("a zombie of %q that its parent (pid %s) has not reaped yet", comm, ppid)
	}
	return fmt.Sprintf("%q", comm)
}

// shared is what the restore of every process of an image uses.
type shared struct {
	cp   *Checkpoint
	r    *image.Reader
	opts RestoreOptions
	hold bool // RestoreTx: stop before resuming
	// undo takes back what ran for the restore (a hook), if it is given up
	undo     undoList
	undoErrs error
	held     *Held // RestoreTx: the tree once held
	stub     *remote
	pages    int64
	blobs    map[uint32]*blobSink
	procs    map[int]*restorer
	order    []*restorer // parents before children, as in the image
	// open files of the restorer to close at the end
	toClose []int
	// the restorer's descriptor for each file of the image
	local []int
	// TCP connections rebuilt in repair mode
	tcp []restoredTCP
	// the same, once running: closed silently if the restore is called off
	live []restoredTCP
	// network locks this restore installed
	locks []*sock.Lock
	// listenLock holds off new connections to the listeners until they
	// are back (also in locks, for a failed restore to remove).
	listenLock *sock.Lock
	// pidfds of the running processes, until the restore is confirmed
	pidfds []int
	// the second end of each socketpair made, by its inode in the image
	unixPending map[uint64]int
	// both ends of each pipe made, by its inode in the image
	pipes map[uint64][2]int
	// where the image's external descriptors go, opened
	externals map[*File]externalTarget
	// System V segments made, by file index
	sysv map[int]*restoredSegment
	// pty masters made, by their index in the image
	ptys map[int]int
	// System V message queues and semaphore sets made
	msgQueues, semSets []int
	notes              []ExternalNote
	// POSIX message queues made, by their inode in the image
	mqueues map[uint64]*restoredMQueue
	// the init of the new PID namespace (PIDNS), relocate's child
	init *remote
	// holder: the credentials of the process whose file is being opened
	holder fsCreds
	// warnings: what could not be applied (cgroup limits), for the user
	warnings []string
	// pages of a pre-copy, read before the metadata: placed in a stub as
	// they came, or held
	early     *earlyPages
	precopied *heldPages
	// the pre-copied memory the root has in place from the stub it was
	// cloned from (CLONE_VM), sorted
	kept []mem.Range
}

// restorer rebuilds one process.
type restorer struct {
	*shared
	p       *Process
	host    int // the process's PID seen from relocate (differs with --pidns)
	leader  *remote
	threads []*remote
	pidfd   int // a pidfd of relocate inside the process, to pull files with
	// VMAs mapped writable for filling, to mprotect afterwards
	filled []VMA
	// vdso is where this kernel's [vdso] is in the process: the image's
	// place, or elsewhere behind a proxy (placeVDSO).
	vdso mem.Range
}

// abort kills whatever was created.
func (sh *shared) abort() {
	for _, rs := range sh.order {
		if rs.leader != nil {
			_ = unix.Kill(rs.leader.tid, unix.SIGKILL)
		}
	}
	for _, rs := range sh.order {
		if rs.leader == nil {
			continue
		}
		for _, t := range rs.threads {
			if t != rs.leader {
				waitGone(t.tid)
			}
		}
		waitGone(rs.leader.tid)
	}
	if sh.stub != nil {
		sh.stub.kill()
	}
	if sh.init != nil {
		sh.init.killInit()
	}
	sh.detachSysV(true)
	sh.unlinkMQueues()
	sh.undoErrs = sh.undo.run()
	_ = sh.unlockOwn()
}

func (sh *shared) closeFiles() {
	for _, fd := range sh.toClose {
		unix.Close(fd)
	}
	sh.toClose = nil
	for _, fd := range sh.pidfds {
		unix.Close(fd)
	}
	sh.pidfds = nil
	for _, fd := range sh.unixPending {
		unix.Close(fd)
	}
	sh.unixPending = nil
	sh.detachSysV(false)
	for _, b := range sh.blobs {
		if b.f != nil {
			b.f.Close()
			b.f = nil
		}
	}
}

func (sh *shared) step(name string) func() { return step(sh.opts.Log, "restore: "+name) }

// run performs the restore. Precondition: called on the tracer thread.
func (sh *shared) run(ctx context.Context) error {
	// One code page address that no process of the image uses.
	var used []mem.Range
	for _, p := range sh.cp.Processes {
		for _, v := range p.VMAs {
			used = append(used, mem.Range{Start: v.Start, End: v.End})
		}
	}
	end := sh.step("stub")
	st, err := sh.adoptEarly(used)
	if err != nil {
		return err
	}
	if sh.stub = st; st == nil {
		if sh.stub, err = startStub(used); err != nil {
			return err
		}
	}
	if err := checkCPUState(sh.stub.tid, sh.cp); err != nil {
		return err
	}
	end()
	// Processes are made top-down, each cloned from its restored parent
	// before any memory is mapped, so a child copies almost nothing.
	end = sh.step("processes")
	for _, rs := range sh.order {
		if err := rs.create(used); err != nil {
			return err
		}
	}
	end()
	if sh.init != nil {
		if err := sh.init.runInit(); err != nil {
			return err
		}
	}
	sh.stub.kill()
	sh.stub = nil
	// Zombies last: made from their restored parent, they exit at once.
	live := sh.order[:0:0]
	for _, rs := range sh.order {
		if rs.p.Zombie {
			continue
		}
		live = append(live, rs)
	}
	sh.order = live
	cg := sh.startCgroupJoin()
	defer cg.wait()
	end = sh.step("mappings")
	for _, rs := range sh.order {
		if err := rs.mapMemory(rs.leader, rs.pidfd); err != nil {
			return err
		}
	}
	end()
	end = sh.step("memory")
	if err := sh.stream(ctx); err != nil {
		return err
	}
	end()
	end = sh.step("network lock, pre-restore hook")
	if err := sh.lockNet(); err != nil {
		return err
	}
	if sh.opts.BeforeNet != nil {
		undo, err := sh.opts.BeforeNet(sh.cp)
		if undo != nil {
			sh.undo.push(undo)
		}
		if err != nil {
			return err
		}
	}
	end()
	end = sh.step("files")
	if err := sh.openFiles(); err != nil {
		return err
	}
	end()
	end = sh.step("process state")
	for _, rs := range sh.order {
		L := rs.leader
		if err := rs.protect(L); err != nil {
			return err
		}
		if err := rs.restoreMM(L, rs.pidfd); err != nil {
			return err
		}
		if err := rs.restoreCwd(L); err != nil { // while the pidfd is there
			return &ProcessError{PID: rs.p.PID, Err: fmt.Errorf("working directory %s: %w", rs.p.Cwd, err)}
		}
		if err := rs.installFiles(L, rs.pidfd); err != nil {
			return err
		}
		if err := rs.restoreTasks(L); err != nil {
			return err
		}
	}
	if err := cg.wait(); err != nil {
		return err
	}
	sh.warnings = append(sh.warnings, cg.warnings...)
	end()
	defer sh.step("resume")()
	return sh.resume()
}

// create makes the process with its PID, its session and process group,
// and its threads with their TIDs.
func (rs *restorer) create(used []mem.Range) error {
	p := rs.p
	var err error
	if p.Zombie {
		return rs.createZombie()
	}
	if p.PID == rs.cp.Root {
		if rs.vdso, err = rs.stub.placeVDSO(p, used); err != nil {
			return err
		}
		// CLONE_PARENT: the root is relocate's child until relocate exits,
		// so a failed restore reaps it here instead of leaving a zombie
		// that holds the PID; on success relocate's exit hands it to init.
		shareVM := len(rs.kept) > 0
		if rs.opts.TimeNS && rs.cp.Clock != nil {
			if err := rs.stub.enterTimeNS(rs.cp.Clock); err != nil {
				return err
			}
			if shareVM {
				if err := rs.stub.joinTimeNS(); err != nil {
					// A copy of the address space then (page tables
					// only), with the children's time namespace.
					logDebug(rs.opts.Log, "restore: the stub cannot enter the time namespace", "error", err)
					shareVM = false
				}
			}
		}
		if rs.opts.PIDNS {
			// The root's parent is the namespace's init, relocate's child.
			if rs.init, err = rs.stub.startInit(); err != nil {
				return fmt.Errorf("new PID namespace: %w", err)
			}
			if rs.leader, err = rs.init.clone(0, uint64(unix.SIGCHLD), p.PID); err != nil {
				return &ProcessError{PID: p.PID, Err: err}
			}
		} else {
			flags := uint64(unix.CLONE_PARENT)
			if shareVM {
				// The stub's address space, with the pre-copied memory
				// in it, becomes the root's: nothing to copy.
				flags |= unix.CLONE_VM
			}
			if rs.leader, err = rs.stub.clone(flags, 0, p.PID); err != nil {
				return &ProcessError{PID: p.PID, Err: err}
			}
			// Its children must not inherit that memory.
			for _, r := range rs.kept {
				if len(rs.cp.Processes) == 1 {
					break
				}
				if _, err := rs.leader.call(unix.SYS_MADVISE, r.Start, r.Len(), unix.MADV_DONTFORK); err != nil {
					return &ProcessError{PID: p.PID, Err: fmt.Errorf("pre-copied memory: %w", err)}
				}
			}
		}
	} else {
		parent := rs.procs[p.PPID]
		if parent == nil || parent.leader == nil {
			return fmt.Errorf("image metadata: pid %d has no parent %d in the image: %w", p.PID, p.PPID, image.ErrCorrupt)
		}
		if rs.leader, err = parent.leader.clone(0, uint64(unix.SIGCHLD), p.PID); err != nil {
			return &ProcessError{PID: p.PID, Err: err}
		}
		if rs.vdso, err = rs.leader.placeVDSO(p, used); err != nil {
			return err
		}
	}
	L := rs.leader
	rs.host = L.pid
	rs.threads = []*remote{L}
	if err := ptrace.SetSigMask(L.tid, ^uint64(0)); err != nil {
		return err
	}
	// The stub's stdio, inherited: the process gets its own descriptors later.
	if err := keepOnlyPidfd(L); err != nil {
		return err
	}
	if err := rs.setSession(); err != nil {
		return err
	}
	if err := rs.setCTTY(); err != nil {
		return err
	}
	for _, t := range p.Threads[1:] {
		const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
			unix.CLONE_THREAD | unix.CLONE_SYSVSEM
		nt, err := L.clone(threadFlags, 0, t.TID)
		if err != nil {
			return &ProcessError{PID: p.PID, Err: err}
		}
		rs.threads = append(rs.threads, nt)
		if err := ptrace.SetSigMask(nt.tid, ^uint64(0)); err != nil {
			return err
		}
	}
	rs.pidfd = stubPidfd
	return nil
}

// keepOnlyPidfd closes every descriptor of a new task but the pidfd of
// relocate it inherited from the stub (the stub's /dev/null stdio goes).
func keepOnlyPidfd(L *remote) error {
	if _, err := L.call(unix.SYS_CLOSE_RANGE, 0, stubPidfd-1, 0); err != nil {
		return err
	}
	_, err := L.call(unix.SYS_CLOSE_RANGE, stubPidfd+1, ^uint64(0)>>1, 0)
	return err
}

// createZombie clones the child from its restored parent and has it end
// the way it did, so that the parent's wait reports the same status.
func (rs *restorer) createZombie() error {
	p := rs.p
	parent := rs.procs[p.PPID]
	if parent == nil || parent.leader == nil || parent.p.Zombie {
		return fmt.Errorf("image metadata: zombie %d has no parent %d in the image: %w", p.PID, p.PPID, image.ErrCorrupt)
	}
	z, err := parent.leader.clone(0, uint64(unix.SIGCHLD), p.PID)
	if err != nil {
		return &ProcessError{PID: p.PID, Err: err}
	}
	ws := unix.WaitStatus(p.WaitStatus)
	switch {
	case ws.Exited():
		err = ptrace.StartTrap(z.tid, z.code, unix.SYS_EXIT_GROUP, uint64(ws.ExitStatus()))
	case ws.Signaled():
		// Die of the same signal, with no core file.
		err = errors.Join(unix.Prlimit(z.tid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil),
			ptrace.SetSigMask(z.tid, 0), ptrace.Cont(z.tid, int(ws.Signal())))
	default:
		err = fmt.Errorf("zombie %d: wait status %#x: %w", p.PID, p.WaitStatus, image.ErrCorrupt)
	}
	if err != nil {
		z.kill()
		return err
	}
	// Our wait, as its tracer, passes it on to the parent as a zombie.
	for {
		got, err := ptrace.Wait(z.tid)
		if err != nil {
			return err
		}
		if got.Exited() || got.Signaled() {
			return nil
		}
		if err := ptrace.Cont(z.tid, 0); err != nil {
			return err
		}
	}
}

// setSession puts the process in its session and process group. A child
// inherits its parent's, which were set before it was cloned.
func (rs *restorer) setSession() error {
	p := rs.p
	inheritedPGID := 0
	if parent := rs.procs[p.PPID]; parent != nil && p.PID != rs.cp.Root {
		inheritedPGID = parent.p.PGID
	}
	var err error
	switch {
	case p.SID == p.PID:
		_, err = rs.leader.call(unix.SYS_SETSID)
	case p.PGID == p.PID:
		_, err = rs.leader.call(unix.SYS_SETPGID, 0, 0)
	case inheritedPGID != 0 && p.PGID != inheritedPGID:
		_, err = rs.leader.call(unix.SYS_SETPGID, 0, uint64(p.PGID))
	}
	if err != nil {
		return &ProcessError{PID: p.PID, Err: fmt.Errorf("session %d, process group %d: %w", p.SID, p.PGID, err)}
	}
	return nil
}

// mapMemory creates every mapping of the image at its address.
func (rs *restorer) mapMemory(L *remote, pidfd int) error {
	fileFDs := map[string]uint64{} // path+mode -> fd inside the process
	for _, v := range rs.p.VMAs {
		if v.Kind == VMAVDSO || v.Kind == VMAVsyscall || v.Kind == VMASysV {
			continue
		}
		prot := uint64(v.Prot)
		flags := uint64(unix.MAP_FIXED)
		fd := ^uint64(0)
		var off uint64
		fill := v.Pages > 0 || v.PreCopied
		if fill {
			prot |= unix.PROT_READ | unix.PROT_WRITE
		}
		switch v.Kind {
		case VMAAnon, VMADeleted:
			flags |= unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
		case VMAShmem:
			flags |= unix.MAP_SHARED
			if v.Obj == 0 {
				flags |= unix.MAP_ANONYMOUS
				break
			}
			// The one object every mapping of it shares: the image's
			// contents arrive in it as a blob while the stream is read.
			key := "shm:" + strconv.Itoa(v.Obj)
			tfd, ok := fileFDs[key]
			if !ok {
				lfd, err := rs.shmemFD(v.Obj - 1)
				if err != nil {
					return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "create", Err: err}
				}
				if tfd, err = L.call(unix.SYS_PIDFD_GETFD, uint64(pidfd), uint64(lfd), 0); err != nil {
					return err
				}
				fileFDs[key] = tfd
			}
			fd, off = tfd, v.Offset
		case VMAFile, VMAShared:
			mode := unix.O_RDONLY
			if v.Kind == VMAShared {
				flags |= unix.MAP_SHARED
				if v.Prot&unix.PROT_WRITE != 0 {
					mode = unix.O_RDWR
				}
			} else {
				flags |= unix.MAP_PRIVATE
			}
			key := strconv.Itoa(mode) + v.File.Path
			tfd, ok := fileFDs[key]
			if !ok {
				c := credsOf(rs.p)
				lfd, err := openChecked(&c, v.File.Path, mode, expect{typ: unix.S_IFREG, id: v.File, sameHost: rs.cp.sameHost(), content: true})
				if err != nil {
					return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "open", Err: err}
				}
				rs.toClose = append(rs.toClose, lfd)
				if tfd, err = L.call(unix.SYS_PIDFD_GETFD, uint64(pidfd), uint64(lfd), 0); err != nil {
					return err
				}
				fileFDs[key] = tfd
			}
			fd, off = tfd, v.Offset
		default:
			return fmt.Errorf("image metadata: mapping kind %q: %w", v.Kind, image.ErrCorrupt)
		}
		flags |= v.mmapFlags()
		// Pre-copied memory the root has in place stays: only the rest of
		// the mapping is made (the same kind, flags and protection, so
		// the kernel joins the parts into one mapping again).
		whole := mem.Range{Start: v.Start, End: v.End}
		parts := []mem.Range{whole}
		kept := v.PreCopied && rs.p.PID == rs.cp.Root && overlapsAny(whole, rs.kept)
		if kept {
			parts = subtractRanges(whole, rs.kept)
		}
		for _, r := range parts {
			got, err := L.call(unix.SYS_MMAP, r.Start, r.Len(), prot, flags, fd, off+(r.Start-v.Start))
			if err != nil {
				return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "mmap", Err: err}
			}
			if got != r.Start {
				return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "mmap", Err: fmt.Errorf("mapped at %#x", got)}
			}
		}
		if kept && len(rs.cp.Processes) > 1 && !v.hasFlag("dc") {
			// It was kept from the root's children while they were made.
			if _, err := L.call(unix.SYS_MADVISE, v.Start, v.End-v.Start, unix.MADV_DOFORK); err != nil {
				return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "madvise", Err: err}
			}
		}
		if fill {
			rs.filled = append(rs.filled, v)
		}
		for flag, advice := range madvFlags {
			if v.hasFlag(flag) {
				if _, err := L.call(unix.SYS_MADVISE, v.Start, v.End-v.Start, uint64(advice)); err != nil {
					return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "madvise", Err: err}
				}
			}
		}
	}
	for _, tfd := range fileFDs {
		if _, err := L.call(unix.SYS_CLOSE, tfd); err != nil {
			return err
		}
	}
	return rs.attachSysV(L)
}

// madvFlags maps smaps VmFlags to the madvise(2) advice that sets them.
var madvFlags = map[string]int{
	"dc": unix.MADV_DONTFORK,
	"dd": unix.MADV_DONTDUMP,
	"wf": unix.MADV_WIPEONFORK,
	"hg": unix.MADV_HUGEPAGE,
	"nh": unix.MADV_NOHUGEPAGE,
}

func (v *VMA) hasFlag(f string) bool { return slices.Contains(v.Flags, f) }

// mmapFlags are the flags of mmap(2) that give a mapping the VmFlags of v
// that cannot be set afterwards.
func (v *VMA) mmapFlags() uint64 {
	var f uint64
	if v.hasFlag("gd") {
		f |= unix.MAP_GROWSDOWN
	}
	if v.hasFlag("nr") {
		f |= unix.MAP_NORESERVE
	}
	return f
}

// stream reads page and blob records up to the verified trailer, writing
// each page run into the process it belongs to.
func (sh *shared) stream(ctx context.Context) error {
	var total int64
	for _, rs := range sh.order {
		for _, v := range rs.filled {
			total += int64(v.Pages) * mem.PageSize
		}
	}
	sh.opts.Progress.set("restoring memory", total)
	end := sh.step("pre-copied memory")
	if err := sh.writeHeld(); err != nil {
		return err
	}
	end()
	// Decompress ahead on the other cores while writers take the faults.
	sh.r.Prefetch(runtime.GOMAXPROCS(0))
	defer sh.r.StopPrefetch()
	pw := newPageWriters(runtime.GOMAXPROCS(0))
	return errors.Join(sh.streamTo(ctx, pw), pw.wait())
}

func (sh *shared) streamTo(ctx context.Context, pw *pageWriters) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := sh.r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch rec.Kind {
		case image.KindPages:
			pg := rec.Pages
			end := pg.Addr + uint64(len(pg.Data))
			rs := sh.procs[pg.PID]
			if rs == nil || !rs.inFilled(pg.Addr, end) {
				return fmt.Errorf("image: pages at %#x-%#x of pid %d lie outside the saved mappings: %w", pg.Addr, end, pg.PID, image.ErrCorrupt)
			}
			if err := pw.write(rs.host, pg.Addr, pg.Data); err != nil {
				return err
			}
			sh.pages += int64(len(pg.Data) / mem.PageSize)
			sh.opts.Progress.add(int64(len(pg.Data)))
		case image.KindBlob:
			if err := sh.blob(rec.Blob); err != nil {
				return err
			}
		default:
			return fmt.Errorf("image: unexpected record kind %d after metadata: %w", rec.Kind, image.ErrCorrupt)
		}
	}
}

func (rs *restorer) inFilled(start, end uint64) bool {
	i, _ := slices.BinarySearchFunc(rs.filled, start, func(v VMA, a uint64) int {
		if v.End <= a {
			return -1
		}
		if v.Start > a {
			return 1
		}
		return 0
	})
	return i < len(rs.filled) && rs.filled[i].Start <= start && end <= rs.filled[i].End && start < end
}

// protect gives filled mappings their real protection.
func (rs *restorer) protect(L *remote) error {
	for _, v := range rs.filled {
		if v.Prot == unix.PROT_READ|unix.PROT_WRITE {
			continue
		}
		if _, err := L.call(unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot)); err != nil {
			return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "mprotect", Err: err}
		}
	}
	return nil
}

// restoreMM sets the mm bounds, auxv and exe link (PR_SET_MM_MAP).
func (rs *restorer) restoreMM(L *remote, pidfd int) error {
	mm := rs.p.MM
	le := binary.LittleEndian
	auxv := make([]byte, 8*len(mm.Auxv))
	for i, w := range mm.Auxv {
		if i%2 == 1 && mm.Auxv[i-1] == atSysinfoEhdr && rs.vdso.Start != 0 {
			w = rs.vdso.Start // a vDSO behind a proxy: later lookups find the real one
		}
		le.PutUint64(auxv[8*i:], w)
	}
	auxAddr, err := L.poke(1024, auxv)
	if err != nil {
		return err
	}
	exe, err := openChecked(nil, rs.p.Exe, unix.O_RDONLY, expect{typ: unix.S_IFREG, id: rs.p.ExeFile, sameHost: rs.cp.sameHost(), content: true})
	if err != nil {
		return &ProcessError{PID: rs.p.PID, Err: fmt.Errorf("executable %s: %w", rs.p.Exe, err)}
	}
	rs.toClose = append(rs.toClose, exe)
	exeFD, err := L.call(unix.SYS_PIDFD_GETFD, uint64(pidfd), uint64(exe), 0)
	if err != nil {
		return err
	}
	b := make([]byte, 104) // struct prctl_mm_map
	for i, v := range []uint64{mm.StartCode, mm.EndCode, mm.StartData, mm.EndData, mm.StartBrk, mm.Brk,
		mm.StartStack, mm.ArgStart, mm.ArgEnd, mm.EnvStart, mm.EnvEnd, auxAddr} {
		le.PutUint64(b[8*i:], v)
	}
	le.PutUint32(b[96:], uint32(len(auxv)))
	le.PutUint32(b[100:], uint32(exeFD))
	addr, err := L.poke(0, b)
	if err != nil {
		return err
	}
	if _, err := L.call(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, uint64(len(b))); err != nil {
		return fmt.Errorf("restore mm layout: %w", err)
	}
	_, err = L.call(unix.SYS_CLOSE, exeFD)
	return err
}

// unmapCode removes the code page. The munmap runs from a syscall
// instruction of the restored vDSO, stepped with PTRACE_SYSCALL, so no
// fault happens: a SIGSEGV forced while signals are blocked would reset
// the program's own SIGSEGV handler to SIG_DFL (Go, the JVM and Python's
// faulthandler all have one). Without a vDSO it unmaps the page it runs
// from and catches the fault with only SIGSEGV unblocked, which keeps a
// handler but not an ignored SIGSEGV.
func (rs *restorer) unmapCode(L *remote) error {
	vmas := rs.p.VMAs
	if rs.vdso.Start != 0 {
		vmas = []VMA{{Start: rs.vdso.Start, End: rs.vdso.End, Name: "[vdso]"}}
	}
	ip, ok, err := vdsoSyscall(rs.host, vmas)
	if err != nil {
		return err
	}
	if ok {
		regs, err := ptrace.GetRegs(L.tid)
		if err != nil {
			return err
		}
		_, err = ptrace.InjectSyscallStop(L.tid, &regs, ip, unix.SYS_MUNMAP, L.code, codeSize)
		return err
	}
	if err := ptrace.SetSigMask(L.tid, ^uint64(0)&^(1<<(unix.SIGSEGV-1))); err != nil {
		return err
	}
	if err := ptrace.StartTrap(L.tid, L.code, unix.SYS_MUNMAP, L.code, codeSize); err != nil {
		return err
	}
	s, err := ptrace.WaitStop(L.tid)
	if err != nil {
		return err
	}
	if s.Status.StopSignal() != unix.SIGSEGV {
		return fmt.Errorf("unmap code page: unexpected %s", s)
	}
	return nil
}

// resume unmaps the code page of every process and lets every thread go
// with its own registers.
func (sh *shared) resume() error {
	if err := sh.finishNet(); err != nil {
		return err
	}
	for _, rs := range sh.order {
		L := rs.leader
		if err := rs.unmapCode(L); err != nil {
			return err
		}
		for i, t := range rs.p.Threads {
			tid := rs.threads[i].tid
			if err := loadRegSets(tid, t.RegSets); err != nil {
				return err
			}
			if err := ptrace.SetSigMask(tid, t.SigMask); err != nil {
				return err
			}
		}
	}
	if sh.hold {
		for _, rs := range sh.order {
			fd, err := unix.PidfdOpen(rs.host, 0)
			if err != nil {
				return err
			}
			sh.pidfds = append(sh.pidfds, fd)
		}
		// Still ours (a relocate that dies kills them: PTRACE_O_EXITKILL):
		// let the caller record the tree before it is held for good.
		h, err := sh.heldTree()
		if err != nil {
			return err
		}
		if sh.opts.Holding != nil {
			if err := sh.opts.Holding(h); err != nil {
				return err
			}
		}
		for _, l := range sh.locks {
			l.Persist() // a frozen copy keeps its locks whatever happens to us
		}
		sh.held = h
	}
	for _, rs := range sh.order {
		if sig := unix.Signal(rs.p.Stopped); sig != 0 && !isStopSignal(sig) {
			return fmt.Errorf("pid %d: stopped by signal %d, not a stop signal: %w", rs.p.PID, sig, image.ErrCorrupt)
		}
	}
	for _, rs := range sh.order {
		sig := unix.Signal(rs.p.Stopped)
		if sig == 0 && sh.hold {
			sig = unix.SIGSTOP // held: see Hold in tx.go
		}
		if sig != 0 {
			// It was stopped (job control), or is held: queued while
			// its threads are held, the signal stops it as they leave
			// ptrace, before it runs an instruction.
			if err := unix.Kill(rs.host, sig); err != nil {
				return fmt.Errorf("pid %d: stop it again: %w", rs.p.PID, err)
			}
		}
		for _, t := range rs.threads {
			// ESRCH: a thread let go before it already exec'd or exited,
			// which killed this one.
			if err := ptrace.Detach(t.tid, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
		rs.leader = nil // running: not ours to kill any more
	}
	return nil
}
