package ckpt

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// The architecture layer. Everything that depends on the instruction set
// lives in files named *_amd64.go and *_arm64.go, each defining the same
// small set of names, and nowhere else:
//
//   - ptrace.Regs (ckpt/ptrace): the general registers, their accessors
//     (PC, SP, the syscall return register), the syscall calling
//     convention of injection, the syscall-restart rules applied to a
//     frozen thread (Regs.ForResume), and SyscallInsn, the "syscall; trap"
//     code of the restore code page.
//   - here: archRegSets, the register sets (PTRACE_GETREGSET note types) a
//     thread carries in the image; dumpRegSets and loadRegSets read and
//     write them; checkCPUState refuses a CPU that cannot take them;
//     cpuState, cpuFlagsKey and userVisibleFlag describe the CPU; the ABI
//     structures whose layout differs (epollEvent); initLoop, the machine
//     code of restore --pidns's init; upgradeLegacyRegs reads format 1
//     images (amd64 only).
//
// The other structures the engine encodes for injected syscalls are the
// same on both architectures (asm-generic LP64 layouts): kernel
// sigaction with sa_restorer (arm64 defines SA_RESTORER too), stack_t,
// itimerval, itimerspec, rlimit64, sigevent, clone_args, prctl_mm_map.
// Syscall numbers come from x/sys for the build's architecture; injected
// code uses only syscalls both have (dup3, not dup2; no open, pipe, fork).

// archName is the architecture of this build, as Go names it; images and
// surveys record it.
const archName = ptrace.Arch

// regSetKind is one register set a thread of this architecture carries:
// its note type and the sizes an image may give it.
type regSetKind struct {
	Note     uint32
	Min, Max int
	Optional bool // absent where the kernel or CPU lacks it
}

// findRegSet returns the data of the set with that note type, or nil.
func findRegSet(sets []RegSet, note uint32) []byte {
	for _, s := range sets {
		if s.Note == note {
			return s.Data
		}
	}
	return nil
}

// checkRegSets checks a thread's register sets from an image against this
// architecture's: known note types, each at most once, sizes within
// bounds, and the general registers present.
func checkRegSets(tid int, sets []RegSet) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("image metadata: thread %d: %s: %w", tid, fmt.Sprintf(format, a...), image.ErrCorrupt)
	}
	seen := map[uint32]bool{}
	for _, s := range sets {
		var kind *regSetKind
		for i := range archRegSets {
			if archRegSets[i].Note == s.Note {
				kind = &archRegSets[i]
			}
		}
		if kind == nil {
			return bad("register set %#x is not one of %s's", s.Note, archName)
		}
		if seen[s.Note] {
			return bad("register set %#x appears twice", s.Note)
		}
		seen[s.Note] = true
		if len(s.Data) < kind.Min || len(s.Data) > kind.Max || len(s.Data)%4 != 0 {
			return bad("register set %#x of %d bytes", s.Note, len(s.Data))
		}
	}
	if findRegSet(sets, unix.NT_PRSTATUS) == nil {
		return bad("no general registers")
	}
	return nil
}

// setGeneralRegs writes the image's general registers into a restored
// thread.
// Precondition: called on the tracer thread; sets passed checkRegSets.
func setGeneralRegs(tid int, sets []RegSet) error {
	regs, err := ptrace.UnmarshalRegs(findRegSet(sets, unix.NT_PRSTATUS))
	if err != nil {
		return fmt.Errorf("thread %d: %v: %w", tid, err, image.ErrCorrupt)
	}
	return ptrace.SetRegs(tid, &regs)
}
