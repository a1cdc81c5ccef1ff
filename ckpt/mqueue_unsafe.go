package ckpt

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mqAttr is struct mq_attr (include/uapi/linux/mqueue.h), the same on
// every 64-bit architecture.
type mqAttr struct {
	Flags   int64 // O_NONBLOCK of the description
	MaxMsg  int64
	MsgSize int64
	CurMsgs int64
	_       [4]int64
}

// mqOpen is mq_open(2) with the name as the kernel takes it: without the
// leading slash that the C library strips. attr may be nil.
func mqOpen(name string, flags int, mode uint32, attr *mqAttr) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mode),
			uintptr(unsafe.Pointer(attr)), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(r), nil
	}
}

// mqUnlink is mq_unlink(2), the name without its leading slash.
func mqUnlink(name string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// mqGetattr reads a queue's attributes through any descriptor of it
// (mq_getsetattr with no new attributes).
func mqGetattr(fd int) (mqAttr, error) {
	var a mqAttr
	_, _, e := unix.Syscall(unix.SYS_MQ_GETSETATTR, uintptr(fd), 0, uintptr(unsafe.Pointer(&a)))
	if e != 0 {
		return a, e
	}
	return a, nil
}

// mqReceive takes the first message (highest priority, oldest) into buf;
// it does not wait on a non-blocking description (EAGAIN when empty).
func mqReceive(fd int, buf []byte) (n int, prio uint32, err error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_MQ_TIMEDRECEIVE, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			uintptr(unsafe.Pointer(&prio)), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, 0, e
		}
		return int(r), prio, nil
	}
}

// mqSend queues one message; it does not wait on a non-blocking
// description (EAGAIN when full).
func mqSend(fd int, text []byte, prio uint32) error {
	var one [1]byte
	p := &one[0] // the kernel reads nothing of an empty message
	if len(text) > 0 {
		p = &text[0]
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_MQ_TIMEDSEND, uintptr(fd), uintptr(unsafe.Pointer(p)), uintptr(len(text)),
			uintptr(prio), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}
