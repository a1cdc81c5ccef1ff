package ckpt

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/proc"
)

// FileSysVShm is a System V shared memory segment that processes of the
// tree attach (VMA.SysV names it). Its contents travel as a blob of Size
// bytes; restore makes it again with the same key and id, mode and owner,
// and attaches it where each process had it.
const FileSysVShm = "sysvshm"

// VMASysV is an attach of a System V shared memory segment: nothing
// dumped with the process, the segment holds it.
const VMASysV = "sysvshm"

// SysVShm is a segment's identity and attributes.
type SysVShm struct {
	Key  int32  `json:"key"`
	ID   int    `json:"id"`
	Mode uint32 `json:"mode"` // permissions, and SHM_DEST once removed
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	// Ctime and CPID tell the segment from a later one with the same id
	// (the dump removes the segment once the tree is gone).
	Ctime int64 `json:"ctime"`
	CPID  int32 `json:"cpid"`
}

// Constants missing from x/sys (include/uapi/linux/shm.h, ipc.h).
const (
	shmDest      = 0o1000  // SHM_DEST: removed, gone at the last detach
	shmRemap     = 0o40000 // SHM_REMAP
	shmExec      = 0o100000
	ipcPrivate   = 0
	shmNextIDSys = "/proc/sys/kernel/shm_next_id"
	// maxSysVShm bounds a segment's size read from an image.
	maxSysVShm = 1 << 40
)

// sysvSegments collects the segments the tree attaches, by shmid.
type sysvSegments struct {
	obj   map[int]int // 1 + index in the file table
	attch map[int]int // the tree's attaches (VMAs) of it
	first map[int]*MappingError
}

// sysvSegment returns the VMA.SysV of the segment that m (a /SYSV
// mapping: its inode is the shmid) attaches, adding the segment the
// first time it is seen.
func (t *fileTable) sysvSegment(pid int, m proc.Mapping) (int, error) {
	s := &t.sysv
	if s.obj == nil {
		*s = sysvSegments{obj: map[int]int{}, attch: map[int]int{}, first: map[int]*MappingError{}}
	}
	shmid := int(m.Inode)
	s.attch[shmid]++
	if obj, ok := s.obj[shmid]; ok {
		return obj, nil
	}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(shmid, unix.IPC_STAT, &d); err != nil {
		return 0, fmt.Errorf("System V shared memory segment %d: IPC_STAT: %w", shmid, err)
	}
	f := File{Kind: FileSysVShm, Path: m.Path, Size: int64(d.Segsz), SysV: &SysVShm{Key: d.Perm.Key, ID: shmid,
		Mode: d.Perm.Mode, UID: d.Perm.Uid, GID: d.Perm.Gid, Ctime: d.Ctime, CPID: d.Cpid}}
	f.Blob = t.newBlob(blobSource{write: func(w *image.Writer, id uint32) error { return writeSysVShm(w, id, shmid) }})
	t.files = append(t.files, f)
	s.obj[shmid] = len(t.files)
	s.first[shmid] = &MappingError{PID: pid, Start: m.Start, End: m.End, Path: m.Path, Op: "dump"}
	return len(t.files), nil
}

// checkSysV refuses a segment that a process outside the tree attaches
// too: the two could not share it after a restore.
func (t *fileTable) checkSysV() error {
	for shmid, n := range t.sysv.attch {
		var d unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(shmid, unix.IPC_STAT, &d); err != nil {
			return fmt.Errorf("System V shared memory segment %d: IPC_STAT: %w", shmid, err)
		}
		if int(d.Nattch) > n {
			e := *t.sysv.first[shmid]
			e.Err = fmt.Errorf("System V shared memory segment %d (key %#x) is also attached by a process outside the checkpoint (%d attaches, %d in the tree): %w",
				shmid, uint32(d.Perm.Key), d.Nattch, n, ErrUnsupported)
			return &e
		}
	}
	return nil
}

// removeSysV removes the tree's segments once the tree is gone: they
// moved into the image with it. A segment replaced meanwhile (another
// creation time or creator) is left alone.
func (t *fileTable) removeSysV() error {
	var errs []error
	for _, obj := range t.sysv.obj {
		s := t.files[obj-1].SysV
		var d unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(s.ID, unix.IPC_STAT, &d); err != nil || d.Ctime != s.Ctime || d.Cpid != s.CPID {
			continue
		}
		if _, err := unix.SysvShmCtl(s.ID, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("remove System V shared memory segment %d: %w", s.ID, err))
		}
	}
	return errors.Join(errs...)
}

// writeSysVShm streams a segment's contents: attached read-only here,
// only the pages the segment holds (mincore), unless some are in swap,
// where mincore cannot see them: then all of it.
func writeSysVShm(w *image.Writer, id uint32, shmid int) error {
	b, err := unix.SysvShmAttach(shmid, 0, unix.SHM_RDONLY)
	if err != nil {
		return fmt.Errorf("System V shared memory segment %d: shmat: %w", shmid, err)
	}
	defer unix.SysvShmDetach(b)
	pages := (len(b) + mem.PageSize - 1) / mem.PageSize
	in := make([]byte, pages)
	if sysvSwapped(shmid) || mincore(b[:min(len(b), pages*mem.PageSize)], in) != nil {
		for i := range in {
			in[i] = 1
		}
	}
	const chunk = 256 // pages per blob write
	for i := 0; i < pages; {
		if in[i]&1 == 0 {
			i++
			continue
		}
		j := i
		for j < pages && j-i < chunk && in[j]&1 != 0 {
			j++
		}
		start, end := i*mem.PageSize, min(j*mem.PageSize, len(b))
		if err := w.WriteBlob(id, uint64(start), b[start:end]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// sysvSwapped reports whether /proc/sysvipc/shm says some of the
// segment is in swap.
func sysvSwapped(shmid int) bool {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return true
	}
	for _, row := range sysvRows(b) {
		// key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap
		if len(row) >= 16 && row[1] == strconv.Itoa(shmid) {
			return row[15] != "0"
		}
	}
	return true
}

// sysvShmKind is a segment: mapped, never open (like shmemKind).
type sysvShmKind struct{ baseKind }

func (sysvShmKind) dump(*fdProbe, *File) (bool, error) { return false, nil }

func (sysvShmKind) describe(f *File) string {
	if f.SysV == nil {
		return f.Kind
	}
	return fmt.Sprintf("System V shared memory segment %d (key %#x, %d bytes)", f.SysV.ID, uint32(f.SysV.Key), f.Size)
}

// open: the segment lives in the IPC namespace, not in a descriptor; a
// /dev/null stands in the file table.
func (sysvShmKind) open(*shared, *File) (int, error) {
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// blobMemory is the segment, attached here, for its contents to stream into.
func (sysvShmKind) blobMemory(sh *shared, i int, _ *File) ([]byte, error) {
	if _, err := sh.sysvSegmentID(i); err != nil {
		return nil, err
	}
	return sh.sysv[i].at, nil
}

// restoredSegment is a segment this restore made.
type restoredSegment struct {
	id int
	at []byte // attached in relocate until the restore ends
}

// sysvSegmentID returns the id of the segment Files[i], making it with
// its key, id, mode and owner the first time.
func (sh *shared) sysvSegmentID(i int) (int, error) {
	if s, ok := sh.sysv[i]; ok {
		return s.id, nil
	}
	if i < 0 || i >= len(sh.cp.Files) {
		return -1, fmt.Errorf("image: System V segment %d: %w", i, image.ErrCorrupt)
	}
	f := &sh.cp.Files[i]
	s := f.SysV
	if f.Kind != FileSysVShm || s == nil || f.Size <= 0 || f.Size > maxSysVShm || s.ID < 0 {
		return -1, fmt.Errorf("image: file %d is no System V segment: %w", i, image.ErrCorrupt)
	}
	what := f.Describe()
	key := int(s.Key)
	if s.Mode&shmDest != 0 {
		key = ipcPrivate
	}
	rm := func(id int) { _, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil) }
	id, err := createIPC(shmNextIDSys, s.ID, func() (int, error) {
		return unix.SysvShmGet(key, int(f.Size), unix.IPC_CREAT|unix.IPC_EXCL|int(s.Mode&0o777))
	}, rm)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	drop := func() { rm(id) }
	d := unix.SysvShmDesc{Perm: unix.SysvIpcPerm{Uid: s.UID, Gid: s.GID, Mode: s.Mode & 0o777}}
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &d); err != nil {
		drop()
		return -1, fmt.Errorf("%s: owner %d:%d, mode %#o: %w", what, s.UID, s.GID, s.Mode&0o777, err)
	}
	at, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		drop()
		return -1, fmt.Errorf("%s: shmat: %w", what, err)
	}
	if int64(len(at)) < f.Size {
		_ = unix.SysvShmDetach(at)
		drop()
		return -1, fmt.Errorf("%s: attached %d bytes", what, len(at))
	}
	if s.Mode&shmDest != 0 {
		// Removed already: gone at the last detach. The processes attach
		// it by id while relocate holds it.
		drop()
	}
	if sh.sysv == nil {
		sh.sysv = map[int]*restoredSegment{}
	}
	sh.sysv[i] = &restoredSegment{id: id, at: at}
	return id, nil
}

// createIPC makes a System V object with the id it had: the sysctl
// (shm_next_id, msg_next_id, sem_next_id) names the id the next creation
// takes. get creates it (IPC_CREAT|IPC_EXCL) and rm removes it; a key or
// id taken here is refused.
func createIPC(sysctl string, want int, get func() (int, error), rm func(int)) (int, error) {
	if err := os.WriteFile(sysctl, []byte(strconv.Itoa(want)), 0); err != nil {
		return -1, fmt.Errorf("set its id (%s): %w", sysctl, err)
	}
	id, err := get()
	// The kernel resets the sysctl once a creation used it; not when it failed.
	_ = os.WriteFile(sysctl, []byte("-1"), 0)
	if errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("its key is taken on this machine: %w", ErrUnsupported)
	}
	if err != nil {
		return -1, err
	}
	if id != want {
		rm(id)
		return -1, fmt.Errorf("its id is taken on this machine (the new one got %d): %w", id, ErrUnsupported)
	}
	return id, nil
}

// detachSysV lets go of relocate's attaches; with remove (a failed
// restore), the segments and message queues made are removed too.
func (sh *shared) detachSysV(remove bool) {
	for _, s := range sh.sysv {
		if s.at != nil {
			_ = unix.SysvShmDetach(s.at)
			s.at = nil
		}
		if remove {
			_, _ = unix.SysvShmCtl(s.id, unix.IPC_RMID, nil)
		}
	}
	if remove {
		for _, id := range sh.msgQueues {
			_ = msgctl(id, unix.IPC_RMID, nil)
		}
		for _, id := range sh.semSets {
			_, _, _ = unix.Syscall(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_RMID)
		}
	}
}

// attachSysV attaches each segment where the process had it. One shmat
// covers the whole segment: its VMAs (several when part of it was
// mprotected or unmapped) get their protection back, and what the
// process had unmapped is unmapped again.
func (rs *restorer) attachSysV(L *remote) error {
	type attach struct {
		obj  int
		base uint64
		vmas []VMA
	}
	var groups []*attach
	byBase := map[[2]uint64]*attach{}
	for _, v := range rs.p.VMAs {
		if v.Kind != VMASysV {
			continue
		}
		if v.SysV <= 0 || v.SysV > len(rs.cp.Files) || v.Offset > v.Start {
			return &MappingError{PID: rs.p.PID, Start: v.Start, End: v.End, Path: v.Name, Op: "check",
				Err: fmt.Errorf("image: segment %d at offset %#x: %w", v.SysV, v.Offset, image.ErrCorrupt)}
		}
		k := [2]uint64{uint64(v.SysV), v.Start - v.Offset}
		a := byBase[k]
		if a == nil {
			a = &attach{obj: v.SysV, base: k[1]}
			byBase[k] = a
			groups = append(groups, a)
		}
		a.vmas = append(a.vmas, v)
	}
	for _, a := range groups {
		id, err := rs.sysvSegmentID(a.obj - 1)
		v0 := a.vmas[0]
		fail := func(op string, err error) error {
			return &MappingError{PID: rs.p.PID, Start: v0.Start, End: v0.End, Path: v0.Name, Op: op, Err: err}
		}
		if err != nil {
			return fail("create", err)
		}
		size := (uint64(rs.cp.Files[a.obj-1].Size) + mem.PageSize - 1) &^ (mem.PageSize - 1)
		end := a.base + size
		if end < a.base || a.base%mem.PageSize != 0 {
			return fail("check", fmt.Errorf("image: attach at %#x: %w", a.base, image.ErrCorrupt))
		}
		flags := uint64(shmRemap | unix.SHM_RDONLY)
		prot := uint64(unix.PROT_READ)
		for _, v := range a.vmas {
			if v.End > end {
				return fail("check", fmt.Errorf("image: mapping beyond the segment's %d bytes: %w", size, image.ErrCorrupt))
			}
			if v.Prot&unix.PROT_WRITE != 0 {
				flags &^= unix.SHM_RDONLY
				prot |= unix.PROT_WRITE
			}
			if v.Prot&unix.PROT_EXEC != 0 {
				flags |= shmExec
				prot |= unix.PROT_EXEC
			}
		}
		got, err := L.call(unix.SYS_SHMAT, uint64(id), a.base, flags)
		if err != nil {
			return fail("shmat", err)
		}
		if got != a.base {
			return fail("shmat", fmt.Errorf("attached at %#x", got))
		}
		sort.Slice(a.vmas, func(i, j int) bool { return a.vmas[i].Start < a.vmas[j].Start })
		at := a.base
		for _, v := range a.vmas {
			if v.Start > at {
				if _, err := L.call(unix.SYS_MUNMAP, at, v.Start-at); err != nil {
					return fail("munmap", err)
				}
			}
			if uint64(v.Prot) != prot {
				if _, err := L.call(unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot)); err != nil {
					return fail("mprotect", err)
				}
			}
			at = max(at, v.End)
		}
		if at < end {
			if _, err := L.call(unix.SYS_MUNMAP, at, end-at); err != nil {
				return fail("munmap", err)
			}
		}
	}
	return nil
}
