package ckpt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// preCopy is the state of a pre-copy between its rounds and the frozen
// pass: the image writer (the header and the pre-copied pages are already
// in it) and, for each process of the tree, the tracker of its writes and
// the ranges it still tracks.
//
// The rounds copy the private anonymous memory of the processes while
// they run, each round only the pages written since the previous one. The
// frozen pass is authoritative for everything: a mapping whose pages were
// tracked all along is marked PreCopied and gets only the pages written
// since the last round (zero pages included), most of them sent by the
// frozen round (see frozenRound) before the metadata; any other mapping is
// copied whole, and the restore drops the earlier copies of its pages. A
// process that appeared since the rounds began is copied whole.
type preCopy struct {
	w     *image.Writer
	procs []*procCopy // the root first
	res   PreCopyResult
}

// procCopy is the pre-copy of one process.
type procCopy struct {
	pid       int
	startTime uint64 // the process's identity: a reused PID is another
	tracker   *mem.Tracker
	ranges    []mem.Range // tracked, in address order
	th        *throttler  // while the rounds throttle it
	// lost: the frozen round could not copy all it found written, or the
	// process exec'd: the frozen pass copies every mapping whole.
	lost bool
}

// of is the pre-copy of the process pid of the frozen tree, if it was
// pre-copied and is still the same process (the root's is returned as it
// is: its final pass says what changed).
func (pc *preCopy) of(fs proc.FS, pid int) *procCopy {
	for i, c := range pc.procs {
		if c.pid != pid {
			continue
		}
		if st, err := processStart(fs, pid); i > 0 && (err != nil || st != c.startTime || c.tracker == nil) {
			return nil
		}
		return c
	}
	return nil
}

// trackable: the mappings a pre-copy copies and tracks.
func trackable(v VMA) bool {
	return v.Kind == VMAAnon && !v.Shared && v.Prot&unix.PROT_READ != 0 && v.Prot&unix.PROT_WRITE != 0
}

// startPreCopy starts tracking the writes of every process of the tree
// (see startProcCopy), writes the image header, then copies their memory
// in rounds while they run. The processes are running when it returns,
// with or without an error; on error nothing of the tracking is left in
// them. A child that cannot be tracked is copied whole by the frozen pass.
func startPreCopy(ctx context.Context, pid int, fs proc.FS, out io.Writer, opts DumpOptions) (_ *preCopy, err error) {
	pc := &preCopy{}
	defer func() {
		if err != nil {
			pc.close()
		}
	}()
	// Without asynchronous write-protection here (before Linux 6.7), no
	// userfaultfd goes into the processes: soft-dirty bits, if any.
	wantUffd := probeUffdWP() == nil && probePagemapScan() == nil
	var root *Process
	for i, p := range treePIDs(fs, pid) {
		c, tracking, proc, err := startProcCopy(fs, p, opts, wantUffd)
		if err != nil {
			if i == 0 {
				return nil, err
			}
			logDebug(opts.Log, "pre-copy: a child is copied whole", "pid", p, "error", err)
			continue
		}
		if i == 0 {
			root, pc.res.Tracking = proc, tracking
		} else if tracking != pc.res.Tracking {
			c.close()
			continue
		}
		pc.procs = append(pc.procs, c)
	}
	pc.res.Processes = len(pc.procs)
	d := &dumper{pid: pid, fs: fs, opts: opts}
	h := d.header(root)
	h.Regions = regionsOf(root.VMAs)
	if pc.w, err = image.NewWriter(out, h, image.WriterOptions{}); err != nil {
		return nil, err
	}
	defer context.AfterFunc(ctx, pc.w.Abort)()
	return pc, pc.rounds(ctx, opts)
}

// treePIDs lists pid and its descendants as they are now, parents first
// (a hint: the frozen pass finds the tree again).
func treePIDs(fs proc.FS, pid int) []int {
	out := []int{pid}
	seen := map[int]bool{pid: true}
	for i := 0; i < len(out) && len(out) < maxTreeProcs; i++ {
		tids, err := fs.Tasks(out[i])
		if err != nil {
			continue
		}
		for _, tid := range tids {
			b, err := fs.ReadTask(out[i], tid, "children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil && c > 0 && !seen[c] {
					seen[c] = true
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// maxTreeProcs bounds the processes a pre-copy tracks.
const maxTreeProcs = 4096

// startProcCopy freezes one process for an instant to open a userfaultfd
// inside it (one injected syscall; the process keeps no descriptor of it)
// and starts tracking its writes, with soft-dirty bits where that cannot
// be done. It returns the process's memory map as it was then.
func startProcCopy(fs proc.FS, pid int, opts DumpOptions, wantUffd bool) (_ *procCopy, tracking string, _ *Process, err error) {
	st, err := processStart(fs, pid)
	if err != nil {
		return nil, "", nil, err
	}
	c := &procCopy{pid: pid, startTime: st}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	d := &dumper{pid: pid, fs: fs, opts: opts, tasks: map[int]*frozenTask{}, files: newFileTable()}
	p := &Process{PID: pid}
	uffd := -1
	uffdFailed := false // the process is there, only its userfaultfd is not
	tr := ptrace.NewTracer()
	defer tr.Close()
	err = tr.Do(func() (err error) {
		defer func() { err = errors.Join(err, d.release()) }()
		if err := d.freeze(); err != nil {
			return err
		}
		th, err := d.collectThread(pid)
		if err != nil {
			return err
		}
		p.Threads = []Thread{*th}
		if err := d.collectMemory(p); err != nil {
			return err
		}
		d.runs = nil
		uffdFailed = true
		if !wantUffd {
			return errors.New("this kernel has no asynchronous userfaultfd write-protection with PAGEMAP_SCAN")
		}
		uffd, err = d.openUffd(p)
		return err
	})
	if err != nil && uffd < 0 && uffdFailed && mem.SoftDirtyWorks() {
		err = nil // no userfaultfd write-protection here: soft-dirty bits
	}
	if err != nil {
		if uffd >= 0 {
			unix.Close(uffd)
		}
		return nil, "", nil, &noTrackingError{err}
	}
	if uffd >= 0 {
		c.tracker, err = mem.NewUffdTracker(pid, uffd) // it owns uffd, even on error
		tracking = "userfaultfd"
		if err != nil && mem.SoftDirtyWorks() {
			uffd = -1
		}
	}
	if uffd < 0 {
		c.tracker, err = mem.NewSoftDirtyTracker(pid)
		tracking = "soft-dirty"
	}
	if err != nil {
		return nil, "", nil, &noTrackingError{err}
	}
	for _, v := range p.VMAs {
		if trackable(v) {
			c.ranges = append(c.ranges, mem.Range{Start: v.Start, End: v.End})
		}
	}
	if err := c.tracker.Track(c.ranges); err != nil {
		return nil, "", nil, &noTrackingError{err}
	}
	return c, tracking, p, nil
}

// regionsOf is the header's hint of the mappings of vmas (see
// image.Header.Regions): neighbours with the same flags merged, at most
// image.MaxRegions of them.
func regionsOf(vmas []VMA) []image.Region {
	var rs []image.Region
	for _, v := range vmas {
		r := image.Region{Start: v.Start, End: v.End, Flags: v.mmapFlags()}
		if n := len(rs); n > 0 && rs[n-1].End == r.Start && rs[n-1].Flags == r.Flags {
			rs[n-1].End = r.End
			continue
		}
		if len(rs) == image.MaxRegions {
			break
		}
		rs = append(rs, r)
	}
	return rs
}

// noTrackingError: the writes of the process cannot be tracked; nothing
// was written yet.
type noTrackingError struct{ err error }

func (e *noTrackingError) Error() string {
	return "pre-copy: cannot track the writes of the process: " + e.err.Error()
}
func (e *noTrackingError) Unwrap() error { return e.err }

// openUffd opens a userfaultfd inside the frozen process and returns our
// copy of it; the process's own descriptor is closed again.
// Precondition: called on the tracer thread.
func (d *dumper) openUffd(p *Process) (int, error) {
	ip, err := d.findSyscallInsn(p)
	if err != nil {
		return -1, err
	}
	in, err := d.newInjector(d.pid, ip)
	if err != nil {
		return -1, err
	}
	const uffdUserModeOnly = 1 // UFFD_USER_MODE_ONLY
	fd, err := in.call(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly)
	if err != nil {
		return -1, errors.Join(fmt.Errorf("userfaultfd in pid %d: %w", d.pid, err), in.finish())
	}
	pidfd, err := unix.PidfdOpen(d.pid, 0)
	local := -1
	if err == nil {
		local, err = unix.PidfdGetfd(pidfd, int(fd), 0)
		unix.Close(pidfd)
	}
	_, cerr := in.call(unix.SYS_CLOSE, fd)
	if err = errors.Join(err, cerr, in.finish()); err != nil {
		if local >= 0 {
			unix.Close(local)
		}
		return -1, fmt.Errorf("userfaultfd of pid %d: %w", d.pid, err)
	}
	return local, nil
}

// rounds copies the tracked memory while the process runs until the plan
// says to freeze.
func (pc *preCopy) rounds(ctx context.Context, opts DumpOptions) (err error) {
	plan := newRoundPlan(*opts.PreCopy)
	var ths []*throttler
	defer func() {
		for _, th := range ths {
			// A throttle that gave up (the process exited) says nothing
			// the freeze will not say better.
			_ = th.end()
		}
		for _, c := range pc.procs {
			c.th = nil
		}
	}()
	fs := opts.Proc
	if fs.Root == "" {
		fs = proc.Default()
	}
	for round := 0; ; round++ {
		if plan.throttle > 0 {
			if ths == nil {
				for _, c := range pc.procs {
					c.th = startThrottle(c.pid, fs, opts)
					ths = append(ths, c.th)
				}
			}
			for _, th := range ths {
				th.set(plan.throttle)
			}
			pc.res.Throttle = max(pc.res.Throttle, plan.throttle)
		}
		throttle := plan.throttle
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		opts.Progress.set(fmt.Sprintf("pre-copy round %d", round+1), 0)
		runs := make([][]memRun, len(pc.procs))
		var total int64
		for i, c := range pc.procs {
			if c.tracker == nil || c.lost {
				continue // given up: copied whole by the frozen pass
			}
			err := c.writtenNow(opts, func(r mem.Range, resend bool) error {
				runs[i] = append(runs[i], memRun{Range: r, resend: resend})
				return nil
			})
			if err == nil && round == 0 {
				// Everything counts as written once: copy what is there.
				runs[i] = nil
				err = c.presentRuns(func(r mem.Range) { runs[i] = append(runs[i], memRun{Range: r}) })
			}
			if errors.Is(err, mem.ErrGone) {
				// It exec'd: nothing of its new memory was tracked (an
				// exit shows at the freeze).
				logDebug(opts.Log, "pre-copy: a process exec'd or exited; it is copied whole", "pid", c.pid)
				c.lost, runs[i] = true, nil
				continue
			}
			if err != nil && i > 0 {
				// A child that exited or cannot be looked at any more.
				logDebug(opts.Log, "pre-copy: a child is copied whole", "pid", c.pid, "error", err)
				c.close()
				c.ranges, runs[i] = nil, nil
				continue
			}
			if err != nil {
				return err
			}
			for _, r := range runs[i] {
				total += int64(r.Len())
			}
		}
		opts.Progress.set(roundPhase(round, pc.res.Rounds), total)
		for i, c := range pc.procs {
			d := &dumper{pid: c.pid, opts: opts, runs: runs[i]}
			if err := d.writeMemory(ctx, pc.w); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var me *mem.Error
				if !errors.As(err, &me) {
					return err
				}
				// A mapping went away under the copy (or the process
				// did): its pages are not pre-copied (the frozen pass
				// copies whatever is there).
				c.drop(me.Addr)
			}
		}
		var pending int64
		for _, c := range pc.procs {
			n, err := c.pending()
			if err != nil {
				return err
			}
			pending += n
		}
		r := PreCopyRound{Bytes: total, MS: time.Since(start).Milliseconds(), DirtyBytes: pending * mem.PageSize, Throttle: throttle}
		pc.res.Rounds = append(pc.res.Rounds, r)
		if stop, why := plan.done(r); stop {
			pc.res.Stop = why
			// The rounds' records out of our hands before the freeze: the
			// frozen pass must not queue behind them.
			return pc.w.Flush()
		}
	}
}

// roundPhase names pre-copy round i for the progress display, with the
// rates of the round before: how fast the process wrote memory, how fast
// it was copied.
func roundPhase(i int, done []PreCopyRound) string {
	name := fmt.Sprintf("pre-copy round %d", i+1)
	if len(done) == 0 {
		return name
	}
	r := done[len(done)-1]
	if r.MS <= 0 {
		return name
	}
	mbps := func(b int64) float64 { return float64(b) / 1e3 / float64(r.MS) }
	return fmt.Sprintf("%s (written %.0f MB/s, copied %.0f MB/s)", name, mbps(r.DirtyBytes), mbps(r.Bytes))
}

// writtenNow is written, with the process frozen for the instant of the
// look when the tracker uses soft-dirty bits (reading and clearing them
// are two steps: a write between them would be lost).
func (c *procCopy) writtenNow(opts DumpOptions, fn func(mem.Range, bool) error) error {
	if !c.tracker.SoftDirty() {
		return c.written(fn)
	}
	if c.th != nil {
		c.th.mu.Lock()
		defer c.th.mu.Unlock()
	}
	d := &dumper{pid: c.pid, fs: opts.Proc, opts: opts, tasks: map[int]*frozenTask{}}
	if d.fs.Root == "" {
		d.fs = proc.Default()
	}
	tr := ptrace.NewTracer()
	defer tr.Close()
	return tr.Do(func() (err error) {
		defer func() { err = errors.Join(err, d.release()) }()
		if err := d.freeze(); err != nil {
			return err
		}
		return c.written(fn)
	})
}

// written calls fn for the runs of tracked pages written since the last
// look. A range the kernel no longer tracks (unmapped or replaced) is
// dropped.
func (c *procCopy) written(fn func(mem.Range, bool) error) error {
	if c.tracker.SoftDirty() {
		// One look for all: each look clears the bits of the whole process.
		return c.tracker.Written(c.ranges, chunkPages, func(w mem.Range) error { return fn(w, true) })
	}
	kept := c.ranges[:0]
	for _, r := range c.ranges {
		var runs []mem.Range
		err := c.tracker.Written([]mem.Range{r}, chunkPages, func(w mem.Range) error {
			runs = append(runs, w)
			return nil
		})
		if err != nil {
			continue // not tracked any more
		}
		kept = append(kept, r)
		for _, w := range runs {
			if err := fn(w, true); err != nil {
				return err
			}
		}
	}
	c.ranges = kept
	return nil
}

func (c *procCopy) pending() (int64, error) {
	if c.tracker == nil || c.lost {
		return 0, nil
	}
	var n int64
	for _, r := range c.ranges {
		k, err := c.tracker.Pending([]mem.Range{r})
		if err != nil {
			continue
		}
		n += k
	}
	return n, nil
}

// presentRuns lists the pages of the tracked ranges that hold memory.
func (c *procCopy) presentRuns(fn func(mem.Range)) error {
	pm, err := mem.OpenPagemap(c.pid)
	if err != nil {
		return err
	}
	defer pm.Close()
	keep := keepPage(VMAAnon)
	for _, r := range c.ranges {
		err := pm.Runs(r, chunkPages, keep, func(run mem.Range) error { fn(run); return nil })
		if err != nil {
			return err
		}
	}
	return nil
}

// drop stops treating the tracked range holding addr as pre-copied.
func (c *procCopy) drop(addr uint64) {
	kept := c.ranges[:0]
	for _, r := range c.ranges {
		if addr >= r.Start && addr < r.End {
			_ = c.tracker.Untrack([]mem.Range{r})
			continue
		}
		kept = append(kept, r)
	}
	c.ranges = kept
}

// frozenRound copies what the tree wrote since the last round as soon as
// it is frozen, on another goroutine: those pages go out (before the
// metadata, like the rounds', and the target places them the same way)
// while the state is collected, which takes tens of milliseconds (the
// smaps walk, the injected queries). The frozen pass looks once more
// after that (final): only what the injected queries wrote comes after
// the metadata.
type frozenRound struct {
	done  chan struct{}
	abort func() bool // stops aborting the writer on ctx's end
	w     *image.Writer
	bytes int64
	err   error       // the goroutine's: the stream broke
	lost  []*procCopy // processes whose copy failed part-way
	ended bool
}

// startFrozenRound looks at what each pre-copied process of procs (the
// frozen tree, pc and later set) wrote since the last round and starts
// copying it.
func (pc *preCopy) startFrozenRound(ctx context.Context, procs []*dumper) (*frozenRound, error) {
	type job struct {
		c    *procCopy
		runs []memRun
	}
	var jobs []job
	fr := &frozenRound{done: make(chan struct{}), w: pc.w}
	for _, d := range procs {
		c := d.pc
		if c == nil || c.tracker == nil || c.lost {
			continue
		}
		if st, err := processStart(d.fs, d.pid); err != nil || st != c.startTime {
			continue // final says so
		}
		// After an exec the old pagemap shows the old memory, and
		// nothing of the new one was tracked: it is copied whole.
		replaced, err := c.tracker.Reopen()
		if err != nil {
			return nil, err
		}
		if replaced {
			c.lost = true
			continue
		}
		var runs []memRun
		err = c.written(func(r mem.Range, resend bool) error {
			runs = append(runs, memRun{Range: r, resend: resend})
			fr.bytes += int64(r.Len())
			return nil
		})
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, job{c, runs})
	}
	opts := procs[0].opts
	opts.Progress = nil // the display shows the frozen pass's own copy
	fr.abort = context.AfterFunc(ctx, pc.w.Abort)
	go func() {
		defer close(fr.done)
		for _, j := range jobs {
			d := &dumper{pid: j.c.pid, opts: opts, runs: j.runs}
			err := d.writeMemory(ctx, pc.w)
			var me *mem.Error
			if errors.As(err, &me) && ctx.Err() == nil {
				// A mapping that cannot be read (made PROT_NONE since
				// it was registered, say): the pages found written are
				// taken, so final copies this process whole.
				fr.lost = append(fr.lost, j.c)
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				fr.err = err
				return
			}
		}
	}()
	return fr, nil
}

// wait waits for the copy and adds it to res.
func (fr *frozenRound) wait(res *PreCopyResult) error {
	<-fr.done
	fr.abort()
	fr.ended = true
	for _, c := range fr.lost {
		c.lost = true
	}
	res.FinalBytes += fr.bytes
	return fr.err
}

// cancel ends a copy not waited for (the dump failed before): the writer
// is aborted, which unblocks it.
func (fr *frozenRound) cancel() {
	if fr.ended {
		return
	}
	fr.w.Abort()
	<-fr.done
	fr.abort()
	fr.ended = true
}

// final runs in the frozen pass for the process d: each mapping that
// lies in a range tracked since the rounds, and is tracked still, gets
// only the pages written since the frozen round (those the injected
// queries wrote) and is marked PreCopied; the others keep the runs
// collectMemory found, and so do all of a lost process's (it exec'd, or
// the frozen round could not copy it), which are scanned now if they were
// left to the tracker. Precondition: the process is frozen.
func (c *procCopy) final(d *dumper, p *Process, res *PreCopyResult) error {
	st, err := processStart(d.fs, d.pid)
	if err != nil || st != c.startTime {
		return &ProcessError{PID: d.pid, Err: errors.New("exited during the pre-copy (the PID now names another process)")}
	}
	// The frozen round reopened the tracker's pagemap (or found the
	// process exec'd: lost). The written pages of each mapping still
	// tracked since the rounds:
	dirty := map[int][]memRun{}
	var cand []int
	for vi, v := range p.VMAs {
		if !c.lost && trackable(v) && c.covers(v.Start, v.End) {
			cand = append(cand, vi)
		}
	}
	if c.tracker.SoftDirty() {
		// One look for all: each look clears the bits of the whole process.
		var ranges []mem.Range
		for _, vi := range cand {
			ranges = append(ranges, mem.Range{Start: p.VMAs[vi].Start, End: p.VMAs[vi].End})
			dirty[vi] = nil
		}
		k := 0
		err := c.tracker.Written(ranges, chunkPages, func(w mem.Range) error {
			for k < len(cand) && p.VMAs[cand[k]].End <= w.Start {
				k++
			}
			if k == len(cand) {
				return fmt.Errorf("internal: written pages at %#x outside the mappings looked at", w.Start)
			}
			dirty[cand[k]] = append(dirty[cand[k]], memRun{Range: w, resend: true})
			return nil
		})
		if err != nil {
			return err
		}
	} else {
		for _, vi := range cand {
			v := p.VMAs[vi]
			var runs []memRun
			err := c.tracker.Written([]mem.Range{{Start: v.Start, End: v.End}}, chunkPages, func(w mem.Range) error {
				runs = append(runs, memRun{Range: w, resend: true})
				return nil
			})
			if err == nil { // else not tracked after all: copied whole
				dirty[vi] = runs
			}
		}
	}
	var runs []memRun
	var pm *mem.Pagemap
	defer func() {
		if pm != nil {
			pm.Close()
		}
	}()
	i := 0 // d.runs are in address order, like p.VMAs
	for vi := range p.VMAs {
		v := &p.VMAs[vi]
		var own []memRun
		for i < len(d.runs) && d.runs[i].Start < v.End {
			own = append(own, d.runs[i])
			i++
		}
		w, ok := dirty[vi]
		if !ok && d.later != nil && d.later(*v) {
			// Left for the tracker, which lost it: copied whole after all.
			if pm == nil {
				if pm, err = mem.OpenPagemap(d.pid); err != nil {
					return err
				}
			}
			if own, err = scanVMA(pm, v); err != nil {
				return &MappingError{PID: d.pid, Start: v.Start, End: v.End, Path: v.Name, Op: "scan pagemap", Err: err}
			}
		}
		if !ok {
			runs = append(runs, own...)
			continue
		}
		var pages uint64
		for _, r := range w {
			pages += r.Len() / mem.PageSize
		}
		v.PreCopied, v.Pages = true, pages
		res.FinalBytes += int64(pages * mem.PageSize)
		runs = append(runs, w...)
	}
	d.runs = append(runs, d.runs[i:]...)
	return nil
}

func (c *procCopy) covers(start, end uint64) bool {
	for _, r := range c.ranges {
		if r.Start <= start && end <= r.End {
			return true
		}
	}
	return false
}

// close ends the tracking: the processes' pages lose their write
// protection.
func (pc *preCopy) close() {
	if pc.w != nil {
		pc.w.Abort() // nothing after a successful Close; else no trailer
	}
	for _, c := range pc.procs {
		c.close()
	}
}

func (c *procCopy) close() {
	if c.tracker != nil {
		_ = c.tracker.Close()
		c.tracker = nil
	}
}

// processStart is the start time of pid (field 22 of /proc/PID/stat).
func processStart(fs proc.FS, pid int) (uint64, error) {
	b, err := fs.Read(pid, "stat")
	if err != nil {
		return 0, &ProcessError{PID: pid, Err: ErrNoProcess}
	}
	st, err := proc.ParseStat(b)
	if err != nil {
		return 0, err
	}
	return st.StartTime, nil
}
