package ckpt

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/sock"
)

// blobSink receives a blob's contents while the image streams in: deleted
// files go straight into an unlinked file, pipe buffers into memory.
type blobSink struct {
	f      *os.File
	at     []byte // memory to write into
	data   []byte
	poured bool // pipe buffer written back
}

func (sh *shared) fileForBlob(id uint32) (int, *File) {
	for i := range sh.cp.Files {
		if sh.cp.Files[i].Blob == id {
			return i, &sh.cp.Files[i]
		}
	}
	return -1, nil
}

func (sh *shared) blob(b *image.Blob) error {
	_, f := sh.fileForBlob(b.ID)
	if f == nil {
		return fmt.Errorf("image: blob %d belongs to no file: %w", b.ID, image.ErrCorrupt)
	}
	if b.Offset+uint64(len(b.Data)) > uint64(f.Size) {
		return fmt.Errorf("image: blob %d is larger than its file: %w", b.ID, image.ErrCorrupt)
	}
	sink := sh.blobs[b.ID]
	if sink == nil {
		sink = &blobSink{}
		i, _ := sh.fileForBlob(b.ID)
		switch k := kindOf(f).(type) {
		case blobFiler:
			tf, err := k.blobFile(sh, i, f)
			if err != nil {
				return err
			}
			sink.f = tf
		case blobMemer:
			at, err := k.blobMemory(sh, i, f)
			if err != nil {
				return err
			}
			sink.at = at
		}
		sh.blobs[b.ID] = sink
	}
	if sink.at != nil {
		if uint64(len(sink.at)) < b.Offset+uint64(len(b.Data)) {
			return fmt.Errorf("image: blob %d is larger than its segment: %w", b.ID, image.ErrCorrupt)
		}
		copy(sink.at[b.Offset:], b.Data)
		return nil
	}
	if sink.f != nil {
		_, err := sink.f.WriteAt(b.Data, int64(b.Offset))
		return err
	}
	if b.Offset != uint64(len(sink.data)) {
		return fmt.Errorf("image: blob %d out of order: %w", b.ID, image.ErrCorrupt)
	}
	sink.data = append(sink.data, b.Data...)
	return nil
}

// blobFiler is a kind whose blob streams into a file rather than memory.
type blobFiler interface {
	blobFile(sh *shared, i int, f *File) (*os.File, error)
}

// blobMemer is a kind whose blob streams into memory mapped here (a
// System V segment).
type blobMemer interface {
	blobMemory(sh *shared, i int, f *File) ([]byte, error)
}

func (deletedKind) blobFile(_ *shared, _ int, f *File) (*os.File, error) {
	return createDeleted(f.Path)
}

func (memfdKind) blobFile(_ *shared, _ int, f *File) (*os.File, error) { return createMemfd(f.Path) }

func (shmemKind) blobFile(sh *shared, i int, f *File) (*os.File, error) {
	if _, err := sh.shmemFD(i); err != nil {
		return nil, err
	}
	return sh.blobs[f.Blob].f, nil
}

// createDeleted makes an unlinked file to stand for a file that was deleted
// while open. It is created next to where the original lived, so that it is
// on the same file system and /proc shows a similar name, or in /tmp.
func createDeleted(orig string) (*os.File, error) {
	for _, dir := range []string{filepath.Dir(orig), os.TempDir()} {
		f, err := os.CreateTemp(dir, "."+filepath.Base(orig)+".relocate-")
		if err != nil {
			continue
		}
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
	return nil, fmt.Errorf("cannot create a file to hold deleted %s", orig)
}

// shmemFD returns the restorer's descriptor of the shared memory object
// Files[i], a memfd made on first use with the object's size; its
// contents arrive as the object's blob.
func (sh *shared) shmemFD(i int) (int, error) {
	f := sh.cp.Files[i]
	if sink := sh.blobs[f.Blob]; sink != nil && sink.f != nil {
		return int(sink.f.Fd()), nil
	}
	name := "relocate-shmem"
	if strings.HasPrefix(f.Path, "/memfd:") {
		name = strings.TrimPrefix(f.Path, "/memfd:") // keep a memfd's name
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, f.Size); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("size shared memory object: %w", err)
	}
	sh.blobs[f.Blob] = &blobSink{f: os.NewFile(uintptr(fd), "shmem")}
	return fd, nil
}

// unixEnd returns this end of a socketpair, making the pair (queues
// refilled) when its first end comes up.
func (sh *shared) unixEnd(f File) (int, error) {
	if f.Unix == nil {
		return -1, fmt.Errorf("unix socket without state: %w", image.ErrCorrupt)
	}
	if f.Unix.Peer == 0 {
		return sock.CreateUnixOrphan(f.Unix, f.Flags)
	}
	if fd, ok := sh.unixPending[f.Unix.Ino]; ok {
		delete(sh.unixPending, f.Unix.Ino)
		return fd, nil
	}
	var peer *File
	for i := range sh.cp.Files {
		if o := &sh.cp.Files[i]; o.Kind == FileUnixPair && o.Unix != nil && o.Unix.Ino == f.Unix.Peer && o.Unix.Peer == f.Unix.Ino {
			peer = o
		}
	}
	if peer == nil {
		return -1, fmt.Errorf("image: unix socket %d has no peer %d: %w", f.Unix.Ino, f.Unix.Peer, image.ErrCorrupt)
	}
	fa, fb, err := sock.CreateUnixPair(f.Unix, peer.Unix, f.Flags, peer.Flags)
	if err != nil {
		return -1, err
	}
	if sh.unixPending == nil {
		sh.unixPending = map[uint64]int{}
	}
	sh.unixPending[peer.Unix.Ino] = fb // closeFiles closes it if never taken
	return fa, nil
}

// createMemfd makes a memfd named like the original ("/memfd:NAME"),
// sealable: seals the original did not have are added with the rest.
func createMemfd(path string) (*os.File, error) {
	name := strings.TrimPrefix(path, "/memfd:")
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// reopenAt opens a new description of the file behind fd, with flags,
// at offset pos.
func reopenAt(fd, flags int, pos int64) (int, error) {
	nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flags&^unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, err
	}
	if _, err := unix.Seek(nfd, pos, 0); err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}

// openFiles creates every file description of the image in the restorer.
func (sh *shared) openFiles() error {
	sh.local = make([]int, len(sh.cp.Files))
	sh.pipes = map[uint64][2]int{}
	for i := range sh.cp.Files {
		f := &sh.cp.Files[i]
		sh.holder = sh.holderCreds(i)
		fd, err := kindOf(f).open(sh, f)
		if err != nil {
			pid, num := sh.fdOf(i)
			return &FDError{PID: pid, FD: num, What: f.Describe(), Err: err}
		}
		sh.toClose = append(sh.toClose, fd)
		sh.local[i] = fd
	}
	return nil
}

// fdOf names a descriptor that refers to file, for error messages.
func (sh *shared) fdOf(file int) (pid, fd int) {
	for _, p := range sh.cp.Processes {
		for _, d := range p.FDs {
			if d.File == file {
				return p.PID, d.FD
			}
		}
	}
	return sh.cp.Root, -1
}

const openMask = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DIRECTORY | unix.O_NOFOLLOW |
	unix.O_DSYNC | unix.O_SYNC | unix.O_NOATIME | unix.O_LARGEFILE | unix.O_PATH | unix.O_DIRECT

// openFlags are the flags to open f again with.
func openFlags(f *File) int { return f.Flags&openMask | unix.O_CLOEXEC }

// reopenPath opens f again by its path, with flags, at offset pos, as the
// process holding it (regular files, directories and devices): the path
// is resolved without symbolic links and must still lead to the file the
// dump saw (openChecked).
func (sh *shared) reopenPath(f *File, typ uint32, flags int, pos int64) (int, error) {
	fd, err := openChecked(&sh.holder, f.Path, flags, sh.expectFile(f, typ))
	if err != nil {
		return -1, err
	}
	if pos != 0 {
		if _, err := unix.Seek(fd, pos, 0); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

func (regularKind) open(sh *shared, f *File) (int, error) {
	return sh.reopenPath(f, unix.S_IFREG, openFlags(f), f.Pos)
}

func (dirKind) open(sh *shared, f *File) (int, error) {
	return sh.reopenPath(f, unix.S_IFDIR, openFlags(f), 0)
}

func (deviceKind) open(sh *shared, f *File) (int, error) {
	return sh.reopenPath(f, unix.S_IFCHR, openFlags(f), 0)
}

func (unixPairKind) open(sh *shared, f *File) (int, error) { return sh.unixEnd(*f) }

// open: mapped, not open. A descriptor of the object keeps it alive and
// is closed with the others.
func (shmemKind) open(sh *shared, f *File) (int, error) {
	sink := sh.blobs[f.Blob]
	if sink == nil || sink.f == nil {
		return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	return unix.Dup(int(sink.f.Fd()))
}

func (memfdKind) open(sh *shared, f *File) (int, error) {
	var src int
	if f.Obj != 0 {
		obj, err := sh.shmemFD(f.Obj - 1)
		if err != nil {
			return -1, err
		}
		src = obj
	} else {
		sink := sh.blobs[f.Blob]
		if sink == nil {
			if f.Size != 0 {
				return -1, fmt.Errorf("contents missing from the image: %w", image.ErrCorrupt)
			}
			mf, err := createMemfd(f.Path)
			if err != nil {
				return -1, err
			}
			sink = &blobSink{f: mf}
			sh.blobs[f.Blob] = sink
		}
		src = int(sink.f.Fd())
	}
	fd, err := reopenAt(src, openFlags(f), f.Pos)
	if err != nil {
		return -1, err
	}
	// Seals last, once the contents are in (F_SEAL_WRITE would stop
	// them); all at once, as F_SEAL_SEAL forbids more.
	if cur, _ := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); f.Seals&^cur != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, f.Seals&^cur); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("memfd seals %#x: %w", f.Seals, err)
		}
	}
	return fd, nil
}

func (deletedKind) open(sh *shared, f *File) (int, error) {
	if f.Obj != 0 {
		// Also mapped shared: a new description of the same object.
		obj, err := sh.shmemFD(f.Obj - 1)
		if err != nil {
			return -1, err
		}
		return reopenAt(obj, openFlags(f), f.Pos)
	}
	sink := sh.blobs[f.Blob]
	var src *os.File
	if sink != nil {
		src = sink.f
	} else if f.Size == 0 {
		tf, err := createDeleted(f.Path)
		if err != nil {
			return -1, err
		}
		sh.blobs[f.Blob] = &blobSink{f: tf}
		src = tf
	} else {
		return -1, fmt.Errorf("contents missing from the image: %w", image.ErrCorrupt)
	}
	return reopenAt(int(src.Fd()), openFlags(f), f.Pos)
}

func (pipeKind) open(sh *shared, f *File) (int, error) {
	ends, ok := sh.pipes[f.Pipe]
	if !ok {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return -1, err
		}
		sh.toClose = append(sh.toClose, p[0], p[1])
		if err := setPipeSize(p[1], f.PipeSize); err != nil {
			return -1, err
		}
		ends = p
		sh.pipes[f.Pipe] = ends
	}
	end := ends[0]
	if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
		end = ends[1]
	}
	if err := sh.fillPipe(ends[1], *f); err != nil {
		return -1, err
	}
	// A new description per end (reopen through /proc) so that the
	// status flags of the two ends stay independent.
	return unix.Open(fmt.Sprintf("/proc/self/fd/%d", end), openFlags(f), 0)
}

func (pipeKind) describe(f *File) string { return fmt.Sprintf("pipe:[%d]", f.Pipe) }

func (fifoKind) open(sh *shared, f *File) (int, error) {
	// Hold the FIFO open for reading and writing, so opening either end
	// neither blocks nor fails.
	// The buffered bytes go only into a FIFO: checked before opening.
	holder, err := openChecked(nil, f.Path, unix.O_RDWR|unix.O_NONBLOCK, sh.expectFile(f, unix.S_IFIFO))
	if err != nil {
		return -1, err
	}
	sh.toClose = append(sh.toClose, holder)
	if err := setPipeSize(holder, f.PipeSize); err != nil {
		return -1, err
	}
	fd, err := reopenAs(sh.holder, holder, openFlags(f)|unix.O_NONBLOCK)
	if err != nil {
		return -1, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, f.Flags&openMask&^unix.O_ACCMODE); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := sh.fillPipe(holder, *f); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (eventfdKind) open(_ *shared, f *File) (int, error) {
	if f.Eventfd == nil {
		return -1, fmt.Errorf("eventfd without state: %w", image.ErrCorrupt)
	}
	efdFlags := unix.EFD_CLOEXEC | f.Flags&unix.O_NONBLOCK
	if f.Eventfd.Semaphore {
		efdFlags |= unix.EFD_SEMAPHORE
	}
	fd, err := unix.Eventfd(0, efdFlags)
	if err != nil {
		return -1, err
	}
	if c := f.Eventfd.Count; c > 0 {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, c)
		if _, err := unix.Write(fd, b); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("set eventfd counter: %w", err)
		}
	}
	return fd, nil
}

func (signalfdKind) open(_ *shared, f *File) (int, error) {
	return unix.Signalfd(-1, &unix.Sigset_t{Val: [16]uint64{f.SigMask}}, unix.SFD_CLOEXEC|f.Flags&unix.O_NONBLOCK)
}

func (timerfdKind) open(_ *shared, f *File) (int, error) {
	t := f.Timerfd
	if t == nil {
		return -1, fmt.Errorf("timerfd without state: %w", image.ErrCorrupt)
	}
	fd, err := unix.TimerfdCreate(t.ClockID, unix.TFD_CLOEXEC|f.Flags&unix.O_NONBLOCK)
	if err != nil {
		return -1, err
	}
	if t.ValueNS > 0 {
		its := unix.ItimerSpec{Interval: unix.NsecToTimespec(t.IntervalNS), Value: unix.NsecToTimespec(t.ValueNS)}
		if err := unix.TimerfdSettime(fd, 0, &its, nil); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if t.Ticks > 0 {
		if err := setTimerfdTicks(fd, t.Ticks); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

// open: the restorer's controlling terminal stands in for the one the
// process had (CRIU's --shell-job semantics).
func (ttyKind) open(_ *shared, f *File) (int, error) {
	fd, err := unix.Open(restorerTerminal(), openFlags(f)|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, fmt.Errorf("the image holds a terminal (dumped with --shell-job) and relocate has none to give it: run restore from a terminal: %w", err)
	}
	return fd, nil
}

func (tcpKind) open(sh *shared, f *File) (int, error) {
	if f.TCP == nil {
		return -1, fmt.Errorf("tcp connection without state: %w", image.ErrCorrupt)
	}
	fd, err := sock.CreateTCP(f.TCP, f.Flags)
	if err != nil {
		return -1, err
	}
	sh.tcp = append(sh.tcp, restoredTCP{fd: fd, c: f.TCP})
	return fd, nil
}

func (tcpKind) describe(f *File) string {
	if f.TCP == nil {
		return f.Kind
	}
	return f.TCP.String()
}

func (tcpKind) addresses(f *File) []string {
	if f.TCP == nil {
		return nil
	}
	return []string{f.TCP.Local}
}

func (socketKind) open(sh *shared, f *File) (int, error) {
	if f.Socket == nil {
		return -1, fmt.Errorf("socket without state: %w", image.ErrCorrupt)
	}
	if f.Socket.Family == unix.AF_UNIX {
		return sh.createUnixSocket(*f)
	}
	return sock.Create(f.Socket, f.Flags)
}

func (socketKind) describe(f *File) string {
	if f.Socket == nil {
		return f.Kind
	}
	return f.Socket.String()
}

func (socketKind) addresses(f *File) []string {
	if s := f.Socket; s != nil && (s.Family == unix.AF_INET || s.Family == unix.AF_INET6) && s.Addr != "" {
		return []string{s.Addr}
	}
	return nil
}

func (unixPairKind) describe(f *File) string {
	if f.Unix == nil {
		return f.Kind
	}
	return f.Unix.String()
}

func (inotifyKind) open(sh *shared, f *File) (int, error) {
	var fd int
	err := asProcess(sh.holder, func() (err error) {
		fd, err = newInotify(f.Inotify, f.Flags)
		return err
	})
	return fd, err
}

// open: empty here. The watches are added from inside the process once
// its descriptors have their numbers (epoll keys on the number).
func (epollKind) open(*shared, *File) (int, error) { return unix.EpollCreate1(unix.EPOLL_CLOEXEC) }

// finish re-adds the epoll watches from inside the process.
func (epollKind) finish(rs *restorer, L *remote, fd FD, f *File) error {
	for _, w := range f.Epoll {
		addr, err := L.poke(0, epollEvent(w.Events, w.Data))
		if err != nil {
			return err
		}
		if _, err := L.call(unix.SYS_EPOLL_CTL, uint64(fd.FD), unix.EPOLL_CTL_ADD, uint64(w.FD), addr); err != nil {
			return &FDError{PID: rs.p.PID, FD: fd.FD, What: "epoll", Err: fmt.Errorf("watch fd %d: %w", w.FD, err)}
		}
	}
	return nil
}

// finishFiles runs each file's finish step once per process, now that
// all its descriptors have their numbers.
func (rs *restorer) finishFiles(L *remote) error {
	done := map[int]bool{}
	for _, fd := range rs.p.FDs {
		if done[fd.File] {
			continue
		}
		done[fd.File] = true
		f := &rs.cp.Files[fd.File]
		if err := kindOf(f).finish(rs, L, fd, f); err != nil {
			return err
		}
	}
	return nil
}

// setPipeSize gives a pipe the capacity it had (0: unknown, left as is).
func setPipeSize(fd, size int) error {
	const maxPipeSize = 1 << 30
	if size <= 0 {
		return nil
	}
	if size > maxPipeSize {
		return fmt.Errorf("image: pipe size %d: %w", size, image.ErrCorrupt)
	}
	if cur, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0); err == nil && cur == size {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, size); err != nil {
		return fmt.Errorf("pipe size %d (F_SETPIPE_SZ): %w", size, err)
	}
	return nil
}

// fillPipe writes a pipe's saved buffer into its write end, once.
func (sh *shared) fillPipe(w int, f File) error {
	if f.Blob == 0 {
		return nil
	}
	sink := sh.blobs[f.Blob]
	if sink == nil || int64(len(sink.data)) != f.Size {
		return fmt.Errorf("buffered bytes missing from the image: %w", image.ErrCorrupt)
	}
	if sink.poured {
		return nil
	}
	sink.poured = true
	if size, err := unix.FcntlInt(uintptr(w), unix.F_GETPIPE_SZ, 0); err == nil && size < len(sink.data) {
		if _, err := unix.FcntlInt(uintptr(w), unix.F_SETPIPE_SZ, len(sink.data)); err != nil {
			return err
		}
	}
	for data := sink.data; len(data) > 0; {
		n, err := unix.Write(w, data)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// installFiles gives the process its descriptors at their numbers.
func (rs *restorer) installFiles(L *remote, pidfd int) error {
	local := rs.local
	// Park the pidfd above every descriptor number the process uses (and
	// above where it is now: dup3 onto itself fails).
	park := uint64(pidfd + 1)
	for _, fd := range rs.p.FDs {
		park = max(park, uint64(fd.FD)+1)
	}
	var nofile uint64 = 1 << 20
	for _, l := range rs.p.Rlimits {
		if l.Resource == unix.RLIMIT_NOFILE {
			nofile = max(l.Max, park+1)
		}
	}
	// Room for every number while installing; the real limits come later.
	if err := unix.Prlimit(rs.host, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: nofile, Max: nofile}, nil); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	if _, err := L.call(unix.SYS_DUP3, uint64(pidfd), park, unix.O_CLOEXEC); err != nil {
		return err
	}
	if _, err := L.call(unix.SYS_CLOSE, uint64(pidfd)); err != nil {
		return err
	}
	for _, fd := range rs.p.FDs {
		t, err := L.call(unix.SYS_PIDFD_GETFD, park, uint64(local[fd.File]), 0)
		if err != nil {
			return &FDError{PID: rs.p.PID, FD: fd.FD, What: rs.cp.Files[fd.File].Describe(), Err: err}
		}
		flags := uint64(0)
		if fd.Cloexec {
			flags = unix.O_CLOEXEC
		}
		if t == uint64(fd.FD) {
			if !fd.Cloexec {
				if _, err := L.call(unix.SYS_FCNTL, t, unix.F_SETFD, 0); err != nil {
					return err
				}
			}
			continue
		}
		if _, err := L.call(unix.SYS_DUP3, t, uint64(fd.FD), flags); err != nil {
			return &FDError{PID: rs.p.PID, FD: fd.FD, What: rs.cp.Files[fd.File].Describe(), Err: err}
		}
		if _, err := L.call(unix.SYS_CLOSE, t); err != nil {
			return err
		}
	}
	if _, err := L.call(unix.SYS_CLOSE, park); err != nil {
		return err
	}
	return rs.finishFiles(L)
}

// missingCPUFlags lists instruction-set features the image's CPU had and
// this one lacks. Only flags that user space can act on are compared.
func missingCPUFlags(image, here []string) []string {
	have := map[string]bool{}
	for _, f := range here {
		have[f] = true
	}
	var out []string
	for _, f := range image {
		if have[f] || !userVisibleFlag(f) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// restorerTerminal names the terminal relocate itself runs on: the device
// behind a standard descriptor that is a terminal, else /dev/tty.
func restorerTerminal() string {
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			continue
		}
		if p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil && strings.HasPrefix(p, "/dev/") {
			return p
		}
	}
	return "/dev/tty"
}

// restoredTCP is a connection rebuilt in repair mode, to finish at resume.
type restoredTCP struct {
	fd int
	c  *sock.TCPConn
}

// finishNet brings the rebuilt connections to life and lifts the lock the
// dump left. Called just before the process resumes.
func (sh *shared) finishNet() error {
	if sh.opts.TCPClose {
		// The resets must get out: lift the locks first.
		for _, name := range sh.cp.NetLocks {
			if err := sock.UnlockTable(name); err != nil {
				return err
			}
		}
	}
	for _, t := range sh.tcp {
		finish := sock.FinishTCP
		if sh.opts.TCPClose {
			finish = func(fd int, _ *sock.TCPConn) error { return sock.ResetTCP(fd) }
		}
		if err := finish(t.fd, t.c); err != nil {
			return fmt.Errorf("tcp %s -> %s: %w", t.c.Local, t.c.Peer, err)
		}
	}
	sh.live, sh.tcp = sh.tcp, nil
	if sh.hold {
		// The locks stay until the tree resumes (Prepared.Resume), and
		// are ours to remove if it is aborted.
		return nil
	}
	sh.locks = nil // removed below, with the dump's
	for _, name := range sh.cp.NetLocks {
		if err := sock.UnlockTable(name); err != nil {
			return err
		}
	}
	return sh.listenLock.Unlock()
}
