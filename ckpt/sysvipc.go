package ckpt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/proc"
)

// sysvIPCUser finds System V message queues and semaphores that a process
// of the tree used last: neither lives in a descriptor or a mapping, so
// the kernel's own bookkeeping is the only trace (the last sender and
// receiver of a queue, the last process to operate on a semaphore). A
// process that used one earlier and not last goes unseen. The queues are
// the tree's to carry (their ids are returned) unless their other
// recorded user is a process outside the tree that still runs; a
// semaphore set is refused.
func sysvIPCUser(tree map[int]bool) ([]int, [][]string, error) {
	var queues []int
	var sems [][]string
	// A recorded PID names one of ours only if that process already ran
	// at the recorded time (PIDs are reused).
	ours := func(pid int, at string) bool {
		t, err := strconv.ParseInt(at, 10, 64)
		return tree[pid] && (err != nil || startedBy(pid, t))
	}
	if b, err := os.ReadFile("/proc/sysvipc/msg"); err == nil {
		for _, row := range sysvRows(b) {
			// key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime
			if len(row) < 13 {
				continue
			}
			used, outside := 0, 0
			for _, c := range [][2]int{{5, 11}, {6, 12}} {
				pid, _ := strconv.Atoi(row[c[0]])
				switch {
				case ours(pid, row[c[1]]):
					used = pid
				case pid > 0 && !tree[pid] && unix.Kill(pid, 0) == nil:
					outside = pid
				}
			}
			id, err := strconv.Atoi(row[1])
			if used == 0 || err != nil {
				continue
			}
			if outside != 0 {
				return nil, nil, &ProcessError{PID: used, Err: fmt.Errorf("uses System V message queue %d, which pid %d outside the checkpoint uses too: %w", id, outside, ErrUnsupported)}
			}
			queues = append(queues, id)
		}
	}
	if b, err := os.ReadFile("/proc/sysvipc/sem"); err == nil {
		for _, row := range sysvRows(b) {
			// key semid perms nsems ...
			if len(row) < 4 {
				continue
			}
			// key semid perms nsems uid gid cuid cgid otime ctime
			semid, err1 := strconv.Atoi(row[1])
			nsems, err2 := strconv.Atoi(row[3])
			if err1 != nil || err2 != nil || len(row) < 9 {
				continue
			}
			used, outside := 0, 0
			for i := 0; i < nsems; i++ {
				const getpid = 11 // GETPID: the last process to semop this one
				r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(semid), uintptr(i), getpid, 0, 0, 0)
				pid := int(r)
				switch {
				case e != 0:
				case ours(pid, row[8]):
					used = pid
				case pid > 0 && !tree[pid] && unix.Kill(pid, 0) == nil:
					outside = pid
				}
			}
			if used == 0 {
				continue
			}
			if outside != 0 {
				return nil, nil, &ProcessError{PID: used, Err: fmt.Errorf("uses System V semaphore set %d, which pid %d outside the checkpoint uses too: %w", semid, outside, ErrUnsupported)}
			}
			sems = append(sems, row)
		}
	}
	return queues, sems, nil
}

// sysvRows splits a /proc/sysvipc table into fields, header left out.
func sysvRows(b []byte) [][]string {
	var rows [][]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for first := true; sc.Scan(); first = false {
		if !first {
			rows = append(rows, strings.Fields(sc.Text()))
		}
	}
	return rows
}

// startedBy reports whether pid was running at unix time t (its start,
// from /proc/PID/stat and the boot time, is not after t).
func startedBy(pid int, t int64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	ps, err := proc.ParseStat(b)
	if err != nil {
		return false
	}
	start := int64(ps.StartTime) // clock ticks since boot
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, _ := strconv.ParseInt(v, 10, 64)
			return boot+start/100 <= t+1 // USER_HZ is 100 on Linux
		}
	}
	return true
}
