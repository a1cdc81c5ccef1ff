package ckpt

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/sock"
)

// Restore runs as root and reopens files by the paths an image names. The
// process's owner controls their own directories, so every path is
// resolved here without following symbolic links (a path the dump read
// from /proc is the kernel's name for the file, which has none), checked
// against what the dump recorded before it is opened for real, and opened
// with the restored process's own credentials: restore opens nothing the
// process could not have opened itself.

// fsCreds is the identity a process's file accesses are checked against.
type fsCreds struct {
	uid, gid int
	groups   []int
	capEff   uint64
}

func credsOf(p *Process) fsCreds {
	return fsCreds{uid: p.Creds.UID[3], gid: p.Creds.GID[3], groups: p.Creds.Groups, capEff: p.Creds.CapEff}
}

// asProcess runs fn on an OS thread of its own that has taken on c: fsuid,
// fsgid, supplementary groups and effective capabilities (setfsuid from 0
// to another uid also clears the file capabilities, CAP_DAC_OVERRIDE and
// the like). The thread never goes back to the runtime's pool: it exits
// with the goroutine.
func asProcess(c fsCreds, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := c.apply(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// apply sets c on the calling thread only (raw syscalls, not the
// all-threads setgroups of package syscall). Precondition: the thread is
// locked and is thrown away afterwards.
func (c fsCreds) apply() error {
	if err := unix.Setgroups(c.groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	unix.Setfsgid(c.gid)
	unix.Setfsuid(c.uid)
	if got, _ := unix.SetfsuidRetUid(-1); got != c.uid {
		return fmt.Errorf("setfsuid %d: still %d", c.uid, got)
	}
	if got, _ := unix.SetfsgidRetGid(-1); got != c.gid {
		return fmt.Errorf("setfsgid %d: still %d", c.gid, got)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		data[i].Effective &= uint32(c.capEff >> (32 * i))
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// resolveNoFollow is how every path of an image is resolved: a symbolic
// link anywhere in it, or a /proc magic link, fails with ELOOP.
const resolveNoFollow = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// PathError is a file of the image that cannot be reopened as it was.
func pathErr(path, what string) error {
	return fmt.Errorf("%s: %s", path, what)
}

// openPath opens path O_PATH without following symbolic links and returns
// it with its stat.
func openPath(path string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	if !strings.HasPrefix(path, "/") {
		return -1, st, pathErr(path, "not an absolute path")
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveNoFollow})
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return -1, st, pathErr(path, "a symbolic link is in the path now (it had none at the checkpoint)")
	}
	if err != nil {
		return -1, st, fmt.Errorf("%s: %w", path, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, fmt.Errorf("%s: %w", path, err)
	}
	return fd, st, nil
}

// fileType names the S_IFMT type of a mode.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}

// expect is what a path must be at restore: its type, and (id non-nil)
// its identity.
type expect struct {
	typ      uint32 // S_IFREG, ...
	id       *FileID
	sameHost bool // dev and inode must match; otherwise size and mtime (or build ID)
	// content: size and mtime (or build ID) must match on the same host
	// too: a mapping's pages not in the image come from the file.
	content bool
}

func (e expect) check(path string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != e.typ {
		return pathErr(path, fmt.Sprintf("is %s now, was %s", fileType(st.Mode), fileType(e.typ)))
	}
	if e.typ == unix.S_IFCHR && !portableDevices[[2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}] {
		return pathErr(path, fmt.Sprintf("is device %d:%d now, not one relocate reopens", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	}
	if e.id == nil {
		return nil
	}
	if e.sameHost {
		if st.Dev != e.id.Dev || st.Ino != e.id.Ino {
			return pathErr(path, fmt.Sprintf("is another file now (device:inode %d:%d, was %d:%d)", st.Dev, st.Ino, e.id.Dev, e.id.Ino))
		}
		if !e.content {
			return nil
		}
	}
	if st.Size != e.id.Size || st.Mtim.Nano() != e.id.Mtime {
		// A copy with another mtime is the same program if its build ID is.
		if st.Size != e.id.Size || e.id.BuildID == "" || e.id.BuildID != buildIDAt(path) {
			return pathErr(path, fmt.Sprintf("changed since the checkpoint (size %d, mtime %d; was %d, %d)", st.Size, st.Mtim.Nano(), e.id.Size, e.id.Mtime))
		}
	}
	return nil
}

// buildIDAt reads the build ID of path, itself opened without following
// symbolic links.
func buildIDAt(path string) string {
	fd, _, err := openPath(path)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	return buildID(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// openChecked opens path with flags for a process with credentials c
// (nil: relocate's own, for what the process does not read through it):
// resolved without symbolic links, checked against e while only an O_PATH
// descriptor is open (opening a FIFO or a device may do things), then
// reopened through that descriptor with c's rights.
func openChecked(c *fsCreds, path string, flags int, e expect) (int, error) {
	var fd int
	open := func() error {
		pfd, st, err := openPath(path)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		if err := e.check(path, &st); err != nil {
			return err
		}
		fd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), flags&^unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		var now unix.Stat_t
		if err := unix.Fstat(fd, &now); err != nil || now.Dev != st.Dev || now.Ino != st.Ino {
			unix.Close(fd)
			return pathErr(path, "changed while it was being opened")
		}
		return nil
	}
	var err error
	if c == nil {
		err = open()
	} else {
		err = asProcess(*c, open)
		// A descriptor the process was given rather than opened (a log
		// file a service inherited from root, before it dropped its
		// rights): given back only when it is provably the very file
		// the process held.
		if (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) && e.sameHost && e.id != nil {
			err = open()
		}
	}
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// checkPath checks path against e without opening it for real.
func checkPath(path string, e expect) error {
	fd, st, err := openPath(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return e.check(path, &st)
}

// reopenAs opens a new description of the file behind fd with flags and
// c's rights.
func reopenAs(c fsCreds, fd, flags int) (int, error) {
	var nfd int
	err := asProcess(c, func() error {
		var err error
		nfd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flags&^unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	return nfd, err
}

// hostID names this boot of this machine: an image dumped under the same
// one refers to the same files by device and inode.
func hostID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	host, _ := os.Hostname()
	return strings.TrimSpace(string(b)) + " " + host
}

// sameHost reports whether the image was dumped on this machine since it
// booted.
func (cp *Checkpoint) sameHost() bool {
	return cp.Host != "" && cp.Host == hostID()
}

// holderCreds are the credentials of the first process holding file i.
func (sh *shared) holderCreds(i int) fsCreds {
	pid, _ := sh.fdOf(i)
	for k := range sh.cp.Processes {
		if p := &sh.cp.Processes[k]; p.PID == pid {
			return credsOf(p)
		}
	}
	return credsOf(&sh.cp.Processes[0])
}

// expectFile is what the path of f must be at restore: a file of type
// typ (S_IFREG, ...; its kind knows), and the one the dump saw.
func (sh *shared) expectFile(f *File, typ uint32) expect {
	return expect{typ: typ, id: f.ID, sameHost: sh.cp.sameHost()}
}

// createUnixSocket makes a unix socket with the process's credentials: a
// stale socket file at its path is removed, and the new one bound, as the
// process would (sock refuses a path whose directories are symbolic links).
func (sh *shared) createUnixSocket(f File) (int, error) {
	var fd int
	err := asProcess(sh.holder, func() (err error) {
		fd, err = sock.Create(f.Socket, f.Flags)
		return err
	})
	return fd, err
}

// checkMappings refuses, before anything is made, a mapped file whose
// path leads through a symbolic link now, or to another file: on the
// same host device and inode must match (a shared writable mapping writes
// into the file), elsewhere size and mtime or build ID.
func checkMappings(p *Process, sameHost bool) error {
	for _, v := range p.VMAs {
		if v.File == nil {
			continue
		}
		if err := checkPath(v.File.Path, expect{typ: unix.S_IFREG, id: v.File, sameHost: sameHost, content: true}); err != nil {
			return &MappingError{PID: p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "check", Err: err}
		}
	}
	return nil
}

// restoreCwd sets the working directory: opened here without following
// symbolic links and with the process's credentials, then handed to the
// process (pidfd_getfd) for fchdir, instead of a chdir by path as root.
func (rs *restorer) restoreCwd(L *remote) error {
	c := credsOf(rs.p)
	e := expect{typ: unix.S_IFDIR}
	if rs.p.CwdID != nil && rs.cp.sameHost() {
		// The very directory it had (an inherited cwd the process could
		// not open by path, such as a worker's after dropping root's
		// rights): openChecked may then open it with relocate's.
		e.id, e.sameHost = rs.p.CwdID, true
	}
	fd, err := openChecked(&c, rs.p.Cwd, unix.O_PATH|unix.O_DIRECTORY, e)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tfd, err := L.call(unix.SYS_PIDFD_GETFD, uint64(rs.pidfd), uint64(fd), 0)
	if err != nil {
		return err
	}
	_, err = L.call(unix.SYS_FCHDIR, tfd)
	if _, cerr := L.call(unix.SYS_CLOSE, tfd); err == nil {
		err = cerr
	}
	return err
}
