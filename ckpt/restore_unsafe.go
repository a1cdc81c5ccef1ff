package ckpt

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// TFD_IOC_SET_TICKS, include/uapi/linux/timerfd.h: _IOW('T', 0, __u64).
const tfdIocSetTicks = 0x40085400

// setTimerfdTicks sets the count of expirations a timerfd has not reported
// yet (needs CONFIG_CHECKPOINT_RESTORE).
func setTimerfdTicks(fd int, ticks uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks)))
	if e != 0 {
		return e
	}
	return nil
}
