package ckpt

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/sock"
)

// fileTable collects the open file descriptions of a checkpoint. Descriptors
// that share one description map to one File.
type fileTable struct {
	files []File
	// byIno indexes files by (dev, ino) to find candidates for sharing.
	byIno map[[2]uint64][]fileRef
	blobs []blobSource
	// pipeBlob holds the blob carrying a pipe's or FIFO's buffer, by inode:
	// every end refers to the one copy.
	pipeBlob map[uint64]File
	// shmem maps a shared memory object (dev, ino) to its VMA.Obj.
	shmem map[[2]uint64]int
}

type fileRef struct {
	pid, fd, index int
}

// blobSource says where the contents of a blob come from at dump time.
type blobSource struct {
	id     uint32
	path   string // /proc/PID/fd/N or /proc/PID/map_files/A-B to read
	data   []byte // already read (pipe buffers)
	sparse bool   // read only the data extents (SEEK_DATA/SEEK_HOLE)
	skip   bool   // not written after all (see dropBlob)
}

func newFileTable() *fileTable {
	return &fileTable{byIno: map[[2]uint64][]fileRef{}, pipeBlob: map[uint64]File{}, shmem: map[[2]uint64]int{}}
}

// shmemObject returns the VMA.Obj of the shared memory object that m maps
// in pid, adding it to the checkpoint the first time it is seen: its
// contents are saved once, as a blob read through /proc/PID/map_files
// (holes skipped, whether or not any process has the pages mapped).
func (t *fileTable) shmemObject(pid int, m proc.Mapping) (int, error) {
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("shared memory object: %w", err)
	}
	key := [2]uint64{st.Dev, st.Ino}
	if obj, ok := t.shmem[key]; ok {
		return obj, nil
	}
	f := File{Kind: FileShmem, Path: m.Path, Size: st.Size, Mode: st.Mode}
	f.Blob = t.newBlob(blobSource{path: path, sparse: true})
	t.files = append(t.files, f)
	t.shmem[key] = len(t.files)
	return len(t.files), nil
}

// memfdSeals reads the seals of a process's memfd through a duplicate.
func memfdSeals(pidfd, fd int) (int, error) {
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(dup)
	seals, err := unix.FcntlInt(uintptr(dup), unix.F_GET_SEALS, 0)
	if err != nil {
		return 0, fmt.Errorf("F_GET_SEALS: %w", err)
	}
	return seals, nil
}

// mqueueMagic is the f_type of the POSIX message queue file system.
const mqueueMagic = 0x19800202

// Character devices that are the same on every machine (major, minor).
var portableDevices = map[[2]uint32]bool{
	{1, 3}: true, // /dev/null
	{1, 5}: true, // /dev/zero
	{1, 7}: true, // /dev/full
	{1, 8}: true, // /dev/random
	{1, 9}: true, // /dev/urandom
}

const oCloexec = unix.O_CLOEXEC

// collectFDs records every descriptor of p.
func (d *dumper) collectFDs(p *Process) error {
	fds, err := d.fs.FDs(p.PID)
	if err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open pid %d: %w", p.PID, err)
	}
	defer unix.Close(pidfd)
	inodes := map[int]uint64{}
	for _, fd := range fds {
		ent, ino, err := d.collectFD(p.PID, pidfd, fd)
		if err != nil {
			return err
		}
		p.FDs = append(p.FDs, ent)
		inodes[fd] = ino
	}
	if err := d.files.checkEpolls(p, inodes); err != nil {
		return err
	}
	return d.collectTCP()
}

// tcpSocket is an established connection being dumped: a duplicate of the
// process's socket, in repair mode once the network lock is on.
type tcpSocket struct {
	fd        int
	file      int // index in the file table
	pid, num  int
	link      string
	repairing bool
}

// collectTCP locks the network for every established connection, then
// reads each in repair mode.
func (d *dumper) collectTCP() error {
	if len(d.tcp) == 0 {
		return nil
	}
	var conns []sock.Conn
	for _, t := range d.tcp {
		local, err1 := unix.Getsockname(t.fd)
		peer, err2 := unix.Getpeername(t.fd)
		if err1 != nil || err2 != nil {
			return &FDError{PID: t.pid, FD: t.num, What: t.link + " (tcp)", Err: errors.Join(err1, err2)}
		}
		conns = append(conns, sock.Conn{LocalPort: sockPort(local), PeerPort: sockPort(peer)})
	}
	lock, err := sock.NewLock(lockName(d.pid), conns, nil)
	if err != nil {
		return &ProcessError{PID: d.pid, Err: fmt.Errorf("established TCP connections need the network lock: %w", err)}
	}
	d.lock = lock
	for i := range d.tcp {
		t := &d.tcp[i]
		if err := sock.RepairOn(t.fd); err != nil {
			return &FDError{PID: t.pid, FD: t.num, What: t.link + " (tcp)", Err: fmt.Errorf("TCP_REPAIR: %w", err)}
		}
		t.repairing = true
		c, err := sock.InspectTCP(t.fd)
		if err != nil {
			return &FDError{PID: t.pid, FD: t.num, What: t.link + " (tcp)", Err: err}
		}
		d.files.files[t.file].TCP = c
		// Repair mode only while reading: a relocate killed from here on
		// leaves a working socket (the lock holds its packets meanwhile;
		// the frozen process changes nothing in it).
		if err := sock.RepairOff(t.fd); err != nil {
			return &FDError{PID: t.pid, FD: t.num, What: t.link + " (tcp)", Err: fmt.Errorf("TCP_REPAIR off: %w", err)}
		}
		t.repairing = false
	}
	return nil
}

func sockPort(sa unix.Sockaddr) uint16 {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port)
	case *unix.SockaddrInet6:
		return uint16(a.Port)
	}
	return 0
}

// lockName is the nftables table that holds a process's connections
// between dump and restore.
func lockName(pid int) string { return fmt.Sprintf("relocate_%d", pid) }

// releaseNet hands the connections back: to the process (resume: the
// lock lifted) or to nobody (killed: the duplicates, now the last
// references, are closed in repair mode, which sends nothing, and the
// lock stays until restore).
func (d *dumper) releaseNet(resume bool) error {
	var errs []error
	for _, t := range d.tcp {
		switch {
		case resume && t.repairing:
			errs = append(errs, sock.RepairOff(t.fd))
		case !resume && !t.repairing:
			errs = append(errs, sock.RepairOn(t.fd))
		}
		unix.Close(t.fd)
	}
	d.tcp = nil
	if resume {
		errs = append(errs, d.lock.Unlock())
		d.lock = nil
	}
	return errors.Join(errs...)
}

func (d *dumper) collectFD(pid, pidfd, fd int) (FD, uint64, error) {
	name := "fd/" + strconv.Itoa(fd)
	link, err := d.fs.Readlink(pid, name)
	if err != nil {
		return FD{}, 0, err
	}
	infoB, err := d.fs.Read(pid, "fdinfo/"+strconv.Itoa(fd))
	if err != nil {
		return FD{}, 0, err
	}
	info, err := proc.ParseFDInfo(infoB)
	if err != nil {
		return FD{}, 0, err
	}
	fail := func(what string, err error) (FD, uint64, error) {
		return FD{}, 0, &FDError{PID: pid, FD: fd, What: what, Err: err}
	}
	var st unix.Stat_t
	procPath := fmt.Sprintf("%s/%d/fd/%d", d.fs.Root, pid, fd)
	if err := unix.Stat(procPath, &st); err != nil {
		return fail(link, err)
	}
	ent := FD{FD: fd, Cloexec: info.Flags&oCloexec != 0}
	f := File{Flags: int(info.Flags &^ oCloexec), Pos: info.Pos, Mode: st.Mode}

	// One open file description seen through two descriptors?
	key := [2]uint64{st.Dev, st.Ino}
	for _, ref := range d.files.byIno[key] {
		same, err := kcmpFile(ref.pid, pid, ref.fd, fd)
		if err != nil {
			return fail(link, err)
		}
		if same {
			ent.File = ref.index
			return ent, st.Ino, nil
		}
	}

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		var sfs unix.Statfs_t
		if unix.Statfs(procPath, &sfs) == nil && sfs.Type == mqueueMagic {
			return fail(link+" (POSIX message queue)", ErrUnsupported)
		}
		if st.Nlink == 0 || strings.HasSuffix(link, " (deleted)") {
			f.Kind = FileDeleted
			f.Path = strings.TrimSuffix(link, " (deleted)")
			f.Size = st.Size
			f.Blob = d.files.newBlob(blobSource{path: procPath})
			if strings.HasPrefix(f.Path, "/memfd:") {
				f.Kind = FileMemfd
				seals, err := memfdSeals(pidfd, fd)
				if err != nil {
					return fail(link+" (memfd)", err)
				}
				f.Seals = seals
			}
		} else {
			f.Kind = FileRegular
			f.Path = link
			f.ID = &FileID{Path: link, Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano()}
		}
	case unix.S_IFDIR:
		f.Kind, f.Path = FileDir, link
	case unix.S_IFCHR:
		maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
		isTTY := maj == 136 || maj == 4 || maj == 5 // pts, vt/serial, /dev/tty
		switch {
		case portableDevices[[2]uint32{maj, min}]:
			f.Kind, f.Path = FileDevice, link
		case isTTY && d.opts.ShellJob:
			f.Kind, f.Path = FileTTY, link
		case isTTY:
			return fail(fmt.Sprintf("%s (terminal)", link), ErrTerminal)
		default:
			return fail(fmt.Sprintf("%s (character device)", link), ErrUnsupported)
		}
	case unix.S_IFIFO:
		if strings.HasPrefix(link, "pipe:") {
			f.Kind = FilePipe
			f.Pipe = st.Ino
		} else {
			f.Kind, f.Path = FileFIFO, link
		}
		if seen, ok := d.files.pipeBlob[st.Ino]; ok {
			f.Blob, f.Size = seen.Blob, seen.Size
			break
		}
		data, err := peekPipe(pidfd, fd, procPath, f.Flags)
		if err != nil {
			return fail(link, fmt.Errorf("read buffered bytes: %w", err))
		}
		if len(data) > 0 {
			f.Size = int64(len(data))
			f.Blob = d.files.newBlob(blobSource{data: data})
		}
		d.files.pipeBlob[st.Ino] = f
	case unix.S_IFSOCK:
		dup, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return fail(link, fmt.Errorf("pidfd_getfd: %w", err))
		}
		if sock.CarriedTCP(dup) {
			// Read later, behind the network lock; the duplicate stays open
			// until the process is gone or resumed.
			f.Kind = FileTCP
			d.tcp = append(d.tcp, tcpSocket{fd: dup, file: len(d.files.files), pid: pid, num: fd, link: link})
			break
		}
		if sock.Kind(dup) == "unix" {
			if _, perr := unix.Getpeername(dup); perr == nil {
				c, err := sock.InspectUnix(dup, st.Ino, d.opts.UnixDisconnect)
				unix.Close(dup)
				if err != nil {
					return fail(link+" (unix)", err)
				}
				f.Kind, f.Unix = FileUnixPair, c
				break
			}
		}
		st, err := sock.Inspect(dup)
		kind := sock.Kind(dup)
		unix.Close(dup)
		if err != nil {
			return fail(fmt.Sprintf("%s (%s)", link, kind), err)
		}
		f.Kind, f.Socket = FileSocket, st
	default:
		kind := link
		if strings.HasPrefix(link, "anon_inode:") {
			kind = strings.Trim(strings.TrimPrefix(link, "anon_inode:"), "[]")
		}
		if err := anonFile(&f, kind, info); err != nil {
			return fail(fmt.Sprintf("%s (%s)", link, kind), err)
		}
	}
	ent.File = len(d.files.files)
	d.files.files = append(d.files.files, f)
	d.files.byIno[key] = append(d.files.byIno[key], fileRef{pid: pid, fd: fd, index: ent.File})
	return ent, st.Ino, nil
}

// checkPipes refuses pipes with an end outside the checkpoint: after a
// restore the other side would be gone.
func (t *fileTable) checkPipes(p *Process) error {
	ends := map[uint64][2]bool{}
	for _, f := range t.files {
		if f.Kind != FilePipe {
			continue
		}
		e := ends[f.Pipe]
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			e[1] = true
		} else {
			e[0] = true
		}
		ends[f.Pipe] = e
	}
	for _, fd := range p.FDs {
		f := t.files[fd.File]
		if f.Kind == FilePipe && !(ends[f.Pipe][0] && ends[f.Pipe][1]) {
			return &FDError{PID: p.PID, FD: fd.FD, What: fmt.Sprintf("pipe:[%d]", f.Pipe),
				Err: fmt.Errorf("the other end belongs to a process outside the checkpoint: %w", ErrUnsupported)}
		}
	}
	return nil
}

// checkUnixPairs refuses a connected unix socket whose other end is not
// in the checkpoint (a connection to a daemon, say): it would come back
// talking to nobody.
// With disconnect it is kept as an end whose peer is gone instead.
func (t *fileTable) checkUnixPairs(p *Process, disconnect bool) error {
	ends := map[uint64]bool{}
	for _, f := range t.files {
		if f.Kind == FileUnixPair {
			ends[f.Unix.Ino] = true
		}
	}
	for _, fd := range p.FDs {
		f := t.files[fd.File]
		if f.Kind != FileUnixPair || f.Unix.Peer == 0 || ends[f.Unix.Peer] {
			continue
		}
		if disconnect {
			f.Unix.Peer = 0 // f.Unix is shared with t.files
			continue
		}
		return &FDError{PID: p.PID, FD: fd.FD, What: fmt.Sprintf("socket:[%d] (unix)", f.Unix.Ino),
			Err: fmt.Errorf("connected to a socket outside the checkpoint (--unix-disconnect brings it back closed): %w", ErrUnsupported)}
	}
	return nil
}

// dropBlob forgets a blob whose contents travel another way.
func (t *fileTable) dropBlob(id uint32) {
	for i := range t.blobs {
		if t.blobs[i].id == id {
			t.blobs[i].skip = true
		}
	}
}

func (t *fileTable) newBlob(src blobSource) uint32 {
	src.id = uint32(len(t.blobs) + 1)
	t.blobs = append(t.blobs, src)
	return src.id
}

// writeBlobs streams deleted files' contents and pipe buffers.
func (t *fileTable) writeBlobs(w *image.Writer) error {
	for _, b := range t.blobs {
		if b.skip {
			continue
		}
		if b.path == "" {
			if err := w.WriteBlob(b.id, 0, b.data); err != nil {
				return err
			}
			continue
		}
		if err := copyFileBlob(w, b.id, b.path, b.sparse); err != nil {
			return err
		}
	}
	return nil
}

func copyFileBlob(w *image.Writer, id uint32, path string, sparse bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off uint64
	for {
		if sparse {
			// Skip to the next data extent; past the last one, done.
			data, err := unix.Seek(int(f.Fd()), int64(off), unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				return nil
			}
			if err != nil {
				return err
			}
			off = uint64(data)
		}
		n, err := f.ReadAt(buf, int64(off))
		if n > 0 {
			if werr := w.WriteBlob(id, off, buf[:n]); werr != nil {
				return werr
			}
			off += uint64(n)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// peekPipe returns the bytes buffered in a pipe or FIFO without consuming
// them: tee(2) from a read end into a private pipe.
func peekPipe(pidfd, fd int, procPath string, flags int) ([]byte, error) {
	var rd int
	if flags&unix.O_ACCMODE == unix.O_WRONLY {
		// A write-only end: open the pipe again through /proc for reading.
		r, err := unix.Open(procPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		rd = r
	} else {
		r, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return nil, fmt.Errorf("pidfd_getfd: %w", err)
		}
		rd = r
	}
	defer unix.Close(rd)
	size, err := unix.FcntlInt(uintptr(rd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, err
	}
	n, err := unix.Tee(rd, p[1], size, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		if err == unix.EAGAIN {
			return nil, nil // empty
		}
		return nil, fmt.Errorf("tee: %w", err)
	}
	out := make([]byte, n)
	for got := 0; got < len(out); {
		m, err := unix.Read(p[0], out[got:])
		if err != nil {
			return nil, fmt.Errorf("read tee'd bytes: %w", err)
		}
		got += m
	}
	return out, nil
}

// kcmpFile reports whether fd1 of pid1 and fd2 of pid2 are the same open
// file description (kcmp KCMP_FILE).
func kcmpFile(pid1, pid2, fd1, fd2 int) (bool, error) {
	const kcmpFileType = 0 // KCMP_FILE, include/uapi/linux/kcmp.h
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFileType, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return false, fmt.Errorf("kcmp: %w", e)
	}
	return r == 0, nil
}

// anonFile records the state of the anonymous-inode files relocate knows.
func anonFile(f *File, kind string, info proc.FDInfo) error {
	switch kind {
	case "eventfd":
		e, err := info.Eventfd()
		if err != nil {
			return err
		}
		f.Kind, f.Eventfd = FileEventfd, &EventfdState{Count: e.Count, Semaphore: e.Semaphore}
	case "timerfd":
		t, err := info.Timerfd()
		if err != nil {
			return err
		}
		ns := func(ts proc.Timespec) int64 { return int64(ts.Sec)*1e9 + int64(ts.Nsec) }
		f.Kind = FileTimerfd
		f.Timerfd = &TimerfdState{ClockID: t.ClockID, ValueNS: ns(t.Value), IntervalNS: ns(t.Interval), Ticks: t.Ticks}
	case "signalfd":
		m, err := info.Signalfd()
		if err != nil {
			return err
		}
		f.Kind, f.SigMask = FileSignalfd, m
	case "eventpoll":
		items, err := info.EpollItems()
		if err != nil {
			return err
		}
		f.Kind = FileEpoll
		for _, it := range items {
			f.Epoll = append(f.Epoll, EpollWatch{FD: it.TFD, Events: it.Events, Data: it.Data, Ino: it.Ino})
		}
	case "inotify":
		ws, err := info.InotifyWatches()
		if err != nil {
			return err
		}
		if f.Inotify, err = inotifyWatches(ws); err != nil {
			return err
		}
		f.Kind = FileInotify
	default:
		return ErrUnsupported
	}
	return nil
}

// checkEpolls refuses epoll watches whose descriptor number no longer names
// the watched file (closed or replaced after EPOLL_CTL_ADD while a duplicate
// kept the file alive): such a watch could not be added again.
func (t *fileTable) checkEpolls(p *Process, inodes map[int]uint64) error {
	for _, fd := range p.FDs {
		for _, w := range t.files[fd.File].Epoll {
			if ino, ok := inodes[w.FD]; !ok || ino != w.Ino {
				return &FDError{PID: p.PID, FD: fd.FD, What: "anon_inode:[eventpoll] (epoll)",
					Err: fmt.Errorf("watches a file that fd %d no longer names: %w", w.FD, ErrUnsupported)}
			}
		}
	}
	return nil
}
