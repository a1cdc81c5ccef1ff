package ckpt

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/sock"
)

// Capability is one thing relocate needs from the kernel or its privileges.
type Capability struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`             // what was found
	Disables string `json:"disables,omitempty"` // what does not work without it
	Required bool   `json:"required"`           // dump or restore cannot work at all without it
}

// Check probes this machine without touching any other process.
func Check() []Capability {
	var out []Capability
	add := func(name string, ok bool, detail, disables string, required bool) {
		out = append(out, Capability{Name: name, OK: ok, Detail: detail, Disables: disables, Required: required})
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	add("kernel", true, unix.ByteSliceToString(u.Release[:])+" "+archName, "", false)

	root := os.Geteuid() == 0
	add("root", root, fmt.Sprintf("euid %d", os.Geteuid()), "dump and restore (ptrace, pidfd_getfd, clone3 with set_tid)", true)

	capEff := effectiveCaps()
	for _, c := range []struct {
		bit      uint
		name     string
		disables string
		required bool
	}{
		{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "dump and restore", true},
		{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "restore with the original PIDs (clone3 set_tid), PR_SET_MM", true},
		{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "TCP connections (TCP_REPAIR) and the network lock", false},
		{unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE", "", false},
		{unix.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH", "inotify watches (open_by_handle_at)", false},
	} {
		ok := capEff&(1<<c.bit) != 0
		detail := "in the effective set"
		if !ok {
			detail = "not in the effective set"
			if c.bit == unix.CAP_SYS_RESOURCE {
				detail += " (limits of other users' processes are read from /proc instead)"
			}
		}
		add(c.name, ok, detail, c.disables, c.required)
	}

	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		scope := strings.TrimSpace(string(b))
		add("ptrace scope", scope != "3", "yama ptrace_scope "+scope, "dump (scope 3 forbids attaching)", true)
	} else {
		add("ptrace scope", true, "no Yama LSM", "", false)
	}

	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err == nil {
		fd, gerr := unix.PidfdGetfd(pidfd, 0, 0)
		if gerr == nil {
			unix.Close(fd)
		}
		unix.Close(pidfd)
		err = gerr
	}
	add("pidfd_getfd", err == nil, errDetail(err, "works"), "dump (descriptors are read through it) and restore", true)

	err = probeSetTID()
	add("clone3 set_tid", err == nil, errDetail(err, "works"), "restore with the original PIDs", true)

	err = probeSetMMMap()
	add("PR_SET_MM_MAP", err == nil, errDetail(err, "works"), "restore (memory layout, exe link, auxv)", true)

	_, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(os.Getpid()), 0, 0, 0, 0)
	add("kcmp", e == 0, errDetail(errnoErr(e), "works"), "dump (finding shared file descriptions)", true)

	_, err = unix.PrctlRetInt(prTimerCreateRestoreIDs, 2, 0, 0, 0) // as timerRestoreIDs, with the error
	add("POSIX timer ids", err == nil, errDetail(err, "PR_TIMER_CREATE_RESTORE_IDS available"),
		"restoring POSIX timer ids above 65536 (Linux 6.15+; lower ids are reached by creating timers in order)", false)

	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = sock.RepairOn(s)
		unix.Close(s)
	}
	add("TCP_REPAIR", err == nil, errDetail(err, "works"), "established TCP connections", false)

	err = sock.LockAvailable()
	add("nftables", err == nil, errDetail(err, "netlink nftables works"), "established TCP connections (the network lock)", false)

	err = sock.RawAvailable()
	add("raw sockets", err == nil, errDetail(err, "IPv4 and IPv6, marked"), "half-closed TCP connections and queued UDP datagrams", false)

	err = probeUffdWP()
	if err == nil {
		err = probePagemapScan()
	}
	add("userfaultfd WP + PAGEMAP_SCAN", err == nil, errDetail(err, "asynchronous write-protect and PAGEMAP_SCAN work"),
		"write tracking for pre-copy with userfaultfd (soft-dirty bits are the fallback)", false)
	if err != nil {
		sd := mem.SoftDirtyWorks()
		detail := "work: pre-copy tracks writes with them"
		if !sd {
			detail = "missing (CONFIG_MEM_SOFT_DIRTY)"
		}
		add("soft-dirty bits", sd, detail, "pre-copy: a migration copies everything frozen, dump --pre-copy refuses", false)
	}

	_, err = os.Stat("/proc/self/ns/time")
	add("time namespaces", err == nil, errDetail(err, "available"), "continuing CLOCK_MONOTONIC/BOOTTIME across a migration", false)

	add("vDSO layout", true, vdsoLayout(), "", false)
	return out
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func errDetail(err error, ok string) string {
	if err == nil {
		return ok
	}
	return err.Error()
}

// effectiveCaps reads CapEff of relocate itself.
func effectiveCaps() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var c uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &c)
			return c
		}
	}
	return 0
}

// vdsoLayout describes the vDSO block of relocate itself, which a restore
// must match.
func vdsoLayout() string {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !isVDSO(f[5]) {
			continue
		}
		var lo, hi uint64
		fmt.Sscanf(f[0], "%x-%x", &lo, &hi)
		parts = append(parts, fmt.Sprintf("%s %d KiB", f[5], (hi-lo)/1024))
	}
	return strings.Join(parts, ", ")
}

// kernelPrecheck refuses, before anything is frozen, a dump that needs
// what this kernel lacks: established TCP connections need TCP_REPAIR and
// the nftables network lock.
func kernelPrecheck(pid int) error {
	s, err := SurveyTree(pid)
	if err != nil || !s.TCP {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = sock.RepairOn(fd)
		unix.Close(fd)
	}
	if err != nil {
		return &ProcessError{PID: pid, Err: fmt.Errorf("has TCP connections and TCP_REPAIR does not work here (%v): %w", err, ErrUnsupported)}
	}
	if err := sock.LockAvailable(); err != nil {
		return &ProcessError{PID: pid, Err: fmt.Errorf("has TCP connections and the nftables network lock does not work here (%v; modprobe nf_tables): %w", err, ErrUnsupported)}
	}
	return nil
}
