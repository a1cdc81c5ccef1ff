package ckpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// Linux constants missing from x/sys.
const (
	secbitKeepCaps             = 1 << 4     // SECBIT_KEEP_CAPS, include/uapi/linux/securebits.h
	secbitKeepCapsLocked       = 1 << 5     // SECBIT_KEEP_CAPS_LOCKED
	secbitNoAmbientRaise       = 1 << 6     // SECBIT_NO_CAP_AMBIENT_RAISE
	secbitNoAmbientRaiseLocked = 1 << 7     // SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
	secbitsAll                 = 0xff       // the four bits and their locks
	linuxCapV3                 = 0x20080522 // _LINUX_CAPABILITY_VERSION_3
	seccompSetModeFilter       = 1          // SECCOMP_SET_MODE_FILTER, include/uapi/linux/seccomp.h
	seccompFlagLog             = 1 << 1     // SECCOMP_FILTER_FLAG_LOG
	seccompFlagSpecAllow       = 1 << 2     // SECCOMP_FILTER_FLAG_SPEC_ALLOW
	seccompRetUserNotif        = 0x7fc00000 // SECCOMP_RET_USER_NOTIF
	seccompRetActionFull       = 0xffff0000 // SECCOMP_RET_ACTION_FULL
	bpfRetK                    = 0x06       // BPF_RET | BPF_K
	maxSeccompInsns            = 4096       // BPF_MAXINSNS
	maxSeccompFilters          = 64
)

// SeccompFilter is one seccomp filter of a thread: its classic-BPF
// program (struct sock_filter, 8 bytes an instruction) and the flags it
// was installed with (SECCOMP_FILTER_FLAG_LOG, ...).
type SeccompFilter struct {
	Insns []byte `json:"insns"`
	Flags uint64 `json:"flags,omitempty"`
}

// collectSeccomp reads tid's filters, oldest first, and refuses those that
// cannot be carried: a filter that hands syscalls to a user-space
// supervisor (SECCOMP_RET_USER_NOTIF) would come back with nobody
// listening.
// Precondition: called on the tracer thread.
func collectSeccomp(tid int) ([]SeccompFilter, error) {
	fs, err := ptrace.SeccompFilters(tid)
	if err != nil {
		return nil, err
	}
	var out []SeccompFilter
	for _, f := range fs {
		if usesUserNotif(f.Insns) {
			return nil, fmt.Errorf("thread %d: a seccomp filter passes syscalls to a supervisor (SECCOMP_RET_USER_NOTIF), which does not move: %w", tid, ErrUnsupported)
		}
		out = append(out, SeccompFilter{Insns: f.Insns, Flags: f.Flags})
	}
	return out, nil
}

// usesUserNotif reports whether a filter can return SECCOMP_RET_USER_NOTIF.
func usesUserNotif(insns []byte) bool {
	le := binary.LittleEndian
	for i := 0; i+8 <= len(insns); i += 8 {
		code, k := le.Uint16(insns[i:]), le.Uint32(insns[i+4:])
		if code == bpfRetK && k&seccompRetActionFull == seccompRetUserNotif {
			return true
		}
	}
	return false
}

// validateCreds bounds the credentials and filters of an image.
func (p *Process) validateCreds() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("image metadata: pid %d: %s: %w", p.PID, fmt.Sprintf(format, a...), image.ErrCorrupt)
	}
	if p.Creds.Securebits&^secbitsAll != 0 {
		return bad("securebits %#x", p.Creds.Securebits)
	}
	if p.Cgroup != nil {
		if _, err := cgroupRel(p.Cgroup.Path); err != nil {
			return bad("%v", err)
		}
	}
	if len(p.Creds.Groups) > 65536 {
		return bad("%d supplementary groups", len(p.Creds.Groups))
	}
	for _, t := range p.Threads {
		if len(t.Seccomp) > maxSeccompFilters {
			return bad("thread %d has %d seccomp filters", t.TID, len(t.Seccomp))
		}
		for _, f := range t.Seccomp {
			if n := len(f.Insns); n == 0 || n%8 != 0 || n/8 > maxSeccompInsns {
				return bad("thread %d: a seccomp filter of %d bytes", t.TID, n)
			}
			if f.Flags&^(seccompFlagLog|seccompFlagSpecAllow) != 0 {
				return bad("thread %d: seccomp filter flags %#x", t.TID, f.Flags)
			}
		}
	}
	return nil
}

// capLastCap is the highest capability this kernel knows.
func capLastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 40
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 40
	}
	return n
}

// ownPermitted is relocate's permitted capability set.
func ownPermitted() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32, nil
}

// ownBounding is relocate's capability bounding set.
func ownBounding() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapBnd in /proc/self/status")
}

// capUser lays out struct __user_cap_header_struct and the two
// __user_cap_data_struct words of a capset.
func capUser(eff, prm, inh uint64) []byte {
	b := make([]byte, 8+24)
	le := binary.LittleEndian
	le.PutUint32(b, linuxCapV3)
	for i := 0; i < 2; i++ {
		le.PutUint32(b[8+12*i:], uint32(eff>>(32*i)))
		le.PutUint32(b[8+12*i+4:], uint32(prm>>(32*i)))
		le.PutUint32(b[8+12*i+8:], uint32(inh>>(32*i)))
	}
	return b
}

func capset(r *remote, eff, prm, inh uint64) error {
	addr, err := r.poke(0, capUser(eff, prm, inh))
	if err != nil {
		return err
	}
	if _, err := r.call(unix.SYS_CAPSET, addr, addr+8); err != nil {
		return fmt.Errorf("capset eff %#x prm %#x inh %#x: %w", eff, prm, inh, err)
	}
	return nil
}

// restoreCredsAll gives every thread of the process its credentials
// whole. Credentials are per thread: each thread gets them, not only the
// leader. The stub runs as root with every capability; the order matters
// because each step needs a capability a later one may drop.
func (rs *restorer) restoreCredsAll() error {
	for i, r := range rs.threads {
		if err := rs.restoreThreadCreds(r, &rs.p.Threads[i]); err != nil {
			return &ProcessError{PID: rs.p.PID, Err: fmt.Errorf("thread %d: credentials: %w", rs.p.Threads[i].TID, err)}
		}
	}
	return nil
}

func (rs *restorer) restoreThreadCreds(r *remote, t *Thread) error {
	c := rs.p.Creds
	last := capLastCap()
	// The stub has relocate's permitted set: everything, on a usual host.
	all, err := ownPermitted()
	if err != nil {
		return err
	}
	bnd, err := ownBounding()
	if err != nil {
		return err
	}
	if c.UID == [4]int{} && c.GID == [4]int{} && len(c.Groups) == 0 && c.CapInh == 0 && c.CapPrm == all &&
		c.CapEff == all && c.CapBnd == bnd && c.CapAmb == 0 && c.Securebits == 0 && !c.NoNewPrivs && len(t.Seccomp) == 0 {
		return nil // root as the stub is: nothing to change
	}
	if c.CapPrm&^all != 0 || c.CapInh&^all != 0 {
		return fmt.Errorf("capabilities %#x are not relocate's to give", (c.CapPrm|c.CapInh)&^all)
	}
	// What the steps below need in the effective set until the end.
	const working = 1<<unix.CAP_SETUID | 1<<unix.CAP_SETGID | 1<<unix.CAP_SETPCAP | 1<<unix.CAP_SYS_ADMIN
	inh, prm := c.CapInh&all, c.CapPrm&all

	// 1. The inheritable set first, while the permitted set is full: it
	// may hold capabilities the bounding set drops next.
	if err := capset(r, all, all, inh); err != nil {
		return err
	}
	// 2. The bounding set (CAP_SETPCAP).
	for cp := 0; cp <= last; cp++ {
		if c.CapBnd&(1<<cp) == 0 {
			if _, err := r.call(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uint64(cp)); err != nil {
				return fmt.Errorf("drop capability %d from the bounding set: %w", cp, err)
			}
		}
	}
	// 3. Securebits, with SECBIT_KEEP_CAPS so that the permitted set
	// survives setresuid (the locks that would stop step 6 come there).
	sb := uint64(c.Securebits)
	early := sb&^(secbitKeepCapsLocked|secbitNoAmbientRaise|secbitNoAmbientRaiseLocked) | secbitKeepCaps
	if _, err := r.call(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, early); err != nil {
		return fmt.Errorf("securebits %#x: %w", early, err)
	}
	// 4. Groups and ids, fsgid while still root.
	le := binary.LittleEndian
	groups := make([]byte, 4*len(c.Groups))
	for i, g := range c.Groups {
		le.PutUint32(groups[4*i:], uint32(g))
	}
	if len(groups) > scratchLen {
		return errors.New("too many supplementary groups")
	}
	addr := r.scratch()
	if len(groups) > 0 {
		var err error
		if addr, err = r.poke(0, groups); err != nil {
			return err
		}
	}
	if _, err := r.call(unix.SYS_SETGROUPS, uint64(len(c.Groups)), addr); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if _, err := r.call(unix.SYS_SETRESGID, uint64(c.GID[0]), uint64(c.GID[1]), uint64(c.GID[2])); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if _, err := r.call(unix.SYS_SETFSGID, uint64(c.GID[3])); err != nil {
		return fmt.Errorf("setfsgid: %w", err)
	}
	if _, err := r.call(unix.SYS_SETRESUID, uint64(c.UID[0]), uint64(c.UID[1]), uint64(c.UID[2])); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	// setresuid emptied the effective set (and the ambient one); take back
	// what the rest needs, from the permitted set KEEP_CAPS kept.
	if err := capset(r, prm|working, prm|working, inh); err != nil {
		return err
	}
	if _, err := r.call(unix.SYS_SETFSUID, uint64(c.UID[3])); err != nil {
		return fmt.Errorf("setfsuid: %w", err)
	}
	// 5. Seccomp filters, in the order they were installed (CAP_SYS_ADMIN
	// stands in for no_new_privs; the injected syscalls after them are
	// not filtered: PTRACE_O_SUSPEND_SECCOMP).
	if err := installSeccomp(r, t.Seccomp); err != nil {
		return err
	}
	// 6. Ambient capabilities (in the permitted and inheritable sets by
	// now), then the securebits as they were (CAP_SETPCAP), then the
	// capability sets as they were.
	for amb := c.CapAmb & prm & inh; amb != 0; amb &= amb - 1 {
		cp := bits.TrailingZeros64(amb)
		if _, err := r.call(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uint64(cp), 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d: %w", cp, err)
		}
	}
	if sb != early {
		if _, err := r.call(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, sb); err != nil {
			return fmt.Errorf("securebits %#x: %w", sb, err)
		}
	}
	if err := capset(r, c.CapEff&prm, prm, inh); err != nil {
		return err
	}
	if c.NoNewPrivs {
		if _, err := r.call(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	return nil
}

// installSeccomp installs filters in order: each program is copied into a
// temporary mapping of the process and handed to seccomp(2).
func installSeccomp(r *remote, filters []SeccompFilter) error {
	for i, f := range filters {
		size := uint64(len(f.Insns)+mem.PageSize-1) &^ (mem.PageSize - 1)
		buf, err := r.call(unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return fmt.Errorf("seccomp filter %d: mmap: %w", i, err)
		}
		err = func() error {
			if err := pokeAt(r, buf, f.Insns); err != nil {
				return err
			}
			prog := make([]byte, 16) // struct sock_fprog
			binary.LittleEndian.PutUint16(prog, uint16(len(f.Insns)/8))
			binary.LittleEndian.PutUint64(prog[8:], buf)
			addr, err := r.poke(0, prog)
			if err != nil {
				return err
			}
			if _, err := r.call(unix.SYS_SECCOMP, seccompSetModeFilter, f.Flags, addr); err != nil {
				return fmt.Errorf("seccomp filter %d of %d: %w", i+1, len(filters), err)
			}
			return nil
		}()
		if _, uerr := r.call(unix.SYS_MUNMAP, buf, size); err == nil && uerr != nil {
			err = uerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pokeAt writes b into r's memory at addr.
func pokeAt(r *remote, addr uint64, b []byte) error {
	return mem.WriteRuns(r.pid, [][]byte{b}, []mem.Range{{Start: addr, End: addr + uint64(len(b))}})
}
