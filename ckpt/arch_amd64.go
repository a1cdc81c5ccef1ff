package ckpt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/ptrace"
)

// The amd64 side of the architecture layer (see regsets.go): which
// register sets a thread carries, the CPU features that must match, the
// ABI structures whose layout differs between architectures, and the init
// loop of restore --pidns. Registers themselves are ptrace.Regs.

// A thread's register sets on amd64: the general registers and the XSAVE
// area (x87, SSE, AVX, AVX-512, AMX, PKRU: whatever XCR0 enables).
var archRegSets = []regSetKind{
	{Note: unix.NT_PRSTATUS, Min: ptrace.PrstatusSize, Max: ptrace.PrstatusSize},
	{Note: unix.NT_X86_XSTATE, Min: 512 + 64, Max: xstateBufSize},
}

const xstateBufSize = 16384 // larger than any XSAVE area (AMX included)

// dumpRegSets reads the register sets of a frozen thread; regs are its
// general registers as found at the freeze.
// Precondition: called on the tracer thread.
func dumpRegSets(tid int, regs ptrace.Regs) ([]RegSet, error) {
	r := regs.ForResume()
	x, err := ptrace.GetRegSet(tid, unix.NT_X86_XSTATE, make([]byte, xstateBufSize))
	if err != nil {
		return nil, err
	}
	return []RegSet{{Note: unix.NT_PRSTATUS, Data: r.Marshal()}, {Note: unix.NT_X86_XSTATE, Data: bytes.Clone(x)}}, nil
}

// loadRegSets gives a restored thread its registers from the image, the
// general registers last.
// Precondition: called on the tracer thread; sets passed checkRegSets.
func loadRegSets(tid int, sets []RegSet) error {
	if x := findRegSet(sets, unix.NT_X86_XSTATE); x != nil {
		if err := ptrace.SetRegSet(tid, unix.NT_X86_XSTATE, bytes.Clone(x)); err != nil {
			return err
		}
	}
	return setGeneralRegs(tid, sets)
}

// checkCPUState refuses a CPU whose XSAVE features do not cover what the
// image's threads use; stub is a stopped task of this machine.
// Precondition: called on the tracer thread.
func checkCPUState(stub int, cp *Checkpoint) error {
	x, err := ptrace.GetRegSet(stub, unix.NT_X86_XSTATE, make([]byte, xstateBufSize))
	if err != nil {
		return err
	}
	have, _ := xsaveInfo(x)
	for _, p := range cp.Processes {
		for _, t := range p.Threads {
			want, _ := xsaveInfo(findRegSet(t.RegSets, unix.NT_X86_XSTATE))
			if want&^have != 0 {
				return fmt.Errorf("this CPU lacks XSAVE features %#x the process uses: %w", want&^have, ErrUnsupported)
			}
		}
	}
	return nil
}

// cpuState is what the image header records of the CPU state: XCR0 and
// the XSAVE size of the first thread.
func cpuState(t *Thread) (xcr0 uint64, size int) {
	return xsaveInfo(findRegSet(t.RegSets, unix.NT_X86_XSTATE))
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

// cpuFlagsKey names the /proc/cpuinfo line with the CPU's features.
const cpuFlagsKey = "flags"

// userVisibleFlag reports the /proc/cpuinfo flags user space acts on
// (instruction-set extensions), the ones a restore compares.
func userVisibleFlag(f string) bool {
	for _, p := range []string{"sse", "ssse", "avx", "amx", "fma", "f16c", "bmi", "adx", "aes", "sha",
		"popcnt", "movbe", "lzcnt", "abm", "pclmulqdq", "vpclmulqdq", "gfni", "vaes", "rdrand", "rdseed",
		"xsave", "cx16", "erms", "fsrm", "clflushopt", "clwb", "rdpid", "pku", "waitpkg"} {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

// epollEvent encodes struct epoll_event, packed on x86-64
// (include/uapi/linux/eventpoll.h, EPOLL_PACKED): 12 bytes.
func epollEvent(events uint32, data uint64) []byte {
	ev := make([]byte, 12)
	binary.LittleEndian.PutUint32(ev, events)
	binary.LittleEndian.PutUint64(ev[4:], data)
	return ev
}

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

// upgradeLegacyRegs converts the registers of a format 1 image (amd64
// only): struct user_regs_struct as JSON with Go's field names under
// "regs", the XSAVE area under "xstate".
func upgradeLegacyRegs(t *Thread) error {
	var r unix.PtraceRegs
	if err := json.Unmarshal(t.LegacyRegs, &r); err != nil {
		return fmt.Errorf("thread %d: format 1 registers: %v", t.TID, err)
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return err
	}
	var back, orig map[string]any
	if json.Unmarshal(b, &back) != nil || json.Unmarshal(t.LegacyRegs, &orig) != nil || len(orig) != len(back) {
		return fmt.Errorf("thread %d: format 1 registers have %d fields, want %d", t.TID, len(orig), len(back))
	}
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, &r)
	t.RegSets = []RegSet{{Note: unix.NT_PRSTATUS, Data: buf.Bytes()}}
	if len(t.LegacyXState) > 0 {
		t.RegSets = append(t.RegSets, RegSet{Note: unix.NT_X86_XSTATE, Data: t.LegacyXState})
	}
	t.LegacyRegs, t.LegacyXState = nil, nil
	return nil
}
