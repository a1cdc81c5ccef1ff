package ckpt

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/proc"
)

// fileKind is everything relocate knows about one kind of open file (one
// File.Kind): how to record it from a frozen process, how to make it
// again in the restorer, what to do once the process holds all its
// descriptors, and how to name it. The engine never switches over kinds;
// it asks the kind (CRIU's file_desc_ops has this shape). A kind embeds
// baseKind for the steps it has nothing to do in.
type fileKind interface {
	// dump records the descriptor p in f if it is of this kind, and
	// reports false, touching nothing, if it is not.
	dump(p *fdProbe, f *File) (bool, error)
	// inTree runs once every process of the tree is collected, for each
	// descriptor of process p: what needs the whole tree (the other end
	// of a pipe or a socket) is settled there.
	inTree(t *fileTable, opts DumpOptions, p *Process, fd FD, f *File) error
	// open makes the open file description in the restorer and returns
	// the restorer's descriptor of it.
	open(sh *shared, f *File) (int, error)
	// finish runs once per process and file, from inside the process,
	// once all its descriptors have their numbers.
	finish(rs *restorer, L *remote, fd FD, f *File) error
	// describe names the file for errors and relocate inspect.
	describe(f *File) string
	// addresses lists the local "ip:port" the file holds: what a
	// migration's hooks move between hosts.
	addresses(f *File) []string
}

// fileKinds is the registry: every File.Kind and its driver.
var fileKinds = map[string]fileKind{
	FileRegular:  regularKind{},
	FileDeleted:  deletedKind{},
	FileMemfd:    memfdKind{},
	FileDir:      dirKind{},
	FileDevice:   deviceKind{},
	FileTTY:      ttyKind{},
	FilePipe:     pipeKind{},
	FileFIFO:     fifoKind{},
	FileEventfd:  eventfdKind{},
	FileTimerfd:  timerfdKind{},
	FileSignalfd: signalfdKind{},
	FileEpoll:    epollKind{},
	FileInotify:  inotifyKind{},
	FileTCP:      tcpKind{},
	FileUnixPair: unixPairKind{},
	FileSocket:   socketKind{},
	FileShmem:    shmemKind{},
	FileExternal: externalKind{},
	FileSysVShm:  sysvShmKind{},
	FilePTMX:     ptmxKind{},
	FilePTS:      ptsKind{},
	FileSysVMsg:  sysvMsgKind{},
	FileSysVSem:  sysvSemKind{},
	FileMQueue:   mqueueKind{},
}

// dumpOrder is the order in which kinds are offered a descriptor: the
// more particular first (a memfd before a deleted file, a connection
// before a socket).
var dumpOrder = []fileKind{
	mqueueKind{}, memfdKind{}, deletedKind{}, regularKind{}, dirKind{},
	deviceKind{}, ptmxKind{}, ptsKind{}, ttyKind{},
	pipeKind{}, fifoKind{},
	tcpKind{}, unixPairKind{}, socketKind{},
	eventfdKind{}, timerfdKind{}, signalfdKind{}, epollKind{}, inotifyKind{},
}

// kindOf returns the driver of f's kind; an unknown kind (an image from
// a newer relocate, or a corrupt one) gets one that refuses everything.
func kindOf(f *File) fileKind {
	if k, ok := fileKinds[f.Kind]; ok {
		return k
	}
	return unknownKind{}
}

// Describe names the file in a line, for errors and relocate inspect.
func (f *File) Describe() string { return kindOf(f).describe(f) }

// baseKind is the default of every step: nothing to settle, nothing to
// finish, named by its path, no addresses.
type baseKind struct{}

func (baseKind) inTree(*fileTable, DumpOptions, *Process, FD, *File) error { return nil }
func (baseKind) finish(*restorer, *remote, FD, *File) error                { return nil }
func (baseKind) addresses(*File) []string                                  { return nil }
func (baseKind) describe(f *File) string {
	if f.Path != "" {
		return f.Path
	}
	return f.Kind
}

// unknownKind stands for a kind this relocate does not know.
type unknownKind struct{ baseKind }

func (unknownKind) dump(*fdProbe, *File) (bool, error) { return false, nil }
func (unknownKind) open(_ *shared, f *File) (int, error) {
	return -1, fmt.Errorf("file kind %q: %w", f.Kind, ErrUnsupported)
}

// fdProbe is one descriptor of a frozen process being dumped, with what
// every kind looks at to recognise it.
type fdProbe struct {
	d        *dumper
	pid, fd  int
	pidfd    int // of the process
	link     string
	procPath string // /proc/PID/fd/N
	info     proc.FDInfo
	st       unix.Stat_t
}

func (p *fdProbe) fileType() uint32 { return p.st.Mode & unix.S_IFMT }

// anonKind is the name of an anonymous-inode file ("eventfd" for
// anon_inode:[eventfd]), "" for any other file.
func (p *fdProbe) anonKind() string {
	if !strings.HasPrefix(p.link, "anon_inode:") {
		return ""
	}
	return strings.Trim(strings.TrimPrefix(p.link, "anon_inode:"), "[]")
}

// getfd returns a duplicate of the process's descriptor (the same open
// file description); the caller closes it.
func (p *fdProbe) getfd() (int, error) {
	dup, err := unix.PidfdGetfd(p.pidfd, p.fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	return dup, nil
}

// fail is the error for this descriptor; kind, if set, follows the link
// in parentheses.
func (p *fdProbe) fail(kind string, err error) error {
	what := p.link
	if kind != "" {
		what = fmt.Sprintf("%s (%s)", p.link, kind)
	}
	return &FDError{PID: p.pid, FD: p.fd, What: what, Err: err}
}

// unclaimed is the error for a descriptor no kind takes.
func (p *fdProbe) unclaimed() error {
	switch {
	case p.fileType() == unix.S_IFCHR:
		return p.fail("character device", ErrUnsupported)
	case p.anonKind() != "":
		return p.fail(p.anonKind(), ErrUnsupported)
	}
	return p.fail("", ErrUnsupported)
}

// The kinds. Their steps live next to the code they use: dump in fds.go,
// open and finish in restore_files.go.
type (
	regularKind  struct{ baseKind } // a path on disk, reopened
	deletedKind  struct{ baseKind } // unlinked while open: contents carried
	memfdKind    struct{ baseKind } // contents, name and seals carried
	dirKind      struct{ baseKind }
	deviceKind   struct{ baseKind } // /dev/null and the like, the same everywhere
	ttyKind      struct{ baseKind } // --shell-job: the restorer's terminal
	pipeKind     struct{ baseKind }
	fifoKind     struct{ baseKind }
	eventfdKind  struct{ baseKind }
	timerfdKind  struct{ baseKind }
	signalfdKind struct{ baseKind }
	epollKind    struct{ baseKind }
	inotifyKind  struct{ baseKind }
	tcpKind      struct{ baseKind }
	unixPairKind struct{ baseKind }
	socketKind   struct{ baseKind }
	shmemKind    struct{ baseKind } // mapped, never open: see VMA.Obj
)

func (shmemKind) dump(*fdProbe, *File) (bool, error) { return false, nil }
