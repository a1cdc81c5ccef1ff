package ptrace

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux constants missing from x/sys (include/uapi/linux/ptrace.h).
const (
	ptraceSeccompGetFilter   = 0x420c // PTRACE_SECCOMP_GET_FILTER
	ptraceSeccompGetMetadata = 0x420d // PTRACE_SECCOMP_GET_METADATA
	bpfMaxInsns              = 4096   // BPF_MAXINSNS
)

// SeccompFilter is one classic-BPF seccomp filter: raw struct sock_filter
// instructions (8 bytes each) and the flags it was installed with.
type SeccompFilter struct {
	Insns []byte
	Flags uint64
}

// SeccompFilters returns the seccomp filters of tid, oldest first (the
// order to install them in); none when it has none.
// Precondition: called on the tracer thread.
func SeccompFilters(tid int) ([]SeccompFilter, error) {
	var out []SeccompFilter
	for n := 0; ; n++ {
		cnt, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(tid), uintptr(n), 0, 0, 0)
		if e == unix.ENOENT || (n == 0 && e == unix.EINVAL) {
			break // past the oldest filter; EINVAL: not in filter mode
		}
		if e != 0 {
			return nil, &Error{Op: "PTRACE_SECCOMP_GET_FILTER", TID: tid, Err: e}
		}
		if cnt == 0 || cnt > bpfMaxInsns {
			return nil, &Error{Op: "PTRACE_SECCOMP_GET_FILTER", TID: tid, Err: errors.New("impossible filter length")}
		}
		buf := make([]byte, 8*cnt)
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(tid), uintptr(n), uintptr(unsafe.Pointer(&buf[0])), 0, 0); e != 0 {
			return nil, &Error{Op: "PTRACE_SECCOMP_GET_FILTER", TID: tid, Err: e}
		}
		md := struct{ FilterOff, Flags uint64 }{FilterOff: uint64(n)}
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetMetadata, uintptr(tid), unsafe.Sizeof(md), uintptr(unsafe.Pointer(&md)), 0, 0); e != 0 {
			return nil, &Error{Op: "PTRACE_SECCOMP_GET_METADATA", TID: tid, Err: e}
		}
		out = append(out, SeccompFilter{Insns: buf, Flags: md.Flags})
		if n > 1024 {
			return nil, &Error{Op: "PTRACE_SECCOMP_GET_FILTER", TID: tid, Err: errors.New("more than 1024 filters")}
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
