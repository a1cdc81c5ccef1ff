package ckpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// Linux constants missing from x/sys.
const (
	prGetTidAddress = 40 // PR_GET_TID_ADDRESS, include/uapi/linux/prctl.h
	sigsetSize      = 8
)

// collectProcess reads all state of the frozen process.
// Precondition: called on the tracer thread, d.tasks frozen.
func (d *dumper) collectProcess() (*Process, error) {
	pid := d.pid
	read := func(name string) ([]byte, error) { return d.fs.Read(pid, name) }
	statB, err := read("stat")
	if err != nil {
		return nil, err
	}
	st, err := proc.ParseStat(statB)
	if err != nil {
		return nil, err
	}
	statusB, err := read("status")
	if err != nil {
		return nil, err
	}
	status, err := proc.ParseStatus(statusB)
	if err != nil {
		return nil, err
	}
	p := &Process{
		PID: pid, PPID: st.PPID, PGID: st.PGRP, SID: st.Session, Comm: st.Comm, Stopped: int(d.stopSig),
		CTTY: controllingTTY(&st), TPGID: st.TPGID,
		Umask: status.Umask,
		Creds: Creds{UID: status.UID, GID: status.GID, Groups: status.Groups,
			CapInh: status.CapInh, CapPrm: status.CapPrm, CapEff: status.CapEff,
			CapBnd: status.CapBnd, CapAmb: status.CapAmb, NoNewPrivs: status.NoNewPrivs},
		MM: MM{StartCode: st.StartCode, EndCode: st.EndCode, StartData: st.StartData,
			EndData: st.EndData, StartBrk: st.StartBrk, StartStack: st.StartStack,
			ArgStart: st.ArgStart, ArgEnd: st.ArgEnd, EnvStart: st.EnvStart, EnvEnd: st.EnvEnd},
	}
	if p.Exe, err = d.fs.Readlink(pid, "exe"); err != nil {
		return nil, err
	}
	if b, err := d.fs.Read(pid, "cgroup"); err == nil {
		p.Cgroup = readCgroup(b, cgroup2Mount())
	}
	p.Exe = strings.TrimSuffix(p.Exe, " (deleted)")
	p.ExeFile = fileID(p.Exe)
	if p.Cwd, err = d.fs.Readlink(pid, "cwd"); err != nil {
		return nil, err
	}
	var cwd unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/cwd", pid), &cwd) == nil {
		p.CwdID = &FileID{Path: p.Cwd, Dev: cwd.Dev, Ino: cwd.Ino}
	}
	if p.Root, err = d.fs.Readlink(pid, "root"); err != nil {
		return nil, err
	}
	if p.Root != "/" {
		return nil, &ProcessError{PID: pid, Err: fmt.Errorf("chroot %s: %w", p.Root, ErrUnsupported)}
	}
	if b, err := read("cmdline"); err == nil {
		p.Cmdline = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	}
	if b, err := read("auxv"); err == nil {
		aux, err := proc.ParseAuxv(b)
		if err != nil {
			return nil, err
		}
		for _, a := range aux {
			p.MM.Auxv = append(p.MM.Auxv, a.Type, a.Value)
		}
		p.MM.Auxv = append(p.MM.Auxv, 0, 0)
	}
	if b, err := read("personality"); err == nil {
		p.Personality, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
	}
	if b, err := read("oom_score_adj"); err == nil {
		p.OOMScoreAdj, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if p.Rlimits, err = d.rlimits(); err != nil {
		return nil, err
	}
	end := step(d.opts.Log, "dump: memory map")
	if err := d.collectMemory(p); err != nil {
		return nil, err
	}
	end()
	if err := d.collectFDs(p); err != nil {
		return nil, err
	}
	if shared, err := ptrace.PeekSigInfo(pid, true); err != nil {
		return nil, err
	} else {
		for _, si := range shared {
			p.SharedPending = append(p.SharedPending, SigInfo(si))
		}
	}
	for _, tid := range d.tids() {
		t, err := d.collectThread(tid)
		if err != nil {
			return nil, err
		}
		p.Threads = append(p.Threads, *t)
	}
	end = step(d.opts.Log, "dump: injected queries")
	if err := d.injectQueries(p); err != nil {
		return nil, err
	}
	end()
	return p, nil
}

// collectThread reads a thread's state from outside.
func (d *dumper) collectThread(tid int) (*Thread, error) {
	ft := d.tasks[tid]
	regs, err := ptrace.GetRegs(tid)
	if err != nil {
		return nil, err
	}
	ft.regs = regs
	if ft.mask, err = ptrace.GetSigMask(tid); err != nil {
		return nil, err
	}
	t := &Thread{TID: tid, SigMask: ft.mask}
	if t.RegSets, err = dumpRegSets(tid, regs); err != nil {
		return nil, &ProcessError{PID: d.pid, Err: err}
	}
	pend, err := ptrace.PeekSigInfo(tid, false)
	if err != nil {
		return nil, err
	}
	for _, si := range pend {
		t.Pending = append(t.Pending, SigInfo(si))
	}
	if t.Rseq, err = ptrace.GetRseq(tid); err != nil {
		return nil, err
	}
	if t.Seccomp, err = collectSeccomp(tid); err != nil {
		return nil, err
	}
	if t.RobustHead, t.RobustLen, err = ptrace.GetRobustList(tid); err != nil {
		return nil, err
	}
	if b, err := d.fs.ReadTask(d.pid, tid, "comm"); err == nil {
		t.Comm = strings.TrimSuffix(string(b), "\n")
	}
	if t.Sched, err = collectSched(tid); err != nil {
		return nil, err
	}
	return t, nil
}

// injector runs syscalls inside one frozen thread through a syscall
// instruction of the vDSO, with a small scratch area on the thread's stack
// below the red zone for results; the scratch bytes are put back afterwards.
type injector struct {
	d       *dumper
	t       *frozenTask
	ip      uint64
	scratch uint64
	saved   []byte
}

const scratchSize = 256

func (d *dumper) newInjector(tid int, ip uint64) (*injector, error) {
	t := d.tasks[tid]
	in := &injector{d: d, t: t, ip: ip}
	in.scratch = (t.regs.SP() - 1024) &^ 63
	in.saved = make([]byte, scratchSize)
	if err := mem.ReadRuns(d.pid, [][]byte{in.saved}, []mem.Range{{Start: in.scratch, End: in.scratch + scratchSize}}); err != nil {
		return nil, fmt.Errorf("thread %d: stack below sp is not usable for injection: %w", tid, err)
	}
	// Block every signal while injecting: a pending one would be delivered
	// instead of running our syscall.
	t.dirty = true
	if err := ptrace.SetSigMask(tid, ^uint64(0)); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *injector) call(nr uint64, args ...uint64) (uint64, error) {
	return ptrace.InjectSyscallStop(in.t.tid, &in.t.regs, in.ip, nr, args...)
}

func (in *injector) read(n int) ([]byte, error) {
	b := make([]byte, n)
	err := mem.ReadRuns(in.d.pid, [][]byte{b}, []mem.Range{{Start: in.scratch, End: in.scratch + uint64(n)}})
	return b, err
}

// finish puts back the scratch bytes, the mask and the registers.
func (in *injector) finish() error {
	if err := mem.WriteRuns(in.d.pid, [][]byte{in.saved}, []mem.Range{{Start: in.scratch, End: in.scratch + scratchSize}}); err != nil {
		return err
	}
	if err := ptrace.SetSigMask(in.t.tid, in.t.mask); err != nil {
		return err
	}
	if err := ptrace.Rearm(in.t.tid, &in.t.regs); err != nil {
		return err
	}
	in.t.dirty = false
	return nil
}

// injectQueries collects the state only the task itself can report.
func (d *dumper) injectQueries(p *Process) error {
	ip, err := d.findSyscallInsn(p)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	for i := range p.Threads {
		th := &p.Threads[i]
		in, err := d.newInjector(th.TID, ip)
		if err != nil {
			return err
		}
		if _, err := in.call(unix.SYS_SIGALTSTACK, 0, in.scratch); err != nil {
			return err
		}
		b, err := in.read(24)
		if err != nil {
			return err
		}
		th.AltStack = AltStack{SP: le.Uint64(b), Flags: int32(le.Uint32(b[8:])), Size: le.Uint64(b[16:])}
		if _, err := in.call(unix.SYS_PRCTL, prGetTidAddress, in.scratch); err != nil {
			return err
		}
		if b, err = in.read(8); err != nil {
			return err
		}
		th.ClearChildTID = le.Uint64(b)

		if th.TID == p.PID {
			if err := d.injectProcessQueries(p, in); err != nil {
				return err
			}
		}
		if err := in.finish(); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumper) injectProcessQueries(p *Process, in *injector) error {
	le := binary.LittleEndian
	sb, err := in.call(unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return fmt.Errorf("securebits: %w", err)
	}
	p.Creds.Securebits = int(sb)
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := in.call(unix.SYS_RT_SIGACTION, uint64(sig), 0, in.scratch, sigsetSize); err != nil {
			return err
		}
		b, err := in.read(32)
		if err != nil {
			return err
		}
		a := SigAction{Sig: sig, Handler: le.Uint64(b), Flags: le.Uint64(b[8:]), Restorer: le.Uint64(b[16:]), Mask: le.Uint64(b[24:])}
		if a.Handler != 0 || a.Flags != 0 || a.Mask != 0 {
			p.SigActions = append(p.SigActions, a)
		}
	}
	brk, err := in.call(unix.SYS_BRK, 0)
	if err != nil {
		return err
	}
	p.MM.Brk = brk
	for which := 0; which < 3; which++ {
		if _, err := in.call(unix.SYS_GETITIMER, uint64(which), in.scratch); err != nil {
			return err
		}
		b, err := in.read(32)
		if err != nil {
			return err
		}
		p.ITimers[which].IntervalUS, p.ITimers[which].ValueUS = decodeTimerPair(b, 1e6)
	}
	tb, err := d.fs.Read(p.PID, "timers")
	if err != nil {
		return err
	}
	timers, err := proc.ParseTimers(tb)
	if err != nil {
		return err
	}
	for _, t := range timers {
		pt := PosixTimer{ID: t.ID, ClockID: t.ClockID, Signal: t.Signal, SigevValue: t.SigevValue, Notify: t.Notify, NotifyTID: t.NotifyTID}
		if _, err := in.call(unix.SYS_TIMER_GETTIME, uint64(t.ID), in.scratch); err != nil {
			return err
		}
		b, err := in.read(32)
		if err != nil {
			return err
		}
		pt.IntervalNS, pt.ValueNS = decodeTimerPair(b, 1e9)
		p.Timers = append(p.Timers, pt)
	}
	return d.injectTaskFlags(p, in)
}

// findSyscallInsn returns the address of a syscall instruction in the
// process's vDSO (the vDSO's fallback paths contain several).
func (d *dumper) findSyscallInsn(p *Process) (uint64, error) {
	ip, ok, err := vdsoSyscall(d.pid, p.VMAs)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, &ProcessError{PID: d.pid, Err: fmt.Errorf("no vDSO with a syscall instruction: %w", ErrUnsupported)}
	}
	return ip, nil
}

// vdsoSyscall finds a syscall instruction in the [vdso] of pid (as vmas
// place it); ok is false when there is none.
func vdsoSyscall(pid int, vmas []VMA) (ip uint64, ok bool, err error) {
	for _, v := range vmas {
		if v.Name != "[vdso]" {
			continue
		}
		b := make([]byte, v.End-v.Start)
		if err := mem.ReadRuns(pid, [][]byte{b}, []mem.Range{{Start: v.Start, End: v.End}}); err != nil {
			return 0, false, err
		}
		if i := ptrace.FindSyscallInsn(b); i >= 0 {
			return v.Start + uint64(i), true, nil
		}
	}
	return 0, false, nil
}

// rlimits reads the resource limits with prlimit, or from /proc/PID/limits
// where prlimit is not permitted (another user's process without
// CAP_SYS_RESOURCE). The file lists the limits in RLIMIT_* order.
func (d *dumper) rlimits() ([]Rlimit, error) {
	const nlimits = 16 // RLIM_NLIMITS
	var out []Rlimit
	for res := 0; res < nlimits; res++ {
		var lim unix.Rlimit
		err := unix.Prlimit(d.pid, res, nil, &lim)
		if errors.Is(err, unix.EPERM) {
			return d.rlimitsFromProc(nlimits)
		}
		if err != nil {
			return nil, fmt.Errorf("prlimit pid %d resource %d: %w", d.pid, res, err)
		}
		out = append(out, Rlimit{Resource: res, Cur: lim.Cur, Max: lim.Max})
	}
	return out, nil
}

func (d *dumper) rlimitsFromProc(n int) ([]Rlimit, error) {
	b, err := d.fs.Read(d.pid, "limits")
	if err != nil {
		return nil, err
	}
	lims, err := proc.ParseLimits(b)
	if err != nil {
		return nil, err
	}
	if len(lims) != n {
		return nil, fmt.Errorf("pid %d: /proc limits lists %d limits, want %d", d.pid, len(lims), n)
	}
	out := make([]Rlimit, n)
	for i, l := range lims {
		out[i] = Rlimit{Resource: i, Cur: l.Soft, Max: l.Hard}
	}
	return out, nil
}

// readClock reads CLOCK_MONOTONIC and CLOCK_BOOTTIME as pid sees them:
// ours, plus its time namespace's offsets when it lives in another one.
func readClock(pid int) *Clock {
	var mono, boot unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil || unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil {
		return nil
	}
	c := &Clock{Monotonic: mono.Nano(), Boottime: boot.Nano()}
	var ours, theirs unix.Stat_t
	if unix.Stat("/proc/self/ns/time", &ours) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/time", pid), &theirs) != nil ||
		ours.Ino == theirs.Ino {
		return c
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid))
	if err != nil {
		return c
	}
	for _, line := range strings.Split(string(b), "\n") {
		var name string
		var sec, nsec int64
		if n, _ := fmt.Sscanf(line, "%s %d %d", &name, &sec, &nsec); n != 3 {
			continue
		}
		switch name {
		case "monotonic":
			c.Monotonic += sec*1e9 + nsec
		case "boottime":
			c.Boottime += sec*1e9 + nsec
		}
	}
	return c
}
