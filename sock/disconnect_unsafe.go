package sock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// disconnect is connect(fd, {AF_UNSPEC}): for TCP, tcp_disconnect, which
// resets an established connection.
func disconnect(fd int) error {
	sa := unix.RawSockaddr{Family: unix.AF_UNSPEC}
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if e != 0 {
		return e
	}
	return nil
}
