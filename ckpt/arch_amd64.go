package ckpt

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

const archName = "amd64"

// Kernel-internal restart codes a task frozen in a syscall may show in rax
// (include/linux/errno.h).
const (
	errRestartSys         = 512
	errRestartNoIntr      = 513
	errRestartNoHand      = 514
	errRestartRestartBlck = 516
)

// imageRegs turns the registers of a frozen thread into the registers it
// must resume with after a restore. A syscall interrupted by the freeze is
// set up to run again: its arguments are still in rdi..r9. That includes
// -ERESTART_RESTARTBLOCK (nanosleep, poll, futex with a timeout), whose
// kernel restart_block cannot migrate: re-running the original syscall
// waits a relative timeout again in full, where turning it into EINTR (as
// DESIGN first said) makes programs like tail -f exit. orig_rax becomes -1
// so the restored kernel does not adjust the registers a second time.
func imageRegs(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) >= 0 {
		switch -int64(r.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlck:
			r.Rax = r.Orig_rax
			r.Rip -= 2
		}
	}
	r.Orig_rax = ^uint64(0)
	return r
}

// xsaveInfo reads the software-reserved bytes of an XSAVE area as the kernel
// fills them for NT_X86_XSTATE (struct _fpx_sw_bytes at offset 464): the
// enabled feature mask (XCR0) and the xstate size.
func xsaveInfo(x []byte) (xcr0 uint64, size int) {
	const swBytes = 464
	const fpxMagic1 = 0x46505853
	if len(x) < swBytes+24 || binary.LittleEndian.Uint32(x[swBytes:]) != fpxMagic1 {
		return 0, len(x)
	}
	return binary.LittleEndian.Uint64(x[swBytes+8:]), int(binary.LittleEndian.Uint32(x[swBytes+16:]))
}

// regsSP returns the stack pointer.
func regsSP(r *unix.PtraceRegs) uint64 { return r.Rsp }
