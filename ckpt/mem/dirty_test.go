package mem

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// trackedRegion maps n fresh pages, fills them, and returns them with
// their range.
func trackedRegion(t *testing.T, n int) ([]byte, Range) {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	for i := range b {
		b[i] = byte(i)
	}
	start := uint64(uintptrOf(b))
	return b, Range{Start: start, End: start + uint64(len(b))}
}

func written(t *testing.T, tr *Tracker, r Range) []uint64 {
	t.Helper()
	var pages []uint64
	err := tr.Written([]Range{r}, 4, func(w Range) error {
		if w.Len() > 4*PageSize || w.Start < r.Start || w.End > r.End {
			t.Fatalf("run %#x-%#x outside %#x-%#x or longer than 4 pages", w.Start, w.End, r.Start, r.End)
		}
		for a := w.Start; a < w.End; a += PageSize {
			pages = append(pages, (a-r.Start)/PageSize)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pages
}

// checkTracker: after Track everything counts as written once; then
// exactly the pages written since the last look, whatever was only read.
func checkTracker(t *testing.T, tr *Tracker, b []byte, r Range) {
	all := written(t, tr, r)
	if len(all) != len(b)/PageSize {
		t.Fatalf("first look: %d pages written, want all %d", len(all), len(b)/PageSize)
	}
	if got := written(t, tr, r); len(got) != 0 {
		t.Fatalf("nothing written, but pages %v reported", got)
	}
	sum := 0
	for _, p := range []int{3, 10, 11, 12, 40} {
		sum += int(b[p*PageSize+7]) // reads do not count
	}
	for _, p := range []int{3, 10, 11, 12, 40} {
		b[p*PageSize+100] = byte(sum)
	}
	for range 2 { // Pending looks without starting a new interval
		if n, err := tr.Pending([]Range{r}); err != nil || n != 5 {
			t.Fatalf("pending: %d pages (%v), want 5", n, err)
		}
	}
	if got, want := written(t, tr, r), []uint64{3, 10, 11, 12, 40}; !slices.Equal(got, want) {
		t.Fatalf("written %v, want %v", got, want)
	}
	b[63*PageSize] = 1
	if got, want := written(t, tr, r), []uint64{63}; !slices.Equal(got, want) {
		t.Fatalf("written %v, want %v", got, want)
	}
}

func TestUffdTracker(t *testing.T) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|1 /* UFFD_USER_MODE_ONLY */, 0, 0)
	if e != 0 {
		t.Skipf("userfaultfd: %v", e)
	}
	tr, err := NewUffdTracker(os.Getpid(), int(fd))
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			t.Skipf("no asynchronous write-protection here: %v", err)
		}
		t.Fatal(err)
	}
	b, r := trackedRegion(t, 64)
	if err := tr.Track([]Range{r}); err != nil {
		t.Fatal(err)
	}
	// smaps shows a registered mapping with "uw" (what precopy_file.txtar
	// wants gone once a dump has returned).
	if !smapsFlag(t, r.Start, "uw") {
		t.Fatal(`a write-protected mapping without "uw" in its smaps VmFlags`)
	}
	checkTracker(t, tr, b, r)
	// A range that is not registered is refused, not reported clean.
	_, other := trackedRegion(t, 4)
	if err := tr.Written([]Range{other}, 4, func(Range) error { return nil }); err == nil {
		t.Fatal("PAGEMAP_SCAN of an unregistered range was accepted")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	b[5*PageSize] = 9 // no protection left after Close
	if smapsFlag(t, r.Start, "uw") {
		t.Fatal(`"uw" in the smaps VmFlags after Close`)
	}
}

// smapsFlag reports whether this process's mapping at addr has flag among
// its smaps VmFlags.
func smapsFlag(t *testing.T, addr uint64, flag string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		var start, end uint64
		if _, err := fmt.Sscanf(line, "%x-%x ", &start, &end); err == nil && !strings.HasPrefix(line, "VmFlags") {
			in = start <= addr && addr < end
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return slices.Contains(strings.Fields(line)[1:], flag)
		}
	}
	t.Fatalf("no mapping at %#x in smaps", addr)
	return false
}

func TestSoftDirtyTracker(t *testing.T) {
	tr, err := NewSoftDirtyTracker(os.Getpid())
	if err != nil {
		t.Skipf("soft-dirty: %v", err)
	}
	defer tr.Close()
	b, r := trackedRegion(t, 64)
	if got := written(t, tr, r); len(got) == 0 {
		t.Skip("this kernel has no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY)")
	}
	for i := 0; i < len(b); i += PageSize {
		b[i]++ // the first look of checkTracker wants every page
	}
	checkTracker(t, tr, b, r)
}
