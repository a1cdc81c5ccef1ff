package ckpt

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/ptrace"
)

// Linux constants missing from x/sys.
const (
	prTimerCreateRestoreIDs = 77 // PR_TIMER_CREATE_RESTORE_IDS, include/uapi/linux/prctl.h (6.15+)
	sigevSignal             = 0  // SIGEV_SIGNAL
	sigevNone               = 1  // SIGEV_NONE
	sigevThreadID           = 4  // SIGEV_THREAD_ID
	ssOnStack               = 1  // SS_ONSTACK
	ssDisable               = 2  // SS_DISABLE
)

// restoreTasks restores per-thread and per-process state by injection.
func (rs *restorer) restoreTasks(L *remote) error {
	p := rs.p
	le := binary.LittleEndian
	for i, t := range p.Threads {
		r := rs.threads[i]
		if _, err := r.call(unix.SYS_SET_TID_ADDRESS, t.ClearChildTID); err != nil {
			return err
		}
		if t.RobustHead != 0 {
			if _, err := r.call(unix.SYS_SET_ROBUST_LIST, t.RobustHead, t.RobustLen); err != nil {
				return err
			}
		}
		if t.Rseq.Ptr != 0 {
			if _, err := r.call(unix.SYS_RSEQ, t.Rseq.Ptr, uint64(t.Rseq.Len), 0, uint64(t.Rseq.Sig)); err != nil {
				return fmt.Errorf("thread %d: rseq: %w", t.TID, err)
			}
		}
		if t.AltStack.Flags&ssDisable == 0 {
			b := make([]byte, 24)
			le.PutUint64(b, t.AltStack.SP)
			le.PutUint32(b[8:], uint32(t.AltStack.Flags&^ssOnStack))
			le.PutUint64(b[16:], t.AltStack.Size)
			addr, err := r.poke(0, b)
			if err != nil {
				return err
			}
			if _, err := r.call(unix.SYS_SIGALTSTACK, addr, 0); err != nil {
				return fmt.Errorf("thread %d: sigaltstack: %w", t.TID, err)
			}
		}
		if t.Comm != "" {
			name := t.Comm
			if len(name) > 15 { // TASK_COMM_LEN - 1
				name = name[:15]
			}
			addr, err := r.pokeString(0, name)
			if err != nil {
				return err
			}
			if _, err := r.call(unix.SYS_PRCTL, unix.PR_SET_NAME, addr); err != nil {
				return fmt.Errorf("thread %d: set name: %w", t.TID, err)
			}
		}
	}
	for _, a := range p.SigActions {
		b := make([]byte, 32)
		le.PutUint64(b, a.Handler)
		le.PutUint64(b[8:], a.Flags)
		le.PutUint64(b[16:], a.Restorer)
		le.PutUint64(b[24:], a.Mask)
		addr, err := L.poke(0, b)
		if err != nil {
			return err
		}
		if _, err := L.call(unix.SYS_RT_SIGACTION, uint64(a.Sig), addr, 0, sigsetSize); err != nil {
			return fmt.Errorf("sigaction %d: %w", a.Sig, err)
		}
	}
	if _, err := L.call(unix.SYS_PERSONALITY, p.Personality); err != nil {
		return fmt.Errorf("personality %#x: %w", p.Personality, err)
	}
	if _, err := L.call(unix.SYS_UMASK, uint64(p.Umask)); err != nil {
		return err
	}
	for which, it := range p.ITimers {
		if it.ValueUS == 0 && it.IntervalUS == 0 {
			continue
		}
		addr, err := L.poke(0, encodeTimerPair(it.IntervalUS, rearmValue(it.IntervalUS, it.ValueUS), 1e6))
		if err != nil {
			return err
		}
		if _, err := L.call(unix.SYS_SETITIMER, uint64(which), addr, 0); err != nil {
			return err
		}
	}
	if err := rs.restoreTimers(L); err != nil {
		return err
	}
	// Limits from inside, before the credentials change: afterwards root
	// without CAP_SYS_RESOURCE may not touch another user's limits.
	for _, l := range p.Rlimits {
		b := make([]byte, 16)
		le.PutUint64(b, l.Cur)
		le.PutUint64(b[8:], l.Max)
		addr, err := L.poke(0, b)
		if err != nil {
			return err
		}
		if _, err := L.call(unix.SYS_PRLIMIT64, 0, uint64(l.Resource), addr, 0); err != nil {
			return fmt.Errorf("resource limit %d (%d/%d): %w", l.Resource, l.Cur, l.Max, err)
		}
	}
	if err := rs.restoreCredsAll(); err != nil {
		return err
	}
	if err := rs.restoreTaskState(L); err != nil {
		return err
	}
	// Pending signals last: everything is blocked until resume.
	for _, si := range p.SharedPending {
		addr, err := L.poke(0, si[:])
		if err != nil {
			return err
		}
		sig := le.Uint32(si[:])
		if _, err := L.call(unix.SYS_RT_SIGQUEUEINFO, uint64(p.PID), uint64(sig), addr); err != nil {
			return fmt.Errorf("requeue signal %d: %w", sig, err)
		}
	}
	// Each thread queues its own: the kernel lets only the target thread
	// itself queue a signal that claims to come from the kernel or from
	// tgkill (si_code >= 0 or SI_TKILL), as Go's preemption SIGURG does.
	for i, t := range p.Threads {
		r := rs.threads[i]
		for _, si := range t.Pending {
			addr, err := r.poke(0, si[:])
			if err != nil {
				return err
			}
			sig := le.Uint32(si[:])
			if _, err := r.call(unix.SYS_RT_TGSIGQUEUEINFO, uint64(p.PID), uint64(t.TID), uint64(sig), addr); err != nil {
				return fmt.Errorf("requeue signal %d for thread %d: %w", sig, t.TID, err)
			}
		}
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", rs.host), []byte(strconv.Itoa(p.OOMScoreAdj)), 0); err != nil {
		return err
	}
	return nil
}

// restoreTimers recreates POSIX timers with their ids: with
// PR_TIMER_CREATE_RESTORE_IDS where the kernel has it (6.15+), otherwise
// as CRIU does: before 6.15 a process hands out timer ids in order from
// 0 (signal_struct.next_posix_timer_id; a restored process is a fresh
// clone), so timers are created in id order and each one that comes out
// below the wanted id is deleted and made again.
func (rs *restorer) restoreTimers(L *remote) error {
	if len(rs.p.Timers) == 0 {
		return nil
	}
	_, err := L.call(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 1)
	byID := err == nil
	if !byID && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("prctl PR_TIMER_CREATE_RESTORE_IDS: %w", err)
	}
	timers := slices.Clone(rs.p.Timers)
	slices.SortFunc(timers, func(a, b PosixTimer) int { return cmp.Compare(a.ID, b.ID) })
	for _, t := range timers {
		if t.ID < 0 || t.ID > maxSequentialTimerID && !byID {
			return fmt.Errorf("POSIX timer id %d: without PR_TIMER_CREATE_RESTORE_IDS (Linux 6.15) ids above %d are not restored: %w",
				t.ID, maxSequentialTimerID, ErrUnsupported)
		}
		sevAddr, err := L.poke(0, encodeSigevent(t))
		if err != nil {
			return err
		}
		id := make([]byte, 4)
		binary.LittleEndian.PutUint32(id, uint32(t.ID))
		idAddr, err := L.poke(64, id)
		if err != nil {
			return err
		}
		for {
			if _, err := L.call(unix.SYS_TIMER_CREATE, uint64(t.ClockID), sevAddr, idAddr); err != nil {
				return fmt.Errorf("timer_create id %d: %w", t.ID, err)
			}
			if byID {
				break
			}
			if err := ptrace.PeekData(L.tid, uintptr(idAddr), id); err != nil {
				return err
			}
			got := int(int32(binary.LittleEndian.Uint32(id)))
			if got == t.ID {
				break
			}
			if got > t.ID {
				return fmt.Errorf("POSIX timer id %d: the kernel handed out %d (ids are not sequential here): %w", t.ID, got, ErrUnsupported)
			}
			if _, err := L.call(unix.SYS_TIMER_DELETE, uint64(got)); err != nil {
				return fmt.Errorf("timer_delete %d: %w", got, err)
			}
		}
		if t.ValueNS == 0 && t.IntervalNS == 0 {
			continue
		}
		itsAddr, err := L.poke(128, encodeTimerPair(t.IntervalNS, rearmValue(t.IntervalNS, t.ValueNS), 1e9))
		if err != nil {
			return err
		}
		if _, err := L.call(unix.SYS_TIMER_SETTIME, uint64(t.ID), 0, itsAddr, 0); err != nil {
			return fmt.Errorf("timer_settime id %d: %w", t.ID, err)
		}
	}
	if !byID {
		return nil
	}
	_, err = L.call(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 0)
	return err
}

// timerRestoreIDs reports whether this kernel has PR_TIMER_CREATE_RESTORE_IDS.
func timerRestoreIDs() bool {
	_, err := unix.PrctlRetInt(prTimerCreateRestoreIDs, 2, 0, 0, 0) // PR_TIMER_CREATE_RESTORE_IDS_GET
	return err == nil
}

// rearmValue is the value to arm a periodic timer with. A periodic timer
// that has fired reads 0 until the signal it sent is dequeued, which
// rearms it (dequeue_signal); frozen in between, it was dumped as 0, which
// would disarm it: it is armed for one interval instead.
func rearmValue(interval, value int64) int64 {
	if value == 0 {
		return interval
	}
	return value
}

// maxSequentialTimerID bounds the timer_create/timer_delete rounds a
// restore without PR_TIMER_CREATE_RESTORE_IDS spends to reach an id (two
// injected syscalls, ~0.1 ms, per id below it).
const maxSequentialTimerID = 1 << 16

// encodeSigevent lays out the struct sigevent of a timer.
func encodeSigevent(t PosixTimer) []byte {
	le := binary.LittleEndian
	sev := make([]byte, 64)
	le.PutUint64(sev, t.SigevValue)
	le.PutUint32(sev[8:], uint32(t.Signal))
	switch t.Notify {
	case "thread":
		le.PutUint32(sev[12:], sigevThreadID)
		le.PutUint32(sev[16:], uint32(t.NotifyTID))
	case "none":
		le.PutUint32(sev[12:], sigevNone)
	default:
		le.PutUint32(sev[12:], sigevSignal)
	}
	return sev
}

// encodeTimerPair lays out struct itimerval (perSec 1e6: microseconds) or
// struct itimerspec (perSec 1e9: nanoseconds): interval, then value.
func encodeTimerPair(interval, value, perSec int64) []byte {
	b := make([]byte, 32)
	le := binary.LittleEndian
	for i, v := range []int64{interval, value} {
		le.PutUint64(b[16*i:], uint64(v/perSec))
		le.PutUint64(b[16*i+8:], uint64(v%perSec))
	}
	return b
}

// decodeTimerPair is the inverse of encodeTimerPair.
func decodeTimerPair(b []byte, perSec int64) (interval, value int64) {
	le := binary.LittleEndian
	at := func(off int) int64 { return int64(le.Uint64(b[off:]))*perSec + int64(le.Uint64(b[off+8:])) }
	return at(0), at(16)
}
