package ckpt

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	LeaveRunning bool      // resume the process after the image is written
	ShellJob     bool      // accept terminal descriptors (restored on the restorer's terminal)
	Progress     *Progress // may be nil
	Producer     string    // version string stored in the image header
	Proc         proc.FS   // zero: the real /proc
}

// DumpResult summarises a checkpoint.
type DumpResult struct {
	PID         int           `json:"pid"`
	Threads     int           `json:"threads"`
	BytesRaw    int64         `json:"bytes_raw"`
	BytesStored int64         `json:"bytes_stored"`
	Pages       int64         `json:"pages"`
	ZeroPages   int64         `json:"zero_pages"`
	Frozen      time.Duration `json:"-"`
	FrozenMS    int64         `json:"frozen_ms"`
	Killed      bool          `json:"killed"`
	NetLocked   bool          `json:"net_locked,omitempty"` // connections stay locked until restore
}

type dumper struct {
	pid   int
	fs    proc.FS
	opts  DumpOptions
	tasks map[int]*frozenTask
	files *fileTable
	runs  []memRun
	// sharedFiles are MAP_SHARED memfd/deleted-file mappings, checked
	// against open descriptors.
	sharedFiles []sharedMapping
	tcp         []tcpSocket
	lock        *sock.Lock
}

// Dump checkpoints pid (every thread) into out. Unless opts.LeaveRunning,
// the process is killed once the image is completely written; on any error
// it is resumed exactly as it was.
func Dump(ctx context.Context, pid int, out io.Writer, opts DumpOptions) (*DumpResult, error) {
	d := &dumper{pid: pid, fs: opts.Proc, opts: opts, tasks: map[int]*frozenTask{}}
	if d.fs.Root == "" {
		d.fs = proc.Default()
	}
	if err := d.precheck(); err != nil {
		return nil, err
	}
	tr := ptrace.NewTracer()
	defer tr.Close()

	var res *DumpResult
	frozenAt := time.Now()
	err := tr.Do(func() (err error) {
		opts.Progress.set("freezing", 0)
		defer func() {
			if err != nil {
				err = errors.Join(err, d.releaseNet(true), d.release())
			}
		}()
		if err := d.freeze(); err != nil {
			return err
		}
		frozenAt = time.Now()
		res, err = d.dumpFrozen(ctx, out)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.Frozen = time.Since(frozenAt)
	res.FrozenMS = res.Frozen.Milliseconds()
	return res, nil
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
		return &ProcessError{PID: d.pid, Err: errors.New("is a zombie (exited, not yet reaped)")}
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
	if status.Seccomp == 2 {
		return &ProcessError{PID: d.pid, Err: fmt.Errorf("seccomp filters: %w", ErrUnsupported)}
	}
	if kids, err := d.fs.Children(d.pid); err == nil && len(kids) > 0 {
		return &ProcessError{PID: d.pid, Err: fmt.Errorf("has child processes (pid %d): process trees are %w", kids[0], ErrUnsupported)}
	}
	for _, ns := range []string{"pid", "mnt", "net", "user", "ipc", "uts"} {
		mine, err1 := os.Readlink("/proc/self/ns/" + ns)
		theirs, err2 := d.fs.Readlink(d.pid, "ns/"+ns)
		if err1 == nil && err2 == nil && mine != theirs {
			return &ProcessError{PID: d.pid, Err: fmt.Errorf("runs in another %s namespace (%s): %w", ns, theirs, ErrUnsupported)}
		}
	}
	return nil
}

// dumpFrozen collects everything and writes the image. The process is
// frozen. Precondition: called on the tracer thread.
func (d *dumper) dumpFrozen(ctx context.Context, out io.Writer) (*DumpResult, error) {
	p, err := d.collectProcess()
	if err != nil {
		return nil, err
	}
	cp := &Checkpoint{Root: d.pid, Processes: []Process{*p}, Files: d.files.files}
	if d.lock != nil {
		cp.NetLock = lockName(d.pid)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	w, err := image.NewWriter(out, d.header(p), image.WriterOptions{})
	if err != nil {
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
	if err := d.writeMemory(ctx, w); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := d.files.writeBlobs(w); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	ok = true
	if f, isFile := out.(*os.File); isFile {
		if err := f.Sync(); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("sync image: %w", err)
		}
	}
	st := w.Stats()
	res := &DumpResult{PID: d.pid, Threads: len(p.Threads), BytesRaw: st.RawBytes,
		BytesStored: st.StoredBytes, Pages: st.Pages, ZeroPages: st.ZeroPages}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d.opts.LeaveRunning {
		return res, errors.Join(d.releaseNet(true), d.release())
	}
	res.Killed = true
	if err := d.kill(); err != nil {
		return res, err
	}
	res.NetLocked = d.lock != nil
	return res, d.releaseNet(false)
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
		h.CPU.XCR0, h.CPU.XSaveSize = xsaveInfo(p.Threads[0].XState)
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
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			return strings.Fields(v)
		}
	}
	return nil
}
