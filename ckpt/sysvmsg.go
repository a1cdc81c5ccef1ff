package ckpt

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
)

// FileSysVMsg is a System V message queue the tree uses: no descriptor
// or mapping holds one, so the kernel's record of its last sender and
// receiver says whose it is (see sysvIPCUser). It comes back with its
// key, id, mode, owner, capacity and messages in order.
const FileSysVMsg = "sysvmsg"

// SysVMsgQueue is a queue and its messages.
type SysVMsgQueue struct {
	Key    int32     `json:"key"`
	ID     int       `json:"id"`
	Mode   uint32    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	QBytes uint64    `json:"qbytes"`
	Ctime  int64     `json:"ctime"` // to tell it from a later queue with its id
	Msgs   []SysVMsg `json:"msgs,omitempty"`
}

// SysVMsg is one message.
type SysVMsg struct {
	Type int64  `json:"type"`
	Text []byte `json:"text"`
}

const (
	msgNextIDSys = "/proc/sys/kernel/msg_next_id"
	maxMsgQueue  = 1 << 24 // bytes, from an image
)

// collectMsgQueue reads a queue the tree uses, messages included (copied
// with MSG_COPY, left in place).
func collectMsgQueue(id int) (*File, error) {
	var ds msqidDS
	if err := msgctl(id, unix.IPC_STAT, &ds); err != nil {
		return nil, fmt.Errorf("System V message queue %d: IPC_STAT: %w", id, err)
	}
	if ds.Qbytes > maxMsgQueue || ds.Cbytes > maxMsgQueue {
		return nil, fmt.Errorf("System V message queue %d: %d bytes: %w", id, ds.Qbytes, ErrUnsupported)
	}
	q := &SysVMsgQueue{Key: ds.Perm.Key, ID: id, Mode: ds.Perm.Mode, UID: ds.Perm.Uid, GID: ds.Perm.Gid,
		QBytes: ds.Qbytes, Ctime: ds.Ctime}
	buf := make([]byte, 8+max(ds.Qbytes, 8192))
	for i := 0; i < int(ds.Qnum); i++ {
		typ, text, err := msgCopy(id, i, buf)
		if err != nil {
			return nil, fmt.Errorf("System V message queue %d: copy message %d (MSG_COPY): %w", id, i, err)
		}
		q.Msgs = append(q.Msgs, SysVMsg{Type: typ, Text: append([]byte(nil), text...)})
	}
	return &File{Kind: FileSysVMsg, SysVMsg: q}, nil
}

// removeMsgQueues removes the tree's queues once the tree is gone: they
// moved with it. One recreated meanwhile is left alone.
func (t *fileTable) removeMsgQueues() error {
	var errs []error
	for _, f := range t.files {
		if f.Kind != FileSysVMsg || f.SysVMsg == nil {
			continue
		}
		var ds msqidDS
		if msgctl(f.SysVMsg.ID, unix.IPC_STAT, &ds) != nil || ds.Ctime != f.SysVMsg.Ctime {
			continue
		}
		if err := msgctl(f.SysVMsg.ID, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("remove System V message queue %d: %w", f.SysVMsg.ID, err))
		}
	}
	return errors.Join(errs...)
}

// sysvMsgKind is a queue: no descriptor, made again at restore.
type sysvMsgKind struct{ baseKind }

func (sysvMsgKind) dump(*fdProbe, *File) (bool, error) { return false, nil }

func (sysvMsgKind) describe(f *File) string {
	if f.SysVMsg == nil {
		return f.Kind
	}
	return fmt.Sprintf("System V message queue %d (key %#x, %d messages)", f.SysVMsg.ID, uint32(f.SysVMsg.Key), len(f.SysVMsg.Msgs))
}

// open makes the queue with its key, id, mode, owner and capacity, and
// sends its messages again in order; a /dev/null stands in the file
// table.
func (sysvMsgKind) open(sh *shared, f *File) (int, error) {
	q := f.SysVMsg
	if q == nil || q.ID < 0 || q.QBytes > maxMsgQueue {
		return -1, fmt.Errorf("image: message queue without state: %w", image.ErrCorrupt)
	}
	rm := func(id int) { _ = msgctl(id, unix.IPC_RMID, nil) }
	id, err := createIPC(msgNextIDSys, q.ID, func() (int, error) {
		r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(q.Key), uintptr(unix.IPC_CREAT|unix.IPC_EXCL|int(q.Mode&0o777)), 0)
		if e != 0 {
			return -1, fmt.Errorf("msgget: %w", e)
		}
		return int(r), nil
	}, rm)
	if err != nil {
		return -1, err
	}
	sh.msgQueues = append(sh.msgQueues, id) // removed if the restore fails
	drop := func(err error) (int, error) {
		rm(id)
		return -1, err
	}
	ds := msqidDS{Perm: unix.SysvIpcPerm{Uid: q.UID, Gid: q.GID, Mode: q.Mode & 0o777}, Qbytes: q.QBytes}
	if err := msgctl(id, unix.IPC_SET, &ds); err != nil {
		return drop(fmt.Errorf("owner %d:%d, mode %#o, %d bytes: %w", q.UID, q.GID, q.Mode&0o777, q.QBytes, err))
	}
	for i, m := range q.Msgs {
		if err := msgSend(id, m.Type, m.Text); err != nil {
			return drop(fmt.Errorf("message %d: %w", i, err))
		}
	}
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}
