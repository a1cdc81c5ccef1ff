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
	// ends caches pipeEnds once the tree is collected.
	ends map[uint64][2]bool
	// sysv are the System V shared memory segments the tree attaches.
	sysv sysvSegments
	// tree holds the PIDs of the tree, once every process is collected.
	tree map[int]bool
	// mqRead marks the POSIX message queues (by inode) whose messages
	// are read; mqOutside maps the files (dev, ino) that processes
	// outside the tree hold open to one such process (mqueueOutside).
	mqRead    map[uint64]bool
	mqOutside map[[2]uint64]int
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
	// write, if set, writes the contents itself (a System V segment).
	write func(w *image.Writer, id uint32) error
}

func newFileTable() *fileTable {
	return &fileTable{byIno: map[[2]uint64][]fileRef{}, pipeBlob: map[uint64]File{}, shmem: map[[2]uint64]int{},
		mqRead: map[uint64]bool{}}
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
	p := &fdProbe{d: d, pid: pid, fd: fd, pidfd: pidfd, link: link, info: info,
		procPath: fmt.Sprintf("%s/%d/fd/%d", d.fs.Root, pid, fd)}
	if err := unix.Stat(p.procPath, &p.st); err != nil {
		return FD{}, 0, p.fail("", err)
	}
	st := &p.st
	ent := FD{FD: fd, Cloexec: info.Flags&oCloexec != 0}
	f := File{Flags: int(info.Flags &^ oCloexec), Pos: info.Pos, Mode: st.Mode}

	// One open file description seen through two descriptors?
	key := [2]uint64{st.Dev, st.Ino}
	for _, ref := range d.files.byIno[key] {
		same, err := kcmpFile(ref.pid, pid, ref.fd, fd)
		if err != nil {
			return FD{}, 0, p.fail("", err)
		}
		if same {
			ent.File = ref.index
			return ent, st.Ino, nil
		}
	}
	claimed := false
	for _, k := range dumpOrder {
		if claimed, err = k.dump(p, &f); err != nil {
			return FD{}, 0, err
		}
		if claimed {
			break
		}
	}
	if !claimed {
		return FD{}, 0, p.unclaimed()
	}
	ent.File = len(d.files.files)
	d.files.files = append(d.files.files, f)
	d.files.byIno[key] = append(d.files.byIno[key], fileRef{pid: pid, fd: fd, index: ent.File})
	return ent, st.Ino, nil
}

func (regularKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.fileType() != unix.S_IFREG {
		return false, nil
	}
	f.Kind, f.Path = FileRegular, p.link
	f.ID = &FileID{Path: p.link, Dev: p.st.Dev, Ino: p.st.Ino, Size: p.st.Size, Mtime: p.st.Mtim.Nano()}
	return true, nil
}

// isDeleted reports a regular file unlinked while open (a memfd too).
func (p *fdProbe) isDeleted() bool {
	return p.fileType() == unix.S_IFREG && (p.st.Nlink == 0 || strings.HasSuffix(p.link, " (deleted)"))
}

func (deletedKind) dump(p *fdProbe, f *File) (bool, error) {
	if !p.isDeleted() || strings.HasPrefix(p.link, "/memfd:") {
		return false, nil
	}
	f.Kind = FileDeleted
	f.Path = strings.TrimSuffix(p.link, " (deleted)")
	f.Size = p.st.Size
	f.Blob = p.d.files.newBlob(blobSource{path: p.procPath})
	return true, nil
}

func (memfdKind) dump(p *fdProbe, f *File) (bool, error) {
	if !p.isDeleted() || !strings.HasPrefix(p.link, "/memfd:") {
		return false, nil
	}
	f.Kind = FileMemfd
	f.Path = strings.TrimSuffix(p.link, " (deleted)")
	f.Size = p.st.Size
	f.Blob = p.d.files.newBlob(blobSource{path: p.procPath})
	seals, err := memfdSeals(p.pidfd, p.fd)
	if err != nil {
		return false, p.fail("memfd", err)
	}
	f.Seals = seals
	return true, nil
}

func (dirKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.fileType() != unix.S_IFDIR {
		return false, nil
	}
	f.Kind, f.Path = FileDir, p.link
	return true, nil
}

// devNumbers are the major and minor numbers of a character device.
func (p *fdProbe) devNumbers() (uint32, uint32, bool) {
	if p.fileType() != unix.S_IFCHR {
		return 0, 0, false
	}
	return unix.Major(p.st.Rdev), unix.Minor(p.st.Rdev), true
}

func (deviceKind) dump(p *fdProbe, f *File) (bool, error) {
	maj, min, ok := p.devNumbers()
	if !ok || !portableDevices[[2]uint32{maj, min}] {
		return false, nil
	}
	f.Kind, f.Path = FileDevice, p.link
	return true, nil
}

func (ttyKind) dump(p *fdProbe, f *File) (bool, error) {
	maj, _, ok := p.devNumbers()
	if !ok || !(maj == 136 || maj == 4 || maj == 5) { // pts, vt/serial, /dev/tty
		return false, nil
	}
	if !p.d.opts.ShellJob {
		return false, p.fail("terminal", ErrTerminal)
	}
	f.Kind, f.Path = FileTTY, p.link
	return true, nil
}

func (pipeKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.fileType() != unix.S_IFIFO || !strings.HasPrefix(p.link, "pipe:") {
		return false, nil
	}
	f.Kind, f.Pipe = FilePipe, p.st.Ino
	return true, p.pipeBuffer(f)
}

func (fifoKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.fileType() != unix.S_IFIFO || strings.HasPrefix(p.link, "pipe:") {
		return false, nil
	}
	f.Kind, f.Path = FileFIFO, p.link
	return true, p.pipeBuffer(f)
}

// pipeBuffer records the bytes buffered in a pipe or FIFO, once for all
// its ends.
func (p *fdProbe) pipeBuffer(f *File) error {
	t := p.d.files
	if seen, ok := t.pipeBlob[p.st.Ino]; ok {
		f.Blob, f.Size, f.PipeSize = seen.Blob, seen.Size, seen.PipeSize
		return nil
	}
	data, size, err := peekPipe(p.pidfd, p.fd, p.procPath, f.Flags)
	if err != nil {
		return p.fail("", fmt.Errorf("read buffered bytes: %w", err))
	}
	f.PipeSize = size
	if len(data) > 0 {
		f.Size = int64(len(data))
		f.Blob = t.newBlob(blobSource{data: data})
	}
	t.pipeBlob[p.st.Ino] = *f
	return nil
}

// socketDup returns a duplicate of a socket descriptor, -1 for any other
// file.
func (p *fdProbe) socketDup() (int, error) {
	if p.fileType() != unix.S_IFSOCK {
		return -1, nil
	}
	dup, err := p.getfd()
	if err != nil {
		return -1, p.fail("", err)
	}
	return dup, nil
}

func (tcpKind) dump(p *fdProbe, f *File) (bool, error) {
	dup, err := p.socketDup()
	if dup < 0 {
		return false, err
	}
	if !sock.CarriedTCP(dup) {
		unix.Close(dup)
		return false, nil
	}
	// Read later, behind the network lock; the duplicate stays open
	// until the process is gone or resumed.
	f.Kind = FileTCP
	p.d.tcp = append(p.d.tcp, tcpSocket{fd: dup, file: len(p.d.files.files), pid: p.pid, num: p.fd, link: p.link})
	return true, nil
}

func (unixPairKind) dump(p *fdProbe, f *File) (bool, error) {
	dup, err := p.socketDup()
	if dup < 0 {
		return false, err
	}
	defer unix.Close(dup)
	if sock.Kind(dup) != "unix" {
		return false, nil
	}
	if _, err := unix.Getpeername(dup); err != nil {
		return false, nil
	}
	c, err := sock.InspectUnix(dup, p.st.Ino, p.d.opts.UnixDisconnect)
	if err != nil {
		return false, p.fail("unix", err)
	}
	f.Kind, f.Unix = FileUnixPair, c
	return true, nil
}

func (socketKind) dump(p *fdProbe, f *File) (bool, error) {
	dup, err := p.socketDup()
	if dup < 0 {
		return false, err
	}
	defer unix.Close(dup)
	st, err := sock.Inspect(dup)
	if err != nil {
		return false, p.fail(sock.Kind(dup), err)
	}
	f.Kind, f.Socket = FileSocket, st
	return true, nil
}

func (eventfdKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.anonKind() != "eventfd" {
		return false, nil
	}
	e, err := p.info.Eventfd()
	if err != nil {
		return false, p.fail("eventfd", err)
	}
	f.Kind, f.Eventfd = FileEventfd, &EventfdState{Count: e.Count, Semaphore: e.Semaphore}
	return true, nil
}

func (timerfdKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.anonKind() != "timerfd" {
		return false, nil
	}
	t, err := p.info.Timerfd()
	if err != nil {
		return false, p.fail("timerfd", err)
	}
	ns := func(ts proc.Timespec) int64 { return int64(ts.Sec)*1e9 + int64(ts.Nsec) }
	f.Kind = FileTimerfd
	f.Timerfd = &TimerfdState{ClockID: t.ClockID, ValueNS: ns(t.Value), IntervalNS: ns(t.Interval), Ticks: t.Ticks}
	return true, nil
}

func (signalfdKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.anonKind() != "signalfd" {
		return false, nil
	}
	m, err := p.info.Signalfd()
	if err != nil {
		return false, p.fail("signalfd", err)
	}
	f.Kind, f.SigMask = FileSignalfd, m
	return true, nil
}

func (epollKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.anonKind() != "eventpoll" {
		return false, nil
	}
	items, err := p.info.EpollItems()
	if err != nil {
		return false, p.fail("eventpoll", err)
	}
	f.Kind = FileEpoll
	for _, it := range items {
		f.Epoll = append(f.Epoll, EpollWatch{FD: it.TFD, Events: it.Events, Data: it.Data, Ino: it.Ino})
	}
	return true, nil
}

func (inotifyKind) dump(p *fdProbe, f *File) (bool, error) {
	if p.anonKind() != "inotify" {
		return false, nil
	}
	ws, err := p.info.InotifyWatches()
	if err != nil {
		return false, p.fail("inotify", err)
	}
	if f.Inotify, err = inotifyWatches(ws); err != nil {
		return false, p.fail("inotify", err)
	}
	f.Kind = FileInotify
	return true, nil
}

// inTree settles, for every descriptor of p, what needs the whole tree.
func (t *fileTable) inTree(opts DumpOptions, p *Process) error {
	for _, fd := range p.FDs {
		f := &t.files[fd.File]
		if err := kindOf(f).inTree(t, opts, p, fd, f); err != nil {
			return err
		}
	}
	return nil
}

// pipeEnds reports, for each pipe, whether the tree holds a read end and
// a write end.
func (t *fileTable) pipeEnds() map[uint64][2]bool {
	if t.ends != nil {
		return t.ends
	}
	ends := map[uint64][2]bool{}
	t.ends = ends
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
	return ends
}

// inTree records a pipe whose other end belongs to a process outside
// the checkpoint as external: that side stays behind, and restore
// connects this end to what the user names.
func (pipeKind) inTree(t *fileTable, _ DumpOptions, _ *Process, _ FD, f *File) error {
	if e := t.pipeEnds()[f.Pipe]; !(e[0] && e[1]) {
		t.makeExternal(f, fmt.Sprintf("pipe:[%d]", f.Pipe))
	}
	return nil
}

// inTree refuses a connected unix socket whose other end is not in the
// checkpoint (a connection to a daemon, say): it would come back talking
// to nobody. With --unix-disconnect it is kept as an end whose peer is
// gone instead.
func (unixPairKind) inTree(t *fileTable, opts DumpOptions, p *Process, fd FD, f *File) error {
	if f.Unix.Peer == 0 {
		return nil
	}
	for _, o := range t.files {
		if o.Kind == FileUnixPair && o.Unix.Ino == f.Unix.Peer {
			return nil
		}
	}
	if f.Unix.Type == unix.SOCK_STREAM && f.Unix.Listener == journalStdout() {
		// A service's stdout or stderr to journald: reconnected at
		// restore, under the same identifier.
		js := readJournalStream(f.Unix.Peer, p.Comm)
		t.makeExternal(f, fmt.Sprintf("socket:[%d] to the journal as %q", f.Unix.Ino, js.Identifier))
		f.External.Journal = js
		return nil
	}
	if opts.UnixDisconnect {
		f.Unix.Peer = 0 // f.Unix is shared with t.files
		return nil
	}
	if f.Unix.Listener != "" {
		return &FDError{PID: p.PID, FD: fd.FD, What: fmt.Sprintf("socket:[%d] (unix)", f.Unix.Ino),
			Err: fmt.Errorf("connected through %s to a socket outside the checkpoint (--unix-disconnect brings it back closed): %w", f.Unix.Listener, ErrUnsupported)}
	}
	return &FDError{PID: p.PID, FD: fd.FD, What: fmt.Sprintf("socket:[%d] (unix)", f.Unix.Ino),
		Err: fmt.Errorf("connected to a socket outside the checkpoint (--unix-disconnect brings it back closed): %w", ErrUnsupported)}
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
		if b.write != nil {
			if err := b.write(w, b.id); err != nil {
				return err
			}
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
// them (tee(2) from a read end into a private pipe), and its capacity.
func peekPipe(pidfd, fd int, procPath string, flags int) ([]byte, int, error) {
	var rd int
	if flags&unix.O_ACCMODE == unix.O_WRONLY {
		// A write-only end: open the pipe again through /proc for reading.
		r, err := unix.Open(procPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, 0, err
		}
		rd = r
	} else {
		r, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return nil, 0, fmt.Errorf("pidfd_getfd: %w", err)
		}
		rd = r
	}
	defer unix.Close(rd)
	size, err := unix.FcntlInt(uintptr(rd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, 0, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, 0, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, 0, err
	}
	n, err := unix.Tee(rd, p[1], size, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		if err == unix.EAGAIN {
			return nil, size, nil // empty
		}
		return nil, 0, fmt.Errorf("tee: %w", err)
	}
	out := make([]byte, n)
	for got := 0; got < len(out); {
		m, err := unix.Read(p[0], out[got:])
		if err != nil {
			return nil, 0, fmt.Errorf("read tee'd bytes: %w", err)
		}
		got += m
	}
	return out, size, nil
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
