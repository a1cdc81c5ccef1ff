package ckpt

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// VDSOInfo identifies the vDSO a process was dumped with. The program holds
// pointers into it (glibc and the Go runtime look its functions up once,
// at start), so a restore on a kernel whose vDSO differs (another version
// or build: the functions sit at other offsets) cannot just move this
// kernel's vDSO to the old address: it maps a proxy there, whose every
// function the old vDSO exported jumps to the same function of this
// kernel's vDSO, placed elsewhere (as CRIU does).
type VDSOInfo struct {
	SHA256 string `json:"sha256"`
	// Symbols are the offsets of the functions it exports, by name.
	Symbols map[string]uint64 `json:"symbols"`
}

// atSysinfoEhdr is AT_SYSINFO_EHDR, the vDSO's address in the auxiliary
// vector (include/uapi/linux/auxvec.h).
const atSysinfoEhdr = 33

// Caps on what an image may claim about its vDSO.
const (
	maxVDSOSymbols = 64
	maxVDSOSize    = 1 << 20
)

// parseVDSO identifies a vDSO from its bytes.
func parseVDSO(b []byte) (*VDSOInfo, error) {
	sum := sha256.Sum256(b)
	info := &VDSOInfo{SHA256: hex.EncodeToString(sum[:]), Symbols: map[string]uint64{}}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("vDSO: %w", err)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("vDSO symbols: %w", err)
	}
	// Offsets are relative to the first PT_LOAD's virtual address (0 on
	// x86_64 and arm64, but not by rule).
	var base uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			base = p.Vaddr
			break
		}
	}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value < base || s.Section == elf.SHN_UNDEF {
			continue
		}
		if len(info.Symbols) >= maxVDSOSymbols {
			break
		}
		info.Symbols[s.Name] = s.Value - base
	}
	return info, nil
}

// readVDSO identifies the [vdso] of pid as vmas place it; nil if it has none.
func readVDSO(pid int, vmas []VMA) (*VDSOInfo, error) {
	for _, v := range vmas {
		if v.Name != "[vdso]" {
			continue
		}
		if v.End-v.Start > maxVDSOSize {
			return nil, fmt.Errorf("vDSO of %d bytes", v.End-v.Start)
		}
		b := make([]byte, v.End-v.Start)
		if err := mem.ReadRuns(pid, [][]byte{b}, []mem.Range{{Start: v.Start, End: v.End}}); err != nil {
			return nil, err
		}
		return parseVDSO(b)
	}
	return nil, nil
}

var (
	localVDSOOnce sync.Once
	localVDSOInfo *VDSOInfo
	localVDSOErr  error
)

// localVDSO identifies this kernel's vDSO (relocate's own, the stub's).
func localVDSO() (*VDSOInfo, error) {
	localVDSOOnce.Do(func() {
		maps, err := stubMaps(os.Getpid())
		if err != nil {
			localVDSOErr = err
			return
		}
		var vmas []VMA
		for _, m := range maps {
			vmas = append(vmas, VMA{Start: m.Start, End: m.End, Name: m.Path})
		}
		localVDSOInfo, localVDSOErr = readVDSO(os.Getpid(), vmas)
	})
	return localVDSOInfo, localVDSOErr
}

// placeVDSO gives the task the vDSO the image expects: this kernel's own,
// moved to the old address, where the image was dumped with this same
// vDSO (or says nothing about it); a proxy otherwise (see VDSOInfo). It
// returns where this kernel's [vdso] ends up, for AT_SYSINFO_EHDR.
func (st *remote) placeVDSO(p *Process, avoid []mem.Range) (mem.Range, error) {
	var old *VMA
	for i := range p.VMAs {
		if p.VMAs[i].Kind == VMAVDSO && p.VMAs[i].Name == "[vdso]" {
			old = &p.VMAs[i]
		}
	}
	here, err := localVDSO()
	if err != nil {
		return mem.Range{}, err
	}
	if p.VDSO == nil || old == nil || here == nil || p.VDSO.SHA256 == here.SHA256 {
		if err := st.moveVDSO(p.VMAs, avoid); err != nil {
			return mem.Range{}, err
		}
		if old == nil {
			return mem.Range{}, nil
		}
		return mem.Range{Start: old.Start, End: old.End}, nil
	}
	size := old.End - old.Start
	if size > maxVDSOSize || size == 0 || size%mem.PageSize != 0 || len(p.VDSO.Symbols) > maxVDSOSymbols {
		return mem.Range{}, fmt.Errorf("image metadata: a vDSO of %d bytes with %d symbols", size, len(p.VDSO.Symbols))
	}
	for _, t := range p.Threads {
		regs, err := ptrace.UnmarshalRegs(findRegSet(t.RegSets, unix.NT_PRSTATUS))
		if err != nil {
			return mem.Range{}, fmt.Errorf("thread %d: %v: %w", t.TID, err, image.ErrCorrupt)
		}
		pc := regs.PC()
		for _, v := range p.VMAs {
			if v.Kind == VMAVDSO && pc >= v.Start && pc < v.End {
				return mem.Range{}, &ProcessError{PID: p.PID, Err: fmt.Errorf(
					"thread %d was frozen inside the vDSO of another kernel build (pc %#x); restore it on the kernel it was dumped on, or dump it again: %w",
					t.TID, pc, ErrUnsupported)}
			}
		}
	}
	// This kernel's vDSO goes wherever it clashes with nothing of the image.
	used := append([]mem.Range(nil), avoid...)
	for _, v := range p.VMAs {
		used = append(used, mem.Range{Start: v.Start, End: v.End})
	}
	used = append(used, mem.Range{Start: st.code, End: st.code + codeSize})
	maps, err := stubMaps(st.pid)
	if err != nil {
		return mem.Range{}, err
	}
	var have []VMA
	for _, m := range maps {
		if isVDSO(m.Path) {
			have = append(have, VMA{Start: m.Start, End: m.End, Name: m.Path})
		}
	}
	if len(have) == 0 {
		return mem.Range{}, fmt.Errorf("this kernel gave the restore stub no vDSO")
	}
	span := mem.Range{Start: have[0].Start, End: have[len(have)-1].End}
	clash := false
	for _, u := range used {
		clash = clash || u.Start < span.End && span.Start < u.End
	}
	if clash {
		gap, err := findGap(append(used, span), span.Len(), 0x10000000)
		if err != nil {
			return mem.Range{}, err
		}
		// The gap lies outside the current block: one move per part suffices.
		delta := gap - span.Start
		for i := range have {
			m := &have[i]
			if _, err := st.call(unix.SYS_MREMAP, m.Start, m.End-m.Start, m.End-m.Start,
				unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, m.Start+delta); err != nil {
				return mem.Range{}, fmt.Errorf("move %s: %w", m.Name, err)
			}
			m.Start += delta
			m.End += delta
		}
	}
	var live mem.Range
	for _, m := range have {
		if m.Name == "[vdso]" {
			live = mem.Range{Start: m.Start, End: m.End}
		}
	}
	// The proxy: a trap everywhere but at the old entry points.
	proxy := bytes.Repeat([]byte{proxyFill}, int(size))
	taken := map[uint64]string{}
	for name, off := range p.VDSO.Symbols {
		if off > size-vdsoJumpLen {
			return mem.Range{}, fmt.Errorf("image metadata: vDSO symbol %s at %#x of %d bytes", name, off, size)
		}
		to, ok := here.Symbols[name]
		if !ok {
			continue // a function this kernel lacks: calling it traps
		}
		for o, other := range taken {
			if o != off && o < off+vdsoJumpLen && off < o+vdsoJumpLen {
				return mem.Range{}, fmt.Errorf("the image's vDSO functions %s and %s are too close for a jump each: %w", name, other, ErrUnsupported)
			}
		}
		taken[off] = name
		copy(proxy[off:], vdsoJump(live.Start+to))
	}
	if _, err := st.call(unix.SYS_MMAP, old.Start, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0); err != nil {
		return mem.Range{}, fmt.Errorf("map the vDSO proxy at %#x: %w", old.Start, err)
	}
	if err := mem.WriteRuns(st.pid, [][]byte{proxy}, []mem.Range{{Start: old.Start, End: old.End}}); err != nil {
		return mem.Range{}, err
	}
	if _, err := st.call(unix.SYS_MPROTECT, old.Start, size, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return mem.Range{}, err
	}
	return live, nil
}
