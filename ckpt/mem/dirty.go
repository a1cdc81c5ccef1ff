package mem

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// PMSoftDirty is the soft-dirty bit of a pagemap entry (cleared for the
// whole process by writing 4 to /proc/PID/clear_refs).
const PMSoftDirty = 1 << 55

// Tracker finds the pages of another process written since the last look:
// the building block of a pre-copy, which copies memory while the process
// runs and then only what it wrote meanwhile.
//
// Two mechanisms, the first preferred:
//   - asynchronous userfaultfd write-protection (UFFD_FEATURE_WP_ASYNC),
//     read and reset in one step by the PAGEMAP_SCAN ioctl: the first write
//     to a protected page takes one fault and lifts the protection, and a
//     scan reports the pages written and protects them again atomically;
//     the process may run throughout. The userfaultfd must belong to the
//     process (it was opened inside it); closing the Tracker's copy, or
//     relocate dying, ends the tracking and lifts every protection.
//   - soft-dirty bits (clear_refs 4, pagemap bit 55), on kernels without
//     PAGEMAP_SCAN. Reading and clearing are two steps, so Written must be
//     called while the process is stopped.
type Tracker struct {
	pid  int
	pm   *os.File
	uffd int // -1: soft-dirty
	// registered ranges (userfaultfd), in address order
	regs []Range
	vec  []pageRegion
}

// SoftDirty reports whether the tracker uses soft-dirty bits (Written then
// needs the process stopped).
func (t *Tracker) SoftDirty() bool { return t.uffd < 0 }

// NewSoftDirtyTracker tracks pid's writes with soft-dirty bits, starting
// now (every soft-dirty bit of the process is cleared).
func NewSoftDirtyTracker(pid int) (*Tracker, error) {
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	t := &Tracker{pid: pid, pm: pm, uffd: -1}
	if err := t.clearRefs(); err != nil {
		pm.Close()
		return nil, err
	}
	return t, nil
}

func (t *Tracker) clearRefs() error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", t.pid), []byte("4"), 0); err != nil {
		return fmt.Errorf("clear soft-dirty bits of pid %d: %w", t.pid, err)
	}
	return nil
}

// Track starts tracking writes to ranges (page aligned, each inside one
// mapping that may be write-protected: private or shared anonymous memory,
// shmem). Every page of them counts as written until the next Written.
// With soft-dirty bits, the whole process is always tracked and ranges
// only matter to Written.
func (t *Tracker) Track(ranges []Range) error {
	if t.uffd < 0 {
		return nil
	}
	for _, r := range ranges {
		if err := uffdRegisterWP(t.uffd, r); err != nil {
			return &Error{Op: "UFFDIO_REGISTER", PID: t.pid, Addr: r.Start, Err: err}
		}
		t.regs = append(t.regs, r)
	}
	slices.SortFunc(t.regs, func(a, b Range) int { return cmpAddr(a.Start, b.Start) })
	return nil
}

// Untrack stops tracking ranges (a mapping that went away or changed);
// ranges no longer mapped are skipped.
func (t *Tracker) Untrack(ranges []Range) error {
	if t.uffd < 0 {
		return nil
	}
	var errs []error
	for _, r := range ranges {
		if err := uffdUnregister(t.uffd, r); err != nil && !errors.Is(err, errNotMapped) {
			errs = append(errs, &Error{Op: "UFFDIO_UNREGISTER", PID: t.pid, Addr: r.Start, Err: err})
		}
		t.regs = slices.DeleteFunc(t.regs, func(x Range) bool { return x == r })
	}
	return errors.Join(errs...)
}

// Written calls fn for each run of pages of ranges written since the last
// call (or since Track), in address order, and starts the next interval.
// Runs never exceed maxPages pages.
func (t *Tracker) Written(ranges []Range, maxPages int, fn func(Range) error) error {
	if t.uffd < 0 {
		return t.softDirtyWritten(ranges, maxPages, fn)
	}
	for _, r := range ranges {
		err := t.scanWritten(r, func(w Range) error { return splitRun(w, maxPages, fn) })
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *Tracker) softDirtyWritten(ranges []Range, maxPages int, fn func(Range) error) error {
	p := &Pagemap{f: t.pm, buf: make([]byte, 8*32768)}
	dirty := func(e uint64) bool { return e&PMSoftDirty != 0 }
	for _, r := range ranges {
		if err := p.Runs(r, maxPages, dirty, fn); err != nil {
			return err
		}
	}
	return t.clearRefs()
}

// Close ends the tracking: closing the userfaultfd unregisters every range
// and lifts the write protection (the kernel does it when the last
// reference goes).
func (t *Tracker) Close() error {
	var err error
	if t.uffd >= 0 {
		err = closeFD(t.uffd)
		t.uffd = -1
	}
	return errors.Join(err, t.pm.Close())
}

// splitRun calls fn for r in pieces of at most maxPages pages.
func splitRun(r Range, maxPages int, fn func(Range) error) error {
	step := uint64(maxPages) * PageSize
	for a := r.Start; a < r.End; a += step {
		if err := fn(Range{Start: a, End: min(a+step, r.End)}); err != nil {
			return err
		}
	}
	return nil
}

func cmpAddr(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Pending counts the pages of ranges written since the last look, without
// starting a new interval.
func (t *Tracker) Pending(ranges []Range) (int64, error) {
	var n int64
	count := func(r Range) error { n += int64(r.Len() / PageSize); return nil }
	for _, r := range ranges {
		var err error
		if t.uffd < 0 {
			p := &Pagemap{f: t.pm, buf: make([]byte, 8*32768)}
			err = p.Runs(r, 1<<20, func(e uint64) bool { return e&PMSoftDirty != 0 }, count)
		} else {
			err = t.scan(r, false, count)
		}
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Reopen opens the process's pagemap again and reports whether the
// memory tracked so far is gone: after an exec the old pagemap refers to
// the old address space, and reads nothing once that is freed. Nothing
// of the new one was tracked (soft-dirty bits are set on every new page,
// so they cannot tell either).
func (t *Tracker) Reopen() (replaced bool, err error) {
	var b [8]byte
	n, _ := t.pm.ReadAt(b[:], 0)
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", t.pid))
	if err != nil {
		return false, err
	}
	t.pm.Close()
	t.pm = pm
	return n == 0, nil
}
