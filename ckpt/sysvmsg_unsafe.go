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
