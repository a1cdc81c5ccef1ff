package mem

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd ABI (include/uapi/linux/userfaultfd.h).
const (
	uffdAPI               = 0xaa
	uffdioAPI             = 0xc018aa3f // _IOWR(0xaa, 0x3f, struct uffdio_api)
	uffdioRegister        = 0xc020aa00 // _IOWR(0xaa, 0x00, struct uffdio_register)
	uffdioUnregister      = 0x8010aa01 // _IOR(0xaa, 0x01, struct uffdio_range)
	uffdioRegisterModeWP  = 1 << 1     // UFFDIO_REGISTER_MODE_WP
	uffdFeaturePagefaultW = 1 << 0     // UFFD_FEATURE_PAGEFAULT_FLAG_WP
	uffdFeatureWPUnpopul  = 1 << 13    // UFFD_FEATURE_WP_UNPOPULATED
	uffdFeatureWPAsync    = 1 << 15    // UFFD_FEATURE_WP_ASYNC
)

// PAGEMAP_SCAN ABI (include/uapi/linux/fs.h).
const (
	pagemapScan        = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pmScanWPMatching   = 1 << 0     // PM_SCAN_WP_MATCHING
	pmScanCheckWPAsync = 1 << 1     // PM_SCAN_CHECK_WPASYNC
	pageIsWritten      = 1 << 1     // PAGE_IS_WRITTEN
)

type uffdioAPIArg struct{ api, features, ioctls uint64 }

type uffdioRegisterArg struct{ start, len, mode, ioctls uint64 }

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages    uint64
	categoryInverted, categoryMask, categoryAnyofMask, retMask uint64
}

// pageRegion is struct page_region.
type pageRegion struct{ start, end, categories uint64 }

var errNotMapped = errors.New("range not mapped")

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// NewUffdTracker tracks pid's writes with asynchronous write-protection.
// uffd is a userfaultfd opened inside pid (its mm is the one tracked) and
// not yet initialised; the Tracker owns it from now on, even on error.
func NewUffdTracker(pid, uffd int) (*Tracker, error) {
	api := uffdioAPIArg{api: uffdAPI, features: uffdFeaturePagefaultW | uffdFeatureWPAsync | uffdFeatureWPUnpopul}
	if _, err := ioctlPtr(uffd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		unix.Close(uffd)
		return nil, fmt.Errorf("userfaultfd of pid %d: UFFDIO_API with asynchronous write-protection: %w", pid, err)
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		unix.Close(uffd)
		return nil, err
	}
	return &Tracker{pid: pid, pm: pm, uffd: uffd, vec: make([]pageRegion, 4096)}, nil
}

func uffdRegisterWP(uffd int, r Range) error {
	arg := uffdioRegisterArg{start: r.Start, len: r.Len(), mode: uffdioRegisterModeWP}
	_, err := ioctlPtr(uffd, uffdioRegister, unsafe.Pointer(&arg))
	return err
}

func uffdUnregister(uffd int, r Range) error {
	arg := [2]uint64{r.Start, r.Len()}
	_, err := ioctlPtr(uffd, uffdioUnregister, unsafe.Pointer(&arg))
	if err == unix.EINVAL || err == unix.ENOMEM {
		return errNotMapped
	}
	return err
}

// scanWritten reports the written pages of r and write-protects them again,
// page by page atomically (PM_SCAN_WP_MATCHING); PM_SCAN_CHECK_WPASYNC makes
// the kernel refuse ranges that are not registered for asynchronous
// write-protection instead of reporting them clean.
func (t *Tracker) scanWritten(r Range, fn func(Range) error) error { return t.scan(r, true, fn) }

// scan reports the written pages of r; with reset, it write-protects them
// again.
func (t *Tracker) scan(r Range, reset bool, fn func(Range) error) error {
	flags := uint64(pmScanCheckWPAsync)
	if reset {
		flags |= pmScanWPMatching
	}
	for start := r.Start; start < r.End; {
		arg := pmScanArg{size: uint64(unsafe.Sizeof(pmScanArg{})), flags: flags,
			start: start, end: r.End, vec: uint64(uintptr(unsafe.Pointer(&t.vec[0]))), vecLen: uint64(len(t.vec)),
			categoryMask: pageIsWritten, retMask: pageIsWritten}
		n, err := ioctlPtr(int(t.pm.Fd()), pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return &Error{Op: "PAGEMAP_SCAN", PID: t.pid, Addr: start, Err: err}
		}
		for _, reg := range t.vec[:n] {
			if err := fn(Range{Start: reg.start, End: reg.end}); err != nil {
				return err
			}
		}
		if arg.walkEnd <= start {
			return &Error{Op: "PAGEMAP_SCAN", PID: t.pid, Addr: start, Err: errors.New("the walk did not advance")}
		}
		start = arg.walkEnd
	}
	return nil
}

func closeFD(fd int) error { return unix.Close(fd) }

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// SoftDirtyWorks reports whether this kernel keeps soft-dirty bits: a page
// of our own written after clear_refs must show bit 55.
func SoftDirtyWorks() bool {
	b, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(b)
	b[0] = 1
	if os.WriteFile("/proc/self/clear_refs", []byte("4"), 0) != nil {
		return false
	}
	b[0] = 2
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return false
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(uintptrOf(b)/PageSize*8)); err != nil {
		return false
	}
	return binaryLE(e[:])&PMSoftDirty != 0
}

func binaryLE(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
