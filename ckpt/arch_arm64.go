package ckpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/ptrace"
)

// The arm64 side of the architecture layer (see regsets.go). Unlike amd64,
// where NT_PRSTATUS holds fs_base and one XSAVE area holds all the rest,
// an arm64 thread's state is spread over several regsets: TLS (tpidr_el0,
// and tpidr2_el0 with SME) is not in the general registers, the
// floating-point state is NT_PRFPREG or, with SVE, NT_ARM_SVE (which also
// carries the vector length), and the pointer-authentication keys are
// per process (set at exec: a restored process that kept the stub's keys
// would fault on its first return through a signed link register).

const (
	sveBufSize   = 64 << 10 // more than struct user_sve_header + the Z, P and FFR registers at the largest vector length (2048 bits)
	sveHdrSize   = 16       // struct user_sve_header
	svePtRegsSVE = 1        // SVE_PT_REGS_SVE: header.flags, the registers are live SVE state
)

// Register sets carried, in the order loadRegSets writes them (general
// registers last). Optional ones are skipped where this kernel or CPU
// does not have them.
var archRegSets = []regSetKind{
	{Note: unix.NT_ARM_TLS, Min: 8, Max: 16},
	{Note: unix.NT_ARM_PAC_ENABLED_KEYS, Min: 8, Max: 8, Optional: true},
	{Note: unix.NT_ARM_PACA_KEYS, Min: 64, Max: 64, Optional: true},
	{Note: unix.NT_ARM_PACG_KEYS, Min: 16, Max: 16, Optional: true},
	{Note: unix.NT_ARM_TAGGED_ADDR_CTRL, Min: 8, Max: 8, Optional: true},
	{Note: unix.NT_ARM_POE, Min: 8, Max: 8, Optional: true},
	{Note: unix.NT_ARM_FPMR, Min: 8, Max: 8, Optional: true},
	// Either of these two: the floating-point and SIMD state.
	{Note: unix.NT_ARM_SVE, Min: sveHdrSize + 512, Max: sveBufSize, Optional: true},
	{Note: unix.NT_PRFPREG, Min: 528, Max: 528, Optional: true},
	{Note: unix.NT_PRSTATUS, Min: ptrace.PrstatusSize, Max: ptrace.PrstatusSize},
}

// notSupported reports a regset this kernel or CPU does not have.
func notSupported(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EOPNOTSUPP)
}

// dumpRegSets reads the register sets of a frozen thread; regs are its
// general registers as found at the freeze. State relocate cannot carry
// is refused: SME streaming mode or a live ZA array, and an enabled
// guarded control stack.
// Precondition: called on the tracer thread.
func dumpRegSets(tid int, regs ptrace.Regs) ([]RegSet, error) {
	if err := refuseArchState(tid); err != nil {
		return nil, err
	}
	var out []RegSet
	haveSVE := false
	for _, k := range archRegSets {
		switch {
		case k.Note == unix.NT_PRSTATUS:
			r := regs.ForResume()
			out = append(out, RegSet{Note: unix.NT_PRSTATUS, Data: r.Marshal()})
			continue
		case k.Note == unix.NT_PRFPREG && haveSVE:
			continue // NT_ARM_SVE holds it
		}
		b, err := ptrace.GetRegSet(tid, int(k.Note), make([]byte, (k.Max+15)&^15))
		if err != nil {
			if k.Optional && notSupported(err) {
				continue
			}
			return nil, err
		}
		if k.Note == unix.NT_ARM_SVE {
			// The kernel fills the buffer to the largest vector length;
			// struct user_sve_header's size is what the state takes.
			size := int(binary.LittleEndian.Uint32(b))
			if size <= sveHdrSize {
				continue // SVE inactive: only in streaming mode, refused above
			}
			if size < k.Min || size > len(b) {
				return nil, fmt.Errorf("thread %d: SVE state of %d bytes", tid, size)
			}
			b = b[:size]
			haveSVE = true
		}
		out = append(out, RegSet{Note: k.Note, Data: bytes.Clone(b)})
	}
	if !haveSVE && findRegSet(out, unix.NT_PRFPREG) == nil {
		return nil, fmt.Errorf("thread %d: no floating-point registers (neither NT_ARM_SVE nor NT_PRFPREG)", tid)
	}
	return out, nil
}

// refuseArchState refuses thread state that dumpRegSets does not carry.
func refuseArchState(tid int) error {
	le := binary.LittleEndian
	refuse := func(what string) error {
		return fmt.Errorf("thread %d %s, which relocate cannot carry: %w", tid, what, ErrUnsupported)
	}
	// struct user_sve_header: size covers registers only when active.
	if b, err := ptrace.GetRegSet(tid, unix.NT_ARM_SSVE, make([]byte, sveHdrSize)); err == nil && len(b) >= 4 && le.Uint32(b) > sveHdrSize {
		return refuse("is in SME streaming mode")
	}
	// struct user_za_header: likewise, size > header when ZA is on.
	if b, err := ptrace.GetRegSet(tid, unix.NT_ARM_ZA, make([]byte, sveHdrSize)); err == nil && len(b) >= 4 && le.Uint32(b) > sveHdrSize {
		return refuse("has the SME ZA array enabled")
	}
	// struct user_gcs: features_enabled first.
	if b, err := ptrace.GetRegSet(tid, unix.NT_ARM_GCS, make([]byte, 24)); err == nil && len(b) >= 8 && le.Uint64(b) != 0 {
		return refuse("has a guarded control stack enabled")
	}
	return nil
}

// loadRegSets gives a restored thread its registers from the image, in
// archRegSets order: the general registers last.
// Precondition: called on the tracer thread; sets passed checkRegSets.
func loadRegSets(tid int, sets []RegSet) error {
	for _, k := range archRegSets {
		if k.Note == unix.NT_PRSTATUS {
			continue
		}
		b := findRegSet(sets, k.Note)
		if b == nil {
			continue
		}
		if err := ptrace.SetRegSet(tid, int(k.Note), bytes.Clone(b)); err != nil {
			return fmt.Errorf("thread %d: register set %#x: %w", tid, k.Note, err)
		}
	}
	return setGeneralRegs(tid, sets)
}

// checkCPUState refuses a CPU that cannot take the image's SVE state: a
// vector length above this CPU's largest. stub is a stopped task here.
// Precondition: called on the tracer thread.
func checkCPUState(stub int, cp *Checkpoint) error {
	le := binary.LittleEndian
	maxVL := 0
	if b, err := ptrace.GetRegSet(stub, unix.NT_ARM_SVE, make([]byte, sveHdrSize)); err == nil && len(b) >= 12 {
		maxVL = int(le.Uint16(b[10:]))
	}
	for _, p := range cp.Processes {
		for _, t := range p.Threads {
			sve := findRegSet(t.RegSets, unix.NT_ARM_SVE)
			if sve == nil {
				continue
			}
			if vl := int(le.Uint16(sve[8:])); vl > maxVL {
				return fmt.Errorf("thread %d uses an SVE vector length of %d bytes, this CPU has at most %d: %w", t.TID, vl, maxVL, ErrUnsupported)
			}
		}
	}
	return nil
}

// cpuState is what the image header records of the CPU state: the
// XSAVE fields are amd64's, nothing on arm64.
func cpuState(*Thread) (xcr0 uint64, size int) { return 0, 0 }

// cpuFlagsKey names the /proc/cpuinfo line with the CPU's features
// (the HWCAP names).
const cpuFlagsKey = "Features"

// userVisibleFlag reports the features a restore compares: every HWCAP
// but the timer event stream, which is the kernel's business.
func userVisibleFlag(f string) bool { return f != "evtstrm" }

// epollEvent encodes struct epoll_event, naturally aligned on arm64
// (EPOLL_PACKED is x86-64 only): events, 4 bytes of padding, data.
func epollEvent(events uint32, data uint64) []byte {
	ev := make([]byte, 16)
	binary.LittleEndian.PutUint32(ev, events)
	binary.LittleEndian.PutUint64(ev[8:], data)
	return ev
}

// initLoop is the whole program of the init of a PID namespace made by
// restore --pidns, run from the restore code page: reap every child
// (wait4(-1, NULL, __WALL, NULL)) until there are none (-ECHILD), then
// exit_group(0). No stack, no memory of its own.
var initLoop = words(
	0x92800000, // loop: mov x0, #-1
	0xd2800001, // mov x1, #0
	0xd2a80002, // mov x2, #0x40000000 (__WALL)
	0xd2800003, // mov x3, #0
	0xd2802088, // mov x8, #260 (wait4)
	0xd4000001, // svc #0
	0xb100281f, // cmn x0, #10 (-ECHILD)
	0x54ffff21, // b.ne loop
	0xd2800000, // mov x0, #0
	0xd2800bc8, // mov x8, #94 (exit_group)
	0xd4000001, // svc #0
)

func words(w ...uint32) []byte {
	b := make([]byte, 0, 4*len(w))
	for _, x := range w {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

// upgradeLegacyRegs: format 1 images were amd64 only, and the header's
// architecture check refuses them here first.
func upgradeLegacyRegs(t *Thread) error {
	return fmt.Errorf("thread %d: format 1 registers are amd64's: %w", t.TID, ErrUnsupported)
}
