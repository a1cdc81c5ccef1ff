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

// initLoop is the whole program of the init of a PID namespace made by
// restore --pidns, run from the restore code page: reap every child
// (wait4(-1, NULL, __WALL, NULL)) until there are none (-ECHILD), then
// exit_group(0). No stack, no memory of its own.
var initLoop = []byte{
	0xb8, 0x3d, 0x00, 0x00, 0x00, // mov eax, 61 (wait4)
	0x48, 0xc7, 0xc7, 0xff, 0xff, 0xff, 0xff, // mov rdi, -1
	0x31, 0xf6, // xor esi, esi
	0xba, 0x00, 0x00, 0x00, 0x40, // mov edx, __WALL
	0x45, 0x31, 0xd2, // xor r10d, r10d
	0x0f, 0x05, // syscall
	0x48, 0x83, 0xf8, 0xf6, // cmp rax, -ECHILD
	0x75, 0xe2, // jne loop
	0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231 (exit_group)
	0x31, 0xff, // xor edi, edi
	0x0f, 0x05, // syscall
}

// setPC points a stopped task at addr.
func setPC(regs *unix.PtraceRegs, addr uint64) { regs.Rip = addr }
