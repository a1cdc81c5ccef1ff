package ckpt

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// probeSetTID asks clone3 for a child with PID 1, which is always taken:
// a kernel that supports set_tid (and lets us use it) answers EEXIST
// before anything is created; an older one rejects the larger struct.
func probeSetTID() error {
	tid := int32(1)
	args := struct {
		flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize uint64
	}{exitSignal: uint64(unix.SIGCHLD), setTID: uint64(uintptr(unsafe.Pointer(&tid))), setTIDSize: 1}
	_, _, e := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	switch e {
	case unix.EEXIST:
		return nil
	case 0:
		// Cannot happen (PID 1 exists); if it did we are the child.
		os.Exit(0)
	}
	return e
}

// probeSetMMMap asks the size of struct prctl_mm_map: the kernel knows
// PR_SET_MM_MAP (CONFIG_CHECKPOINT_RESTORE) if it answers.
func probeSetMMMap() error {
	var size uint32
	return unix.Prctl(unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, uintptr(unsafe.Pointer(&size)), 0, 0)
}

// pmScanArg is struct pm_scan_arg (include/uapi/linux/fs.h).
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages    uint64
	categoryInverted, categoryMask, categoryAnyofMask, retMask uint64
}

// PAGEMAP_SCAN: _IOWR('f', 16, struct pm_scan_arg).
const pagemapScan = 0xc0606610

// probePagemapScan runs an empty PAGEMAP_SCAN on our own pagemap.
func probePagemapScan() error {
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	arg := pmScanArg{size: uint64(unsafe.Sizeof(pmScanArg{}))}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return e
	}
	return nil
}

// uffdioAPI is struct uffdio_api.
type uffdioAPI struct{ api, features, ioctls uint64 }

const (
	uffdAPI              = 0xaa
	uffdioAPIIoctl       = 0xc018aa3f // _IOWR(0xaa, 0x3f, struct uffdio_api)
	uffdFeatureWP        = 1 << 0     // UFFD_FEATURE_PAGEFAULT_FLAG_WP
	uffdUserModeOnly     = 1          // UFFD_USER_MODE_ONLY
	uffdFeatureWPAsync   = 1 << 15    // UFFD_FEATURE_WP_ASYNC
	uffdFeatureWPUnpopul = 1 << 13    // UFFD_FEATURE_WP_UNPOPULATED
)

// probeUffdWP opens a userfaultfd and asks for asynchronous
// write-protection, which dirty tracking with PAGEMAP_SCAN needs.
func probeUffdWP() error {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffdUserModeOnly, 0, 0)
	if e != 0 {
		return e
	}
	defer unix.Close(int(fd))
	api := uffdioAPI{api: uffdAPI, features: uffdFeatureWP | uffdFeatureWPAsync | uffdFeatureWPUnpopul}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPIIoctl, uintptr(unsafe.Pointer(&api))); e != 0 {
		return e
	}
	return nil
}
