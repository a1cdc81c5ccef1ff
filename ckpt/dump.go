package ckpt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/ckpt/ptrace"
	"github.com/relocate/relocate/sock"
)

// Progress is updated by Dump and Restore for whoever draws a progress bar.
type Progress struct {
	Phase atomic.Value // string
	Total atomic.Int64 // bytes expected in the current phase
	Done  atomic.Int64 // bytes done in the current phase
}

// Set starts a phase of total bytes (0: unknown), for callers that add
// phases of their own (a migration waiting for its target).
func (p *Progress) Set(phase string, total int64) { p.set(phase, total) }

func (p *Progress) set(phase string, total int64) {
	if p == nil {
		return
	}
	p.Phase.Store(phase)
	p.Done.Store(0)
	p.Total.Store(total)
}

func (p *Progress) add(n int64) {
	if p != nil {
		p.Done.Add(n)
	}
}

// DumpOptions tune Dump.
type DumpOptions struct {
	LeaveRunning bool // resume the process after the image is written
	ShellJob     bool // accept terminal descriptors (restored on the restorer's terminal)
	// UnixDisconnect keeps unix connections to sockets outside the tree
	// (journald, D-Bus) as ends whose peer is gone: after a restore the
	// program reads what was queued, then EOF, and may reconnect.
	UnixDisconnect bool
	Progress       *Progress // may be nil
	// Log, if set, gets a debug line with the duration of each step.
	Log      *slog.Logger
	Producer string  // version string stored in the image header
	Proc     proc.FS // zero: the real /proc
	// Frozen, if set, runs once the tree is frozen and its state collected,
	// before memory is written (a migration's post-dump hook). An error
	// rolls the dump back.
	Frozen func(cp *Checkpoint) error
	// Unlock removes the network lock once the tree is killed: its
	// connections now live elsewhere.
	Unlock bool
	// PreCopy, if set, copies the processes' memory while they run,
	// in rounds, before the freeze; the frozen pass then copies only what
	// was written since (see preCopy).
	PreCopy *PreCopyOptions
}

// DumpResult summarises a checkpoint.
type DumpResult struct {
	PID         int            `json:"pid"`
	Processes   int            `json:"processes"`
	Threads     int            `json:"threads"`
	BytesRaw    int64          `json:"bytes_raw"`
	BytesStored int64          `json:"bytes_stored"`
	Pages       int64          `json:"pages"`
	ZeroPages   int64          `json:"zero_pages"`
	Frozen      time.Duration  `json:"-"`
	FrozenMS    int64          `json:"frozen_ms"`
	Killed      bool           `json:"killed"`
	NetLocked   bool           `json:"net_locked,omitempty"` // connections stay locked until restore
	PreCopy     *PreCopyResult `json:"precopy,omitempty"`
	// Externals are the descriptors that led outside the tree, recorded
	// as external (Target empty).
	Externals []ExternalNote `json:"externals,omitempty"`
}

type dumper struct {
	pid   int
	fs    proc.FS
	opts  DumpOptions
	tasks map[int]*frozenTask
	files *fileTable
	runs  []memRun
	// against open descriptors.
	tcp    []tcpSocket
	lock   *sock.Lock
	zombie *Process // set for a zombie child: nothing to freeze or collect
	// pc is the process's pre-copy, if it had one; later then says which
	// mappings it will account for: their pages are not scanned now (see
	// procCopy.final)
	pc    *procCopy
	later func(VMA) bool
	// stopSig is the signal that had stopped the process (job control:
	// SIGSTOP, SIGTSTP, ...) when it was frozen; 0 if it was running.
	stopSig unix.Signal
}

// Dump checkpoints pid, every thread of it and every descendant process,
// into out. Unless opts.LeaveRunning, the processes are killed once the
// image is completely written; on any error they are resumed exactly as
// they were.
func Dump(ctx context.Context, pid int, out io.Writer, opts DumpOptions) (*DumpResult, error) {
	f, err := DumpTx(ctx, pid, out, opts)
	if err != nil {
		return nil, err
	}
	if opts.LeaveRunning {
		return f.Result, f.Rollback()
	}
	if err := f.Commit(); err != nil {
		return nil, err
	}
	return f.Result, nil
}

// DumpTx freezes pid's tree and writes its image into out, and returns
// the tree still frozen: the caller ends the transaction with Commit (the
// tree dies) or Rollback (it runs on as it was). On error the tree was
// resumed already.
func DumpTx(ctx context.Context, pid int, out io.Writer, opts DumpOptions) (*Frozen, error) {
	fs := opts.Proc
	if fs.Root == "" {
		fs = proc.Default()
	}
	if err := (&dumper{pid: pid, fs: fs}).precheck(); err != nil {
		return nil, err
	}
	if err := kernelPrecheck(pid); err != nil {
		return nil, err
	}
	var pc *preCopy
	if opts.PreCopy != nil {
		var err error
		pc, err = startPreCopy(ctx, pid, fs, out, opts)
		var nt *noTrackingError
		switch {
		case errors.As(err, &nt) && !opts.PreCopy.Required:
			pc = nil // copy everything frozen
		case err != nil:
			return nil, err
		default:
			defer func() {
				if pc != nil { // not handed to the transaction
					pc.close()
				}
			}()
		}
	}
	ls := findListeners(fs, pid)
	waited := time.Duration(0)
	for attempt := 1; ; attempt++ {
		wait := drainWait
		if attempt > 1 {
			wait = drainRetry
		}
		start := time.Now()
		ls.drain(wait)
		waited += time.Since(start)
		f, err := dumpOnce(ctx, pid, fs, out, opts, pc)
		if queued(err) && attempt < dumpAttempt && ctx.Err() == nil && pc == nil {
			if errors.Is(err, ErrTTYQueue) {
				// No queue to watch from here: a moment for the reader.
				time.Sleep(drainRetry)
				waited += drainRetry
			}
			continue // a connection or message came in before the freeze: try again
		}
		if err != nil {
			return nil, errors.Join(queueError(err, waited), ls.release())
		}
		f.ls = ls
		if pc != nil {
			f.untrack(pc.close)
			pc = nil
		}
		return f, nil
	}
}

// dumpOnce freezes the tree and writes its image; the tree stays frozen.
func dumpOnce(ctx context.Context, pid int, fs proc.FS, out io.Writer, opts DumpOptions, pc *preCopy) (*Frozen, error) {
	t := &tree{tasks: map[int]*frozenTask{}, files: newFileTable(), pc: pc}
	root := t.add(pid, fs, opts)
	if err := root.precheck(); err != nil {
		return nil, err
	}
	f := &Frozen{tr: ptrace.NewTracer(), t: t, opts: opts}
	err := f.tr.Do(func() (err error) {
		opts.Progress.set("freezing", 0)
		defer func() {
			if err != nil {
				err = errors.Join(err, t.release())
			}
		}()
		end := step(opts.Log, "dump: freeze")
		if err := t.freeze(); err != nil {
			return err
		}
		end()
		f.frozenAt = time.Now()
		f.Result, err = t.dumpFrozen(ctx, out)
		return err
	})
	if err != nil {
		f.tr.Close()
		return nil, err
	}
	return f, nil
}

var errZombie = errors.New("is a zombie (exited, not yet reaped)")

// zombieState records a zombie child: who its parent is and what the
// parent's wait will report (/proc/PID/stat exit_code).
func (d *dumper) zombieState() (*Process, error) {
	b, err := d.fs.Read(d.pid, "stat")
	if err != nil {
		return nil, &ProcessError{PID: d.pid, Err: err}
	}
	st, err := proc.ParseStat(b)
	if err != nil {
		return nil, err
	}
	return &Process{PID: d.pid, PPID: st.PPID, PGID: st.PGRP, SID: st.Session, Comm: st.Comm,
		Zombie: true, WaitStatus: st.ExitCode}, nil
}

// tree is the set of processes being dumped, parents before children.
// Their dumpers share the frozen tasks and the file table.
type tree struct {
	procs []*dumper
	tasks map[int]*frozenTask
	files *fileTable
	pc    *preCopy // the root's pre-copy, if any
}

func (t *tree) add(pid int, fs proc.FS, opts DumpOptions) *dumper {
	d := &dumper{pid: pid, fs: fs, opts: opts, tasks: t.tasks, files: t.files}
	t.procs = append(t.procs, d)
	return d
}

func (t *tree) has(pid int) bool {
	for _, d := range t.procs {
		if d.pid == pid {
			return true
		}
	}
	return false
}

// freeze freezes the root, then its descendants, until no process of the
// tree has a child that is not frozen (a fork can race with the freeze).
// Precondition: called on the tracer thread.
func (t *tree) freeze() error {
	root := t.procs[0]
	// settle re-reads the state of child d after err: exited since its
	// parent listed it (not part of the tree: dropped) or a zombie now
	// (recorded as one) settles it; otherwise err stands.
	settle := func(i int, d *dumper, err error) (bool, error) {
		if err != nil {
			// Let go of what the failed freeze holds first: the check
			// would see our own tracer, and refuse it as another's.
			_ = d.release()
		}
		switch perr := d.precheck(); {
		case errors.Is(perr, ErrNoProcess):
			_ = d.release()
			t.procs = append(t.procs[:i], t.procs[i+1:]...)
			return true, nil
		case errors.Is(perr, errZombie):
			_ = d.release()
			var zerr error
			d.zombie, zerr = d.zombieState()
			return true, zerr
		case perr != nil:
			return false, perr
		}
		return false, err
	}
	for i := 0; i < len(t.procs); i++ {
		d := t.procs[i]
		if d != root {
			if done, err := settle(i, d, nil); err != nil {
				return err
			} else if done {
				if d.zombie == nil {
					i--
				}
				continue
			}
		}
		err := d.freeze()
		var kids []int
		if err == nil {
			if kids, err = d.fs.Children(d.pid); err != nil {
				err = &ProcessError{PID: d.pid, Err: err}
			}
		}
		if err != nil {
			if d == root {
				return err
			}
			// A child that exits as it is frozen cannot be attached to
			// (EPERM once it is exiting, ESRCH once it is gone), or its
			// /proc entries go: it is a zombie now, or no part of the
			// tree.
			done, err := settle(i, d, err)
			if err != nil || !done {
				return err
			}
			if d.zombie == nil {
				i--
			}
			continue
		}
		for _, k := range kids {
			if !t.has(k) {
				t.add(k, root.fs, root.opts)
			}
		}
	}
	return nil
}

// release resumes every process as it was found.
func (t *tree) release() error {
	var errs []error
	for i := len(t.procs) - 1; i >= 0; i-- {
		d := t.procs[i]
		errs = append(errs, d.releaseNet(true), d.release())
	}
	return errors.Join(errs...)
}

// dumpFrozen collects everything and writes the image. The tree is
// frozen. Precondition: called on the tracer thread.
func (t *tree) dumpFrozen(ctx context.Context, out io.Writer) (*DumpResult, error) {
	cp := &Checkpoint{Root: t.procs[0].pid, Host: hostID()}
	log := t.procs[0].opts.Log
	var fr *frozenRound
	if t.pc != nil {
		for _, d := range t.procs {
			if d.zombie != nil {
				continue
			}
			if c := t.pc.of(d.fs, d.pid); c != nil {
				d.pc = c
				d.later = func(v VMA) bool { return trackable(v) && c.covers(v.Start, v.End) }
			}
		}
		var err error
		if fr, err = t.pc.startFrozenRound(ctx, t.procs); err != nil {
			return nil, err
		}
		defer fr.cancel() // on a failure before its end
	}
	end := step(log, "dump: state")
	threads := 0
	for _, d := range t.procs {
		p := d.zombie
		if p == nil {
			var err error
			if p, err = d.collectProcess(); err != nil {
				return nil, err
			}
		}
		cp.Processes = append(cp.Processes, *p)
		threads += len(p.Threads)
		if d.lock != nil {
			cp.NetLocks = append(cp.NetLocks, lockName(d.pid))
		}
	}
	// What needs the whole tree: a pipe's other end, a shared memory
	// object open in one process and mapped in another.
	if err := t.files.checkSysV(); err != nil {
		return nil, err
	}
	inTree := map[int]bool{}
	for _, d := range t.procs {
		inTree[d.pid] = true
	}
	t.files.tree = inTree
	for i := range t.procs {
		if err := t.files.inTree(t.procs[0].opts, &cp.Processes[i]); err != nil {
			return nil, err
		}
	}
	t.files.linkShmem()
	queues, sems, err := sysvIPCUser(inTree)
	if err != nil {
		return nil, err
	}
	for _, row := range sems {
		f, err := collectSemSet(row)
		if err != nil {
			return nil, err
		}
		t.files.files = append(t.files.files, *f)
	}
	for _, id := range queues {
		f, err := collectMsgQueue(id)
		if err != nil {
			return nil, err
		}
		t.files.files = append(t.files.files, *f)
	}
	cp.Files = t.files.files
	cp.Clock = readClock(cp.Root)
	end()
	if t.pc != nil {
		end := step(log, "dump: pre-copy, frozen round")
		if err := fr.wait(&t.pc.res); err != nil {
			return nil, err
		}
		end()
		end = step(log, "dump: pre-copy, last look")
		for i, d := range t.procs {
			if d.pc == nil {
				continue
			}
			if err := d.pc.final(d, &cp.Processes[i], &t.pc.res); err != nil {
				return nil, err
			}
		}
		end()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts := t.procs[0].opts
	if opts.Frozen != nil {
		if err := opts.Frozen(cp); err != nil {
			return nil, err
		}
	}

	var w *image.Writer
	if t.pc != nil {
		w = t.pc.w // the header and the pre-copied pages are in it
	} else if w, err = image.NewWriter(out, t.procs[0].header(&cp.Processes[0]), image.WriterOptions{}); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	// ^C while the output is stalled (a full pipe, a hung SSH channel) must
	// still roll back: aborting the writer unblocks this thread.
	defer context.AfterFunc(ctx, w.Abort)()
	if err := w.WriteMeta(cp); err != nil {
		return nil, err
	}
	var total int64
	for _, d := range t.procs {
		total += d.runBytes()
	}
	t.procs[0].opts.Progress.set("dumping memory", total)
	end = step(log, "dump: memory")
	for _, d := range t.procs {
		if err := d.writeMemory(ctx, w); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
	}
	end()
	end = step(log, "dump: contents, end of stream")
	if err := t.files.writeBlobs(w); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	ok = true
	end()
	if f, isFile := out.(*os.File); isFile {
		if err := f.Sync(); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("sync image: %w", err)
		}
	}
	st := w.Stats()
	res := &DumpResult{PID: cp.Root, Processes: len(t.procs), Threads: threads, BytesRaw: st.RawBytes,
		BytesStored: st.StoredBytes, Pages: st.Pages, ZeroPages: st.ZeroPages, Externals: cp.externals()}
	if t.pc != nil {
		res.PreCopy = &t.pc.res
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// kill ends the frozen tree: every process dies, its connections' copies
// here are closed without a word, and the network lock stays (the
// connections wait for a restore) unless unlock.
// Precondition: called on the tracer thread.
func (t *tree) kill(unlock bool) (netLocked bool, err error) {
	// Kill every process before waiting for any: a parent must not see its
	// child die and react.
	var errs []error
	for _, d := range t.procs {
		if d.zombie != nil {
			continue // already dead; init reaps it once its parent is gone
		}
		if err := unix.Kill(d.pid, unix.SIGKILL); err != nil {
			errs = append(errs, fmt.Errorf("kill pid %d: %w", d.pid, err))
		}
	}
	for _, d := range t.procs {
		d.waitKilled()
		netLocked = netLocked || d.lock != nil
		errs = append(errs, d.releaseNet(false))
		if unlock {
			errs = append(errs, d.lock.Unlock())
		} else {
			d.lock.Persist() // the connections wait for the restore
		}
	}
	// Its System V segments and its named POSIX message queues moved with it.
	errs = append(errs, t.files.removeSysV(), t.files.removeMsgQueues(), t.files.removeSemSets(), t.files.removeMQueues())
	return netLocked && !unlock, errors.Join(errs...)
}

// precheck refuses processes that can never be dumped, before touching them.
func (d *dumper) precheck() error {
	if d.pid <= 0 {
		return &ProcessError{PID: d.pid, Err: ErrNoProcess}
	}
	if d.pid == os.Getpid() {
		return &ProcessError{PID: d.pid, Err: errors.New("refusing to checkpoint relocate itself")}
	}
	if d.pid == 1 {
		return &ProcessError{PID: d.pid, Err: errors.New("refusing to checkpoint init")}
	}
	b, err := d.fs.Read(d.pid, "stat")
	if err != nil {
		return &ProcessError{PID: d.pid, Err: ErrNoProcess}
	}
	st, err := proc.ParseStat(b)
	if err != nil {
		return err
	}
	const pfKthread = 0x00200000
	if st.Flags&pfKthread != 0 {
		return &ProcessError{PID: d.pid, Err: errors.New("is a kernel thread")}
	}
	if st.State == 'Z' || st.State == 'X' {
		return &ProcessError{PID: d.pid, Err: errZombie}
	}
	sb, err := d.fs.Read(d.pid, "status")
	if err != nil {
		return &ProcessError{PID: d.pid, Err: ErrNoProcess}
	}
	status, err := proc.ParseStatus(sb)
	if err != nil {
		return err
	}
	if status.TracerPID != 0 {
		return &ProcessError{PID: d.pid, Err: fmt.Errorf("is being traced by pid %d (a debugger or strace?); detach it first", status.TracerPID)}
	}
	if status.Seccomp == 1 {
		return &ProcessError{PID: d.pid, Err: fmt.Errorf("seccomp strict mode: %w", ErrUnsupported)}
	}
	for _, ns := range []string{"pid", "mnt", "net", "user", "ipc", "uts"} {
		mine, err1 := os.Readlink("/proc/self/ns/" + ns)
		theirs, err2 := d.fs.Readlink(d.pid, "ns/"+ns)
		if err1 == nil && err2 == nil && mine != theirs {
			return &ProcessError{PID: d.pid, Err: fmt.Errorf("runs in another %s namespace (%s) than relocate; run relocate inside it (nsenter -t %d -a): %w", ns, theirs, d.pid, ErrUnsupported)}
		}
	}
	return nil
}

func (d *dumper) header(p *Process) image.Header {
	var u unix.Utsname
	_ = unix.Uname(&u)
	host, _ := os.Hostname()
	h := image.Header{
		Producer: d.opts.Producer,
		Kernel:   unix.ByteSliceToString(u.Release[:]),
		Arch:     archName,
		Hostname: host,
		Created:  time.Now().UTC(),
		PageSize: os.Getpagesize(),
	}
	h.CPU.Flags = cpuFlags()
	if len(p.Threads) > 0 {
		h.CPU.XCR0, h.CPU.XSaveSize = cpuState(&p.Threads[0])
	}
	return h
}

// cpuFlags returns the "flags" line of /proc/cpuinfo.
func cpuFlags() []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == cpuFlagsKey {
			return strings.Fields(v)
		}
	}
	return nil
}
