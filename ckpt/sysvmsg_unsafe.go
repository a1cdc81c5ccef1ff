package ckpt

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// msqidDS is struct msqid64_ds (include/uapi/asm-generic/msgbuf.h, 64-bit).
type msqidDS struct {
	Perm   unix.SysvIpcPerm
	Stime  int64
	Rtime  int64
	Ctime  int64
	Cbytes uint64
	Qnum   uint64
	Qbytes uint64
	Lspid  int32
	Lrpid  int32
	_      [2]uint64
}

func msgctl(id, cmd int, ds *msqidDS) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), uintptr(unsafe.Pointer(ds)))
	if e != 0 {
		return e
	}
	return nil
}

// msgCopy copies the message at position index of queue id without
// taking it (MSG_COPY); buf holds the type, then the text.
func msgCopy(id, index int, buf []byte) (typ int64, text []byte, err error) {
	const ipcNowait, msgCopyFlag = 0o4000, 0o40000 // include/uapi/linux/ipc.h, msg.h
	n, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8),
		uintptr(index), ipcNowait|msgCopyFlag, 0)
	if e != 0 {
		return 0, nil, e
	}
	return int64(binary.LittleEndian.Uint64(buf)), buf[8 : 8+n], nil
}

// msgSend sends one message (type, text) to queue id, not waiting.
func msgSend(id int, typ int64, text []byte) error {
	const ipcNowait = 0o4000
	buf := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(text)), uint64(typ))
	buf = append(buf, text...)
	_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(text)), ipcNowait, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// semGetAll reads the values of a semaphore set's n semaphores (GETALL).
func semGetAll(id, n int) ([]uint16, error) {
	const getall = 13 // GETALL, include/uapi/linux/sem.h
	vals := make([]uint16, max(n, 1))
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, getall, uintptr(unsafe.Pointer(&vals[0])), 0, 0)
	if e != 0 {
		return nil, e
	}
	return vals[:n], nil
}

// semSetAll sets the values of a semaphore set (SETALL).
func semSetAll(id int, vals []uint16) error {
	const setall = 17 // SETALL
	if len(vals) == 0 {
		return nil
	}
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, setall, uintptr(unsafe.Pointer(&vals[0])), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// semSetPerm sets a set's owner and mode (IPC_SET). Only the leading
// struct ipc64_perm of struct semid64_ds is read, which is the same on
// every architecture; the buffer is larger than any semid64_ds.
func semSetPerm(id int, perm unix.SysvIpcPerm) error {
	var ds struct {
		Perm unix.SysvIpcPerm
		_    [16]uint64
	}
	ds.Perm = perm
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_SET, uintptr(unsafe.Pointer(&ds)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
