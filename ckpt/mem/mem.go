package mem

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// PageSize is the only page size relocate supports.
const PageSize = 4096

// Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	PMPresent    = 1 << 63
	PMSwapped    = 1 << 62
	PMFileShared = 1 << 61
	PMExclusive  = 1 << 56
)

// Range is a half-open address range [Start, End).
type Range struct{ Start, End uint64 }

func (r Range) Len() uint64 { return r.End - r.Start }

// MaxIov is the kernel's UIO_MAXIOV.
const MaxIov = 1024

// ErrGone: the address space a pagemap was opened on is no more (the
// process exec'd or exited); its pagemap reads nothing. An answer about
// the world, not a bug: it says Expected, as ckpt's expected errors do.
var ErrGone error = goneError{}

type goneError struct{}

func (goneError) Error() string  { return "the address space is gone (the process exec'd or exited)" }
func (goneError) Expected() bool { return true }

// Pagemap reads one process's pagemap.
type Pagemap struct {
	f   *os.File
	buf []byte
}

// OpenPagemap opens /proc/PID/pagemap.
func OpenPagemap(pid int) (*Pagemap, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	return &Pagemap{f: f, buf: make([]byte, 8*32768)}, nil
}

func (p *Pagemap) Close() error { return p.f.Close() }

// Runs calls fn for every maximal run of pages in r whose pagemap entry
// satisfies keep, in address order; runs never exceed maxPages pages.
func (p *Pagemap) Runs(r Range, maxPages int, keep func(entry uint64) bool, fn func(Range) error) error {
	var run Range
	flush := func() error {
		if run.Len() == 0 {
			return nil
		}
		err := fn(run)
		run = Range{}
		return err
	}
	for addr := r.Start; addr < r.End; {
		n := min((r.End-addr)/PageSize, uint64(len(p.buf)/8))
		b := p.buf[:n*8]
		got, err := p.f.ReadAt(b, int64(addr/PageSize*8))
		if err != nil && err != io.EOF {
			return fmt.Errorf("read pagemap at %#x: %w", addr, err)
		}
		if got < len(b) {
			// A live address space has an entry for every page.
			return fmt.Errorf("read pagemap at %#x: %d of %d bytes: %w", addr, got, len(b), ErrGone)
		}
		for i := uint64(0); i < n; i++ {
			page := addr + i*PageSize
			if keep(binary.LittleEndian.Uint64(b[i*8:])) {
				if run.Len() == 0 {
					run.Start = page
				} else if run.End != page || run.Len() >= uint64(maxPages)*PageSize {
					if err := flush(); err != nil {
						return err
					}
					run.Start = page
				}
				run.End = page + PageSize
			} else if err := flush(); err != nil {
				return err
			}
		}
		addr += n * PageSize
	}
	return flush()
}

// ReadRuns copies each remote range into the matching local buffer (same
// length) with as few process_vm_readv calls as possible. A short read (the
// task's memory changed, or a range is not readable) is an error naming the
// address.
func ReadRuns(pid int, locals [][]byte, remotes []Range) error {
	return transfer(pid, locals, remotes, false)
}

// WriteRuns is ReadRuns in the other direction (process_vm_writev).
func WriteRuns(pid int, locals [][]byte, remotes []Range) error {
	return transfer(pid, locals, remotes, true)
}

func transfer(pid int, locals [][]byte, remotes []Range, write bool) error {
	liov := make([]unix.Iovec, 0, min(len(locals), MaxIov))
	riov := make([]unix.RemoteIovec, 0, min(len(remotes), MaxIov))
	for len(remotes) > 0 {
		k := min(len(remotes), MaxIov)
		liov, riov = liov[:0], riov[:0]
		want := 0
		for i := 0; i < k; i++ {
			if uint64(len(locals[i])) != remotes[i].Len() {
				return fmt.Errorf("internal: buffer of %d bytes for range of %d", len(locals[i]), remotes[i].Len())
			}
			v := unix.Iovec{Base: &locals[i][0]}
			v.SetLen(len(locals[i]))
			liov = append(liov, v)
			riov = append(riov, unix.RemoteIovec{Base: uintptr(remotes[i].Start), Len: int(remotes[i].Len())})
			want += len(locals[i])
		}
		var n int
		var err error
		for {
			if write {
				n, err = unix.ProcessVMWritev(pid, liov, riov, 0)
			} else {
				n, err = unix.ProcessVMReadv(pid, liov, riov, 0)
			}
			if err != unix.EINTR {
				break
			}
		}
		op := "process_vm_readv"
		if write {
			op = "process_vm_writev"
		}
		if err != nil {
			return &Error{Op: op, PID: pid, Addr: remotes[0].Start, Err: err}
		}
		if n != want {
			// Find the first range that was not fully transferred.
			done := 0
			for i := 0; i < k; i++ {
				if done+len(locals[i]) > n {
					return &Error{Op: op, PID: pid, Addr: remotes[i].Start + uint64(n-done), Err: unix.EFAULT}
				}
				done += len(locals[i])
			}
		}
		locals, remotes = locals[k:], remotes[k:]
	}
	return nil
}

// Error names the process and the address a memory transfer failed at.
type Error struct {
	Op   string
	PID  int
	Addr uint64
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s pid %d at %#x: %v", e.Op, e.PID, e.Addr, e.Err)
}
func (e *Error) Unwrap() error { return e.Err }

// ReadForced reads memory through /proc/PID/mem, which (unlike
// process_vm_readv) can read mappings without PROT_READ.
func ReadForced(pid int, addr uint64, b []byte) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return &Error{Op: "read /proc/PID/mem", PID: pid, Addr: addr, Err: err}
	}
	return nil
}

// WriteForced writes through /proc/PID/mem (works on read-only mappings).
func WriteForced(pid int, addr uint64, b []byte) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return &Error{Op: "write /proc/PID/mem", PID: pid, Addr: addr, Err: err}
	}
	return nil
}
