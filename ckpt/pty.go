package ckpt

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/proc"
)

// Pseudo-terminals whose master is in the tree (a terminal multiplexer,
// an expect script, an ssh server and its shells) come back as a new pty
// pair, with the same index where it is free, and the same termios and
// window size; the sessions whose controlling terminal it was get it
// again, with their foreground process group.
const (
	FilePTMX = "ptmx" // the master end (/dev/ptmx)
	FilePTS  = "pts"  // a slave end (/dev/pts/N, or /dev/tty naming it)
)

// PTY is a pseudo-terminal's state, kept with its master.
type PTY struct {
	Index   int           `json:"index"`
	Termios *unix.Termios `json:"termios,omitempty"`
	Winsize *unix.Winsize `json:"winsize,omitempty"`
	Packet  bool          `json:"packet,omitempty"`
}

// Device numbers (Documentation/admin-guide/devices.txt).
const (
	ptsMajorFirst = 136 // Unix98 pty slaves, 136-143
	ptsMajorLast  = 143
	ttyAuxMajor   = 5 // 5:0 /dev/tty, 5:2 /dev/ptmx
)

// ptsIndex is the pty index of a slave device, or -1.
func ptsIndex(maj, min uint32) int {
	if maj < ptsMajorFirst || maj > ptsMajorLast {
		return -1
	}
	return int(maj-ptsMajorFirst)*256 + int(min)
}

// controllingTTY returns 1 + the pty index of a process's controlling
// terminal when it is a pty slave (0: none or another terminal).
func controllingTTY(st *proc.Stat) int {
	dev := uint64(st.TTYNr)
	if i := ptsIndex(unix.Major(dev), unix.Minor(dev)); i >= 0 {
		return i + 1
	}
	return 0
}

type (
	ptmxKind struct{ baseKind }
	ptsKind  struct{ baseKind }
)

func (ptmxKind) dump(p *fdProbe, f *File) (bool, error) {
	maj, min, ok := p.devNumbers()
	if !ok || maj != ttyAuxMajor || min != 2 {
		return false, nil
	}
	dup, err := p.getfd()
	if err != nil {
		return false, p.fail("pty master", err)
	}
	defer unix.Close(dup)
	fail := func(err error) (bool, error) { return false, p.fail("pty master", err) }
	n, err := unix.IoctlGetUint32(dup, unix.TIOCGPTN)
	if err != nil {
		return fail(fmt.Errorf("TIOCGPTN: %w", err))
	}
	pty := &PTY{Index: int(n)}
	if pty.Termios, err = unix.IoctlGetTermios(dup, unix.TCGETS); err != nil {
		return fail(fmt.Errorf("TCGETS: %w", err))
	}
	if pty.Winsize, err = unix.IoctlGetWinsize(dup, unix.TIOCGWINSZ); err != nil {
		return fail(fmt.Errorf("TIOCGWINSZ: %w", err))
	}
	pkt, err := unix.IoctlGetInt(dup, unix.TIOCGPKT)
	if err != nil {
		return fail(fmt.Errorf("TIOCGPKT: %w", err))
	}
	pty.Packet = pkt != 0
	// Bytes on their way either way cannot be put back as they were
	// (a tty has no peek, and writing them again would echo and
	// translate them): refused, after the dump let the tree run a few
	// moments to read them (ErrTTYQueue is retried).
	out, _ := unix.IoctlGetInt(dup, unix.TIOCINQ)
	in := 0
	if peer, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(dup), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC); e == 0 {
		in, _ = unix.IoctlGetInt(int(peer), unix.TIOCINQ)
		unix.Close(int(peer))
	}
	if in > 0 || out > 0 {
		return fail(fmt.Errorf("pty %d has %d bytes queued for its programs to read and %d for the master: %w", n, in, out, ErrTTYQueue))
	}
	f.Kind, f.Path, f.PTY = FilePTMX, p.link, pty
	return true, nil
}

func (ptsKind) dump(p *fdProbe, f *File) (bool, error) {
	maj, min, ok := p.devNumbers()
	if !ok {
		return false, nil
	}
	i := ptsIndex(maj, min)
	if maj == ttyAuxMajor && min == 0 {
		// /dev/tty: the controlling terminal of the process.
		b, err := p.d.fs.Read(p.pid, "stat")
		if err != nil {
			return false, p.fail("", err)
		}
		st, err := proc.ParseStat(b)
		if err != nil {
			return false, p.fail("", err)
		}
		i = controllingTTY(&st) - 1
	}
	if i < 0 {
		return false, nil
	}
	f.Kind, f.Path, f.PTY = FilePTS, p.link, &PTY{Index: i}
	return true, nil
}

// inTree keeps a slave end whose master is in the tree; any other
// terminal is the one the tree was started from: --shell-job hands it
// the restorer's, or it is refused.
func (ptsKind) inTree(t *fileTable, opts DumpOptions, p *Process, fd FD, f *File) error {
	for _, o := range t.files {
		if o.Kind == FilePTMX && o.PTY != nil && o.PTY.Index == f.PTY.Index {
			return nil
		}
	}
	if opts.ShellJob {
		f.Kind, f.PTY = FileTTY, nil
		return nil
	}
	return &FDError{PID: p.PID, FD: fd.FD, What: f.Path + " (terminal)", Err: ErrTerminal}
}

func (ptmxKind) describe(f *File) string {
	if f.PTY == nil {
		return f.Kind
	}
	return fmt.Sprintf("pty master of /dev/pts/%d", f.PTY.Index)
}

func (ptsKind) describe(f *File) string {
	if f.PTY == nil {
		return f.Kind
	}
	return fmt.Sprintf("%s (pty %d, master in the tree)", f.Path, f.PTY.Index)
}

func (ptmxKind) open(sh *shared, f *File) (int, error) {
	m, err := sh.ptyMaster(f.PTY)
	if err != nil {
		return -1, err
	}
	return unix.FcntlInt(uintptr(m), unix.F_DUPFD_CLOEXEC, 3)
}

func (ptsKind) open(sh *shared, f *File) (int, error) {
	return sh.ptySlave(f.PTY, openFlags(f))
}

// ptyMaster returns the restorer's master of the image's pty p, making
// the pair the first time: with p's index if it is free (ptys get the
// lowest free index: the ones below are taken and let go again), its
// termios, window size and packet mode.
func (sh *shared) ptyMaster(p *PTY) (int, error) {
	if p == nil {
		return -1, fmt.Errorf("pty without state: %w", image.ErrCorrupt)
	}
	var master *File
	for i := range sh.cp.Files {
		if o := &sh.cp.Files[i]; o.Kind == FilePTMX && o.PTY != nil && o.PTY.Index == p.Index {
			master = o
			break
		}
	}
	if master == nil {
		return -1, fmt.Errorf("image: pty %d has no master: %w", p.Index, image.ErrCorrupt)
	}
	if fd, ok := sh.ptys[p.Index]; ok {
		return fd, nil
	}
	p = master.PTY
	var extra []int
	defer func() {
		for _, fd := range extra {
			unix.Close(fd)
		}
	}()
	fd := -1
	for tries := 0; tries < 256; tries++ {
		m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|master.Flags&unix.O_NONBLOCK, 0)
		if err != nil {
			return -1, fmt.Errorf("open /dev/ptmx: %w", err)
		}
		n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
		if err != nil {
			unix.Close(m)
			return -1, fmt.Errorf("TIOCGPTN: %w", err)
		}
		if int(n) < p.Index {
			extra = append(extra, m)
			continue
		}
		fd = m
		break
	}
	if fd < 0 {
		return -1, fmt.Errorf("pty %d: no free index near it", p.Index)
	}
	sh.toClose = append(sh.toClose, fd)
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return -1, fmt.Errorf("unlock pty: %w", err)
	}
	if p.Termios != nil {
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, p.Termios); err != nil {
			return -1, fmt.Errorf("pty %d termios: %w", p.Index, err)
		}
	}
	if p.Winsize != nil {
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, p.Winsize); err != nil {
			return -1, fmt.Errorf("pty %d window size: %w", p.Index, err)
		}
	}
	if p.Packet {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); err != nil {
			return -1, fmt.Errorf("pty %d packet mode: %w", p.Index, err)
		}
	}
	if sh.ptys == nil {
		sh.ptys = map[int]int{}
	}
	sh.ptys[p.Index] = fd
	return fd, nil
}

// ptySlave opens a new slave end of the image's pty p, never making it
// relocate's controlling terminal.
func (sh *shared) ptySlave(p *PTY, flags int) (int, error) {
	m, err := sh.ptyMaster(p)
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(flags|unix.O_NOCTTY|unix.O_CLOEXEC))
	if e != 0 {
		return -1, fmt.Errorf("open the slave of pty %d (TIOCGPTPEER): %w", p.Index, e)
	}
	return int(fd), nil
}

// setCTTY gives a session leader its controlling terminal, when it is a
// pty of the tree, before any of its children is made: they inherit it.
func (rs *restorer) setCTTY() error {
	p := rs.p
	if p.CTTY <= 0 || p.SID != p.PID || !rs.hasPTY(p.CTTY-1) {
		return nil
	}
	fail := func(err error) error {
		return &ProcessError{PID: p.PID, Err: fmt.Errorf("controlling terminal (pty %d): %w", p.CTTY-1, err)}
	}
	s, err := rs.ptySlave(&PTY{Index: p.CTTY - 1}, unix.O_RDWR)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(s)
	tfd, err := rs.leader.call(unix.SYS_PIDFD_GETFD, stubPidfd, uint64(s), 0)
	if err != nil {
		return fail(err)
	}
	_, err = rs.leader.call(unix.SYS_IOCTL, tfd, unix.TIOCSCTTY, 0)
	if _, cerr := rs.leader.call(unix.SYS_CLOSE, tfd); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// hasPTY reports whether the image holds the master of pty index i.
func (sh *shared) hasPTY(i int) bool {
	for _, f := range sh.cp.Files {
		if f.Kind == FilePTMX && f.PTY != nil && f.PTY.Index == i {
			return true
		}
	}
	return false
}

// setForeground makes the session's foreground process group what it
// was, from inside the session leader, through one of its descriptors of
// the terminal. Precondition: the descriptors are installed.
func (rs *restorer) setForeground(L *remote) error {
	p := rs.p
	if p.CTTY <= 0 || p.SID != p.PID || p.TPGID <= 0 || !rs.hasPTY(p.CTTY-1) {
		return nil
	}
	for _, fd := range p.FDs {
		f := rs.cp.Files[fd.File]
		if f.Kind != FilePTS || f.PTY == nil || f.PTY.Index != p.CTTY-1 {
			continue
		}
		b := binary.LittleEndian.AppendUint32(nil, uint32(p.TPGID))
		addr, err := L.poke(0, b)
		if err != nil {
			return err
		}
		if _, err := L.call(unix.SYS_IOCTL, uint64(fd.FD), unix.TIOCSPGRP, addr); err != nil {
			return &ProcessError{PID: p.PID, Err: fmt.Errorf("foreground process group %d of pty %d: %w", p.TPGID, p.CTTY-1, err)}
		}
		return nil
	}
	return nil
}
