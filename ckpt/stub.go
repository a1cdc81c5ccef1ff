package ckpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// A stub is a fresh exec of relocate's own binary, stopped by
// PTRACE_TRACEME at its first instruction: no Go runtime runs in it. The
// restorer cleans its address space down to one code page and the vDSO,
// then clones the restored process out of it with the original PID.

const (
	codeSize    = mem.PageSize
	scratchOff  = 256 // scratch area inside the code page
	scratchLen  = codeSize - scratchOff
	restoreOpts = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK |
		unix.PTRACE_O_EXITKILL | unix.PTRACE_O_SUSPEND_SECCOMP // filters restored early stop no injected syscall
)

// stubPidfd is where the stub and the tasks made from it hold a pidfd of
// relocate.
const stubPidfd = 3

// remote is a stopped task that runs syscalls from the code page.
type remote struct {
	tid  int
	pid  int // thread group
	code uint64
}

func (r *remote) call(nr uint64, args ...uint64) (uint64, error) {
	return ptrace.InjectTrap(r.tid, r.code, nr, args...)
}

func (r *remote) scratch() uint64 { return r.code + scratchOff }

// poke writes b at offset off of the scratch area.
func (r *remote) poke(off int, b []byte) (uint64, error) {
	if off+len(b) > scratchLen {
		return 0, fmt.Errorf("internal: %d bytes do not fit the scratch area", off+len(b))
	}
	addr := r.scratch() + uint64(off)
	return addr, mem.WriteRuns(r.pid, [][]byte{b}, []mem.Range{{Start: addr, End: addr + uint64(len(b))}})
}

// pokeCode writes instructions at offset off of the code page. Through
// ptrace, not process_vm_writev: the kernel then keeps the instruction
// cache coherent (arm64 does not do that for plain data writes).
func (r *remote) pokeCode(off int, code []byte) error {
	if off%8 != 0 || off+len(code) > codeSize {
		return fmt.Errorf("internal: code at offset %d", off)
	}
	b := make([]byte, (len(code)+7)&^7)
	copy(b, code)
	return ptrace.PokeData(r.tid, uintptr(r.code)+uintptr(off), b)
}

func (r *remote) pokeString(off int, s string) (uint64, error) {
	return r.poke(off, append([]byte(s), 0))
}

// startStub forks and execs the stub and takes it to a state where it only
// has its code page, at an address neither the image (used) nor the stub
// itself maps, and its vDSO.
// Precondition: called on the tracer thread.
func startStub(used []mem.Range) (*remote, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	// A pidfd of relocate at stubPidfd, inherited by every task made from
	// the stub: they pull relocate's descriptors with pidfd_getfd, even
	// from a new PID namespace where relocate's PID means nothing.
	self, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(self)
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"relocate-restore-stub"}, &syscall.ProcAttr{
		Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd(), uintptr(self)},
		Sys:   &syscall.SysProcAttr{Ptrace: true, Setpgid: true},
	})
	if err != nil {
		return nil, fmt.Errorf("start restore stub: %w", err)
	}
	st := &remote{tid: pid, pid: pid}
	if err := st.prepare(used); err != nil {
		st.kill()
		return nil, err
	}
	return st, nil
}

func (st *remote) prepare(used []mem.Range) error {
	s, err := ptrace.WaitStop(st.tid)
	if err != nil {
		return err
	}
	if s.Status.StopSignal() != unix.SIGTRAP {
		return fmt.Errorf("restore stub: unexpected %s", s)
	}
	// The stub's own binary may lie low too (Go links arm64 programs at
	// 0x10000): the code page keeps clear of it as well.
	own, err := stubMaps(st.pid)
	if err != nil {
		return err
	}
	avoid := slices.Clone(used)
	for _, m := range own {
		avoid = append(avoid, mem.Range{Start: m.Start, End: m.End})
	}
	code, err := findGap(avoid, codeSize, 0x100000)
	if err != nil {
		return err
	}
	if err := ptrace.SetOptions(st.tid, restoreOpts); err != nil {
		return err
	}
	regs, err := ptrace.GetRegs(st.tid)
	if err != nil {
		return err
	}
	// Bootstrap: SyscallInsn over the entry point, to map the code page.
	entry := regs.PC()
	word := make([]byte, 8)
	if err := ptrace.PeekData(st.tid, uintptr(entry), word); err != nil {
		return err
	}
	copy(word, ptrace.SyscallInsn)
	if err := ptrace.PokeData(st.tid, uintptr(entry), word); err != nil {
		return err
	}
	got, err := ptrace.InjectTrap(st.tid, entry, unix.SYS_MMAP, code, codeSize,
		unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("map code page at %#x: %w", code, err)
	}
	if got != code {
		return fmt.Errorf("code page mapped at %#x, not %#x", got, code)
	}
	st.code = code
	if err := st.pokeCode(0, ptrace.SyscallInsn); err != nil {
		return err
	}
	maps, err := stubMaps(st.pid)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.Start == code || isVDSO(m.Path) || m.Path == "[vsyscall]" {
			continue
		}
		if _, err := st.call(unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
			return fmt.Errorf("clean stub: %w", err)
		}
	}
	return nil
}

func isVDSO(name string) bool { return name == "[vdso]" || name == "[vvar]" || name == "[vvar_vclock]" }

func stubMaps(pid int) ([]proc.Mapping, error) {
	b, err := proc.Default().Read(pid, "maps")
	if err != nil {
		return nil, err
	}
	return proc.ParseMaps(b)
}

// kill ends a stub or a half-restored process.
func (st *remote) kill() {
	_ = unix.Kill(st.tid, unix.SIGKILL)
	waitGone(st.tid)
}

// moveVDSO moves the stub's vDSO block ([vvar], [vvar_vclock], [vdso], in
// the kernel's order) so that each part lands where the image had it. All
// parts move by the same delta: the vDSO finds its data pages relative to
// itself.
func (st *remote) moveVDSO(want []VMA, avoid []mem.Range) error {
	maps, err := stubMaps(st.pid)
	if err != nil {
		return err
	}
	var have []proc.Mapping
	for _, m := range maps {
		if isVDSO(m.Path) {
			have = append(have, m)
		}
	}
	var wantV []VMA
	for _, v := range want {
		if v.Kind == VMAVDSO {
			wantV = append(wantV, v)
		}
	}
	if len(wantV) == 0 {
		return nil // the process had unmapped its vDSO; leave ours where it is
	}
	layout := func(names []string, sizes []uint64) string { return fmt.Sprint(names, sizes) }
	var hn, wn []string
	var hs, ws []uint64
	for _, m := range have {
		hn, hs = append(hn, m.Path), append(hs, m.End-m.Start)
	}
	for _, v := range wantV {
		wn, ws = append(wn, v.Name), append(ws, v.End-v.Start)
	}
	if layout(hn, hs) != layout(wn, ws) {
		return fmt.Errorf("the image's vDSO layout %s differs from this kernel's %s (a different kernel): %w",
			layout(wn, ws), layout(hn, hs), ErrUnsupported)
	}
	if have[0].Start == wantV[0].Start {
		return nil
	}
	span := have[len(have)-1].End - have[0].Start
	// Go through a free spot first, so source and destination never overlap.
	cur := make([]mem.Range, 0, len(avoid)+len(have)+1)
	cur = append(cur, avoid...)
	for _, m := range have {
		cur = append(cur, mem.Range{Start: m.Start, End: m.End})
	}
	cur = append(cur, mem.Range{Start: st.code, End: st.code + codeSize})
	tmp, err := findGap(cur, span, 0x10000000)
	if err != nil {
		return err
	}
	step := func(from, to uint64) error {
		for _, m := range have {
			if m.Start < from {
				return errors.New("internal: vDSO parts out of order")
			}
			off := m.Start - from
			if _, err := st.call(unix.SYS_MREMAP, m.Start, m.End-m.Start, m.End-m.Start,
				unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to+off); err != nil {
				return fmt.Errorf("move %s: %w", m.Path, err)
			}
		}
		for i := range have {
			d := have[i].End - have[i].Start
			have[i].Start = have[i].Start - from + to
			have[i].End = have[i].Start + d
		}
		return nil
	}
	if err := step(have[0].Start, tmp); err != nil {
		return err
	}
	return step(tmp, wantV[0].Start)
}

// findGap returns the lowest address >= floor where size bytes fit between
// the used ranges.
func findGap(used []mem.Range, size, floor uint64) (uint64, error) {
	u := slices.Clone(used)
	slices.SortFunc(u, func(a, b mem.Range) int {
		if a.Start < b.Start {
			return -1
		}
		if a.Start > b.Start {
			return 1
		}
		return 0
	})
	const top = 0x7ff000000000
	addr := floor
	for _, r := range u {
		if r.End <= addr {
			continue
		}
		if r.Start >= addr+size {
			break
		}
		addr = (r.End + mem.PageSize - 1) &^ (mem.PageSize - 1)
	}
	if addr+size > top {
		return 0, errors.New("no free address range for the restore code page")
	}
	return addr, nil
}

// cloneArgs encodes struct clone_args (CLONE_ARGS_SIZE_VER2 bytes).
func cloneArgs(flags, exitSignal, setTid uint64) []byte {
	b := make([]byte, unix.CLONE_ARGS_SIZE_VER2)
	le := binary.LittleEndian
	le.PutUint64(b[0:], flags)
	le.PutUint64(b[32:], exitSignal)
	le.PutUint64(b[64:], setTid)
	le.PutUint64(b[72:], 1) // set_tid_size
	return b
}

// clone runs clone3 in r with set_tid = want and returns the new task,
// stopped at its first stop. A process clone with CLONE_PARENT passes
// exitSignal 0 and inherits the stub's (SIGCHLD).
func (r *remote) clone(flags, exitSignal uint64, want int) (*remote, error) {
	tidArr := make([]byte, 8)
	binary.LittleEndian.PutUint32(tidArr, uint32(want))
	tidAddr, err := r.poke(128, tidArr)
	if err != nil {
		return nil, err
	}
	argAddr, err := r.poke(0, cloneArgs(flags, exitSignal, tidAddr))
	if err != nil {
		return nil, err
	}
	if err := ptrace.StartTrap(r.tid, r.code, unix.SYS_CLONE3, argAddr, unix.CLONE_ARGS_SIZE_VER2); err != nil {
		return nil, err
	}
	s, err := ptrace.WaitStop(r.tid)
	if err != nil {
		return nil, err
	}
	ev := s.Event()
	if ev != unix.PTRACE_EVENT_FORK && ev != unix.PTRACE_EVENT_CLONE {
		// No event: clone3 failed and the task went on to the int3.
		if s.Status.StopSignal() == unix.SIGTRAP && ev == 0 {
			ret, err := ptrace.TrapResult(r.tid)
			if err != nil {
				return nil, err
			}
			if e := unix.Errno(-int64(ret)); int64(ret) < 0 {
				if e == unix.EEXIST {
					return nil, fmt.Errorf("pid %d %w", want, ErrPIDTaken)
				}
				return nil, fmt.Errorf("clone3 with pid %d: %w", want, e)
			}
		}
		return nil, fmt.Errorf("clone3: unexpected %s", s)
	}
	msg, err := ptrace.EventMsg(r.tid)
	if err != nil {
		return nil, err
	}
	if err := ptrace.Cont(r.tid, 0); err != nil {
		return nil, err
	}
	if _, err := ptrace.FinishTrap(r.tid, unix.SYS_CLONE3); err != nil {
		return nil, err
	}
	child := &remote{tid: int(msg), pid: r.pid, code: r.code}
	if flags&unix.CLONE_THREAD == 0 {
		child.pid = child.tid
	}
	if _, err := ptrace.WaitStop(child.tid); err != nil {
		return nil, err
	}
	// In the child's own PID namespace it has the wanted ID; seen from
	// here (restore --pidns) it may have another.
	if got := innerPID(child.tid); got != want {
		return nil, fmt.Errorf("clone3 gave tid %d, wanted %d", got, want)
	}
	return child, nil
}

// innerPID is tid's ID in its innermost PID namespace (NSpid's last
// field), or tid when that cannot be read.
func innerPID(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return tid
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			if n, err := strconv.Atoi(f[len(f)-1]); err == nil {
				return n
			}
		}
	}
	return tid
}

// startInit makes the init of a new PID namespace (restore --pidns): a
// child of relocate cloned from the stub with CLONE_NEWPID, so PID 1
// there, which the tree's root is then cloned from. It stays stopped
// until runInit.
func (st *remote) startInit() (*remote, error) {
	return st.clone(unix.CLONE_NEWPID|unix.CLONE_PARENT, 0, 1)
}

// killInit ends the namespace's init, and with it whatever runs in its
// namespace, and reaps it (relocate's child, traced or not).
func (r *remote) killInit() {
	_ = unix.Kill(r.tid, unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(r.tid, &ws, unix.WALL, nil)
}

// runInit lets the namespace's init go: it runs initLoop from the code
// page, reaping, until its namespace has no process left.
func (r *remote) runInit() error {
	if _, err := r.call(unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>1, 0); err != nil {
		return err
	}
	const initOff = 1024
	if err := r.pokeCode(initOff, initLoop); err != nil {
		return err
	}
	regs, err := ptrace.GetRegs(r.tid)
	if err != nil {
		return err
	}
	regs.SetPC(r.code + initOff)
	if err := ptrace.SetRegs(r.tid, &regs); err != nil {
		return err
	}
	return ptrace.Detach(r.tid, 0)
}

// enterTimeNS gives the stub's future children a new time namespace whose
// CLOCK_MONOTONIC and CLOCK_BOOTTIME read on from c: the offsets are set
// before any task enters it (the kernel refuses them afterwards).
func (r *remote) enterTimeNS(c *Clock) error {
	if _, err := r.call(unix.SYS_UNSHARE, unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("new time namespace: %w", err)
	}
	var mono, boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return err
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return err
	}
	offsets := timensOffset("monotonic", c.Monotonic-mono.Nano()) + timensOffset("boottime", c.Boottime-boot.Nano())
	path := fmt.Sprintf("/proc/%d/timens_offsets", r.pid)
	if err := os.WriteFile(path, []byte(offsets), 0); err != nil {
		return fmt.Errorf("time namespace offsets: %w", err)
	}
	return nil
}

// joinTimeNS makes the stub enter the time namespace enterTimeNS made for
// its children: a child that shares its address space (CLONE_VM) shares
// its time namespace, whatever the one for children.
func (r *remote) joinTimeNS() error {
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/time_for_children", r.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("enter the time namespace: %w", err)
	}
	defer unix.Close(ns)
	fd, err := r.call(unix.SYS_PIDFD_GETFD, stubPidfd, uint64(ns), 0)
	if err != nil {
		return fmt.Errorf("enter the time namespace: %w", err)
	}
	_, err = r.call(unix.SYS_SETNS, fd, unix.CLONE_NEWTIME)
	_, cerr := r.call(unix.SYS_CLOSE, fd)
	if err = errors.Join(err, cerr); err != nil {
		return fmt.Errorf("enter the time namespace: %w", err)
	}
	return nil
}

// timensOffset formats one line of timens_offsets: seconds may be
// negative, nanoseconds may not.
func timensOffset(clock string, ns int64) string {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return fmt.Sprintf("%s %d %d\n", clock, sec, nsec)
}
