package ptrace

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func ptrace(req int, tid int, addr, data uintptr) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// Seize attaches to tid without stopping it (PTRACE_SEIZE with options).
// Precondition: called on the tracer thread.
func Seize(tid int, options int) error {
	if err := ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(options)); err != nil {
		return &Error{Op: "PTRACE_SEIZE", TID: tid, Err: err}
	}
	return nil
}

// GetRegSet reads one register set (NT_PRSTATUS, NT_X86_XSTATE, ...) into buf
// and returns the part the kernel filled.
// Precondition: called on the tracer thread.
func GetRegSet(tid int, nt int, buf []byte) ([]byte, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(unix.PTRACE_GETREGSET, tid, uintptr(nt), uintptr(unsafe.Pointer(&iov))); err != nil {
		return nil, &Error{Op: fmt.Sprintf("PTRACE_GETREGSET(%#x)", nt), TID: tid, Err: err}
	}
	return buf[:iov.Len], nil
}

// SetRegSet writes one register set.
// Precondition: called on the tracer thread.
func SetRegSet(tid int, nt int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(unix.PTRACE_SETREGSET, tid, uintptr(nt), uintptr(unsafe.Pointer(&iov))); err != nil {
		return &Error{Op: fmt.Sprintf("PTRACE_SETREGSET(%#x)", nt), TID: tid, Err: err}
	}
	return nil
}

// GetSigMask returns the blocked-signal mask of tid.
// Precondition: called on the tracer thread.
func GetSigMask(tid int) (uint64, error) {
	var m uint64
	if err := ptrace(unix.PTRACE_GETSIGMASK, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, &Error{Op: "PTRACE_GETSIGMASK", TID: tid, Err: err}
	}
	return m, nil
}

// SetSigMask sets the blocked-signal mask of tid.
// Precondition: called on the tracer thread.
func SetSigMask(tid int, m uint64) error {
	if err := ptrace(unix.PTRACE_SETSIGMASK, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return &Error{Op: "PTRACE_SETSIGMASK", TID: tid, Err: err}
	}
	return nil
}

// SigInfoSize is sizeof(siginfo_t).
const SigInfoSize = 128

// PTRACE_PEEKSIGINFO_SHARED from include/uapi/linux/ptrace.h.
const peekSigInfoShared = 1

// PeekSigInfo returns the queued siginfos of tid's private queue, or of the
// process-wide queue when shared is set, without dequeuing them.
// Precondition: called on the tracer thread.
func PeekSigInfo(tid int, shared bool) ([][SigInfoSize]byte, error) {
	var out [][SigInfoSize]byte
	var buf [32][SigInfoSize]byte
	for {
		args := struct {
			Off   uint64
			Flags uint32
			Nr    int32
		}{Off: uint64(len(out)), Nr: int32(len(buf))}
		if shared {
			args.Flags = peekSigInfoShared
		}
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKSIGINFO, uintptr(tid),
			uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil, &Error{Op: "PTRACE_PEEKSIGINFO", TID: tid, Err: e}
		}
		out = append(out, buf[:n]...)
		if int(n) < len(buf) {
			return out, nil
		}
	}
}

// RseqConfig mirrors struct ptrace_rseq_configuration.
type RseqConfig struct {
	Ptr   uint64 `json:"ptr"`
	Len   uint32 `json:"len"`
	Flags uint32 `json:"flags"`
	Sig   uint32 `json:"sig"`
}

// GetRseq returns tid's rseq registration (Ptr 0 when none).
// Precondition: called on the tracer thread.
func GetRseq(tid int) (RseqConfig, error) {
	var raw struct {
		Ptr   uint64
		Len   uint32
		Flags uint32
		Sig   uint32
		_     uint32
	}
	if err := ptrace(unix.PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(raw), uintptr(unsafe.Pointer(&raw))); err != nil {
		return RseqConfig{}, &Error{Op: "PTRACE_GET_RSEQ_CONFIGURATION", TID: tid, Err: err}
	}
	return RseqConfig{Ptr: raw.Ptr, Len: raw.Len, Flags: raw.Flags, Sig: raw.Sig}, nil
}

// Wait waits for a state change of tid (wait4 with __WALL).
//
// A thread group leader that exits is reported only once its other
// threads are reaped, and those we trace are ours to reap, which the
// tracer thread, blocked here, cannot do: a process killed while we wait
// for its leader (under an injected syscall) would hang the wait. So a
// wait that blocks has another thread reap, every 20 ms, the threads of
// tid's group that exited (ReapExited: their stops stay to be reported).
// Precondition: called on the tracer thread.
func Wait(tid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	if ws, ok, err := Poll(tid); err != nil || ok {
		return ws, err
	}
	defer reapGroup(tid)()
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, &Error{Op: "wait4", TID: tid, Err: err}
		}
		return ws, nil
	}
}

// Poll is Wait without waiting: ok is false when tid has nothing to
// report yet.
// Precondition: called on the tracer thread.
func Poll(tid int) (ws unix.WaitStatus, ok bool, err error) {
	for {
		pid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, false, &Error{Op: "wait4", TID: tid, Err: err}
		}
		return ws, pid == tid, nil
	}
}

// reapGroup reaps, on another thread, the exited threads of tid's group
// other than tid, every 20 ms, until the function it returns is called.
func reapGroup(tid int) (stop func()) {
	return ReapEvery(20*time.Millisecond, func() []int {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", tid))
		var tids []int
		for _, e := range ents {
			if t, err := strconv.Atoi(e.Name()); err == nil && t != tid {
				tids = append(tids, t)
			}
		}
		return tids
	})
}

// ReapEvery reaps, on another thread, every period, the threads of tids()
// that exited (ReapExited), until stop is called; stop returns once it
// has ended.
func ReapEvery(period time.Duration, tids func() []int) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			for _, t := range tids() {
				ReapExited(t)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}

// ReapExited reaps tid if it has exited, and does nothing else: a stop
// stays to be reported. (A wait for a tracee reports its stops whatever
// the options say, so it looks first with WNOWAIT.) Unlike the rest of
// the package it may be called on any thread of the tracer's process (the
// kernel lets a thread wait for the tracees of the others).
func ReapExited(tid int) bool {
	const cldExited, cldKilled, cldDumped = 1, 2, 3
	var info unix.Siginfo
	opts := unix.WEXITED | unix.WNOHANG | unix.WALL
	if err := unix.Waitid(unix.P_PID, tid, &info, opts|unix.WNOWAIT, nil); err != nil || info.Signo == 0 {
		return false
	}
	switch info.Code {
	case cldExited, cldKilled, cldDumped:
		// A zombie stays one until reaped: this takes the same report.
		return unix.Waitid(unix.P_PID, tid, &info, opts, nil) == nil
	}
	return false
}

// GetRobustList returns the robust futex list head and length of tid.
func GetRobustList(tid int) (head uint64, size uint64, err error) {
	var h uintptr
	var l uintptr
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&h)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return 0, 0, &Error{Op: "get_robust_list", TID: tid, Err: e}
	}
	return uint64(h), uint64(l), nil
}
