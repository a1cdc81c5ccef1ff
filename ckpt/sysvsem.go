package ckpt

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
)

// FileSysVSem is a System V semaphore set the tree uses (the kernel's
// record of the last process to operate on each semaphore says so). It
// comes back with its key, id, mode, owner and values. SEM_UNDO
// adjustments live in each process and no interface reads them: they are
// not carried.
const FileSysVSem = "sysvsem"

// SysVSemSet is a set and its values.
type SysVSemSet struct {
	Key    int32    `json:"key"`
	ID     int      `json:"id"`
	Mode   uint32   `json:"mode"`
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Ctime  int64    `json:"ctime"`
	Values []uint16 `json:"values"`
}

const (
	semNextIDSys = "/proc/sys/kernel/sem_next_id"
	maxSemSet    = 32000 // SEMMSL's ceiling
)

// collectSemSet reads a set from its /proc/sysvipc/sem row (key semid
// perms nsems uid gid cuid cgid otime ctime) and its values.
func collectSemSet(row []string) (*File, error) {
	if len(row) < 10 {
		return nil, fmt.Errorf("/proc/sysvipc/sem: short row %q", row)
	}
	key, err1 := strconv.ParseInt(row[0], 10, 32)
	id, err2 := strconv.Atoi(row[1])
	mode, err3 := strconv.ParseUint(row[2], 8, 32)
	nsems, err4 := strconv.Atoi(row[3])
	uid, err5 := strconv.ParseUint(row[4], 10, 32)
	gid, err6 := strconv.ParseUint(row[5], 10, 32)
	ctime, err7 := strconv.ParseInt(row[9], 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
		return nil, fmt.Errorf("/proc/sysvipc/sem row %q: %w", row, err)
	}
	vals, err := semGetAll(id, nsems)
	if err != nil {
		return nil, fmt.Errorf("System V semaphore set %d: GETALL: %w", id, err)
	}
	return &File{Kind: FileSysVSem, SysVSem: &SysVSemSet{Key: int32(key), ID: id, Mode: uint32(mode), UID: uint32(uid),
		GID: uint32(gid), Ctime: ctime, Values: vals}}, nil
}

// removeSemSets removes the tree's sets once the tree is gone: they
// moved with it. One recreated meanwhile is left alone.
func (t *fileTable) removeSemSets() error {
	var errs []error
	b, _ := os.ReadFile("/proc/sysvipc/sem")
	rows := sysvRows(b)
	for _, f := range t.files {
		s := f.SysVSem
		if f.Kind != FileSysVSem || s == nil {
			continue
		}
		for _, row := range rows {
			if len(row) >= 10 && row[1] == strconv.Itoa(s.ID) && row[9] == strconv.FormatInt(s.Ctime, 10) {
				const ipcRmid = 0
				if _, _, e := unix.Syscall(unix.SYS_SEMCTL, uintptr(s.ID), 0, ipcRmid); e != 0 && e != unix.EINVAL {
					errs = append(errs, fmt.Errorf("remove System V semaphore set %d: %w", s.ID, e))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// sysvSemKind is a set: no descriptor, made again at restore.
type sysvSemKind struct{ baseKind }

func (sysvSemKind) dump(*fdProbe, *File) (bool, error) { return false, nil }

func (sysvSemKind) describe(f *File) string {
	if f.SysVSem == nil {
		return f.Kind
	}
	return fmt.Sprintf("System V semaphore set %d (key %#x, %d semaphores)", f.SysVSem.ID, uint32(f.SysVSem.Key), len(f.SysVSem.Values))
}

// open makes the set with its key, id, mode and owner, and its values;
// a /dev/null stands in the file table.
func (sysvSemKind) open(sh *shared, f *File) (int, error) {
	s := f.SysVSem
	if s == nil || s.ID < 0 || len(s.Values) == 0 || len(s.Values) > maxSemSet {
		return -1, fmt.Errorf("image: semaphore set without state: %w", image.ErrCorrupt)
	}
	id, err := createIPC(semNextIDSys, s.ID, func() (int, error) {
		r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(s.Key), uintptr(len(s.Values)), uintptr(unix.IPC_CREAT|unix.IPC_EXCL|int(s.Mode&0o777)))
		if e != 0 {
			return -1, fmt.Errorf("semget: %w", e)
		}
		return int(r), nil
	}, func(id int) { _, _, _ = unix.Syscall(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_RMID) })
	if err != nil {
		return -1, err
	}
	sh.semSets = append(sh.semSets, id) // removed if the restore fails
	if err := semSetPerm(id, unix.SysvIpcPerm{Uid: s.UID, Gid: s.GID, Mode: s.Mode & 0o777}); err != nil {
		return -1, fmt.Errorf("owner %d:%d, mode %#o: %w", s.UID, s.GID, s.Mode&0o777, err)
	}
	if err := semSetAll(id, s.Values); err != nil {
		return -1, fmt.Errorf("values: %w", err)
	}
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}
