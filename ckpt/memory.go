package ckpt

import (
	"context"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/proc"
)

// memRun is a run of pages to copy into the image.
type memRun struct {
	mem.Range
	forced bool // not readable: go through /proc/PID/mem
	resend bool // may replace an earlier copy (pre-copy): zero pages are stored too
}

// chunkPages is the largest run handed to the image writer at once.
const chunkPages = 256

// unsupportedVMFlags are smaps VmFlags of mappings relocate cannot carry.
var unsupportedVMFlags = map[string]string{
	"io": "a device mapping (VM_IO)",
	"pf": "a device mapping (VM_PFNMAP)",
	"ht": "a hugetlbfs mapping",
}

// classify decides how a mapping is saved.
func classify(m proc.Mapping) string {
	switch {
	case m.Path == "[vsyscall]":
		return VMAVsyscall
	case m.Path == "[vdso]" || m.Path == "[vvar]" || m.Path == "[vvar_vclock]":
		return VMAVDSO
	case m.Shared && strings.HasPrefix(m.Path, "/SYSV"):
		return VMASysV
	case m.Shared && (m.Path == "" || m.Deleted || strings.HasPrefix(m.Path, "/dev/zero") ||
		strings.HasPrefix(m.Path, "/SYSV") || strings.HasPrefix(m.Path, "/memfd:")):
		return VMAShmem
	case m.Shared:
		return VMAShared
	case m.Path == "" || strings.HasPrefix(m.Path, "["):
		return VMAAnon
	case m.Deleted || strings.HasPrefix(m.Path, "/memfd:"):
		return VMADeleted
	default:
		return VMAFile
	}
}

// keepPage selects the pagemap entries whose page content the image needs.
func keepPage(kind string) func(uint64) bool {
	switch kind {
	case VMAAnon, VMAShmem:
		return func(e uint64) bool { return e&(mem.PMPresent|mem.PMSwapped) != 0 }
	case VMAFile:
		// Only pages the process changed (anonymous COW copies).
		return func(e uint64) bool {
			return e&mem.PMSwapped != 0 || e&mem.PMPresent != 0 && e&mem.PMFileShared == 0
		}
	case VMADeleted:
		return func(uint64) bool { return true }
	}
	return nil
}

// collectMemory builds the VMA list and the runs of pages to save.
func (d *dumper) collectMemory(p *Process) error {
	b, err := d.fs.Read(d.pid, "smaps")
	if err != nil {
		return err
	}
	maps, err := proc.ParseSmaps(b)
	if err != nil {
		return err
	}
	pm, err := mem.OpenPagemap(d.pid)
	if err != nil {
		return err
	}
	defer pm.Close()
	ids := map[string]*FileID{} // a library is mapped several times: read its ELF notes once
	for _, m := range maps {
		v := VMA{Start: m.Start, End: m.End, Shared: m.Shared, Kind: classify(m), Name: m.Path,
			Offset: m.Offset, Flags: m.VmFlags}
		if m.Read {
			v.Prot |= unix.PROT_READ
		}
		if m.Write {
			v.Prot |= unix.PROT_WRITE
		}
		if m.Exec {
			v.Prot |= unix.PROT_EXEC
		}
		for flag, what := range unsupportedVMFlags {
			if m.HasFlag(flag) && v.Kind != VMAVDSO && v.Kind != VMAVsyscall {
				return &MappingError{PID: d.pid, Start: m.Start, End: m.End, Path: m.Path, Op: "dump",
					Err: fmt.Errorf("%s: %w", what, ErrUnsupported)}
			}
		}
		if v.Kind == VMAFile || v.Kind == VMAShared {
			if ids[m.Path] == nil {
				ids[m.Path] = fileID(m.Path)
			}
			v.File = ids[m.Path]
			if v.File == nil {
				return &MappingError{PID: d.pid, Start: m.Start, End: m.End, Path: m.Path, Op: "stat", Err: errors.New("mapped file is not reachable by path")}
			}
		}
		if v.Kind == VMASysV {
			if v.SysV, err = d.files.sysvSegment(d.pid, m); err != nil {
				return &MappingError{PID: d.pid, Start: m.Start, End: m.End, Path: m.Path, Op: "dump", Err: err}
			}
		}
		if v.Kind == VMAShmem && m.Inode != 0 {
			if v.Obj, err = d.files.shmemObject(d.pid, m); err != nil {
				return &MappingError{PID: d.pid, Start: m.Start, End: m.End, Path: m.Path, Op: "dump", Err: err}
			}
		}
		if d.later == nil || !d.later(v) {
			runs, err := scanVMA(pm, &v)
			if err != nil {
				return &MappingError{PID: d.pid, Start: m.Start, End: m.End, Path: m.Path, Op: "scan pagemap", Err: err}
			}
			d.runs = append(d.runs, runs...)
		}
		p.VMAs = append(p.VMAs, v)
	}
	// Without it a restore on this same kernel works as before; on
	// another it cannot tell the vDSOs apart (see placeVDSO).
	p.VDSO, _ = readVDSO(d.pid, p.VMAs)
	return nil
}

// scanVMA lists the runs of pages of v to save and counts them in
// v.Pages.
func scanVMA(pm *mem.Pagemap, v *VMA) ([]memRun, error) {
	keep := keepPage(v.Kind)
	if keep == nil || v.Obj != 0 {
		return nil, nil
	}
	forced := v.Prot&unix.PROT_READ == 0
	var runs []memRun
	err := pm.Runs(mem.Range{Start: v.Start, End: v.End}, chunkPages, keep, func(r mem.Range) error {
		runs = append(runs, memRun{Range: r, forced: forced})
		v.Pages += r.Len() / mem.PageSize
		return nil
	})
	return runs, err
}

// runBytes is the memory the collected runs cover.
func (d *dumper) runBytes() int64 {
	var total int64
	for _, r := range d.runs {
		total += int64(r.Len())
	}
	return total
}

// writeMemory copies the collected runs into the image, batching many runs
// into one process_vm_readv. Compression happens in the writer's workers,
// in parallel with the reads.
func (d *dumper) writeMemory(ctx context.Context, w *image.Writer) error {
	const batch = 16
	locals := make([][]byte, 0, batch)
	remotes := make([]mem.Range, 0, batch)
	resend := make([]bool, 0, batch)
	write := func(r memRun, buf []byte) error {
		if r.resend {
			return w.ResendPages(d.pid, r.Start, buf)
		}
		return w.WritePages(d.pid, r.Start, buf)
	}
	flush := func() error {
		if len(remotes) == 0 {
			return nil
		}
		if err := mem.ReadRuns(d.pid, locals, remotes); err != nil {
			return err
		}
		for i, r := range remotes {
			if err := write(memRun{Range: r, resend: resend[i]}, locals[i]); err != nil {
				return err
			}
			d.opts.Progress.add(int64(r.Len()))
		}
		locals, remotes, resend = locals[:0], remotes[:0], resend[:0]
		return ctx.Err()
	}
	for _, r := range d.runs {
		buf := w.PageBuffer()[:r.Len()]
		if r.forced {
			if err := mem.ReadForced(d.pid, r.Start, buf); err != nil {
				return err
			}
			if err := write(r, buf); err != nil {
				return err
			}
			d.opts.Progress.add(int64(r.Len()))
			continue
		}
		locals = append(locals, buf)
		remotes = append(remotes, r.Range)
		resend = append(resend, r.resend)
		if len(remotes) == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// fileID stats path; nil when it cannot be reached.
func fileID(path string) *FileID {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil
	}
	return &FileID{Path: path, Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), BuildID: buildID(path)}
}

// buildID returns the GNU build ID note of an ELF file, hex-encoded, or "".
func buildID(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		return ""
	}
	b, err := s.Data()
	// Elf_Nhdr: namesz, descsz, type (3 = NT_GNU_BUILD_ID), "GNU\0", desc.
	if err != nil || len(b) < 16 || string(b[12:16]) != "GNU\x00" {
		return ""
	}
	n := int(f.ByteOrder.Uint32(b[4:8]))
	if 16+n > len(b) {
		return ""
	}
	return hex.EncodeToString(b[16 : 16+n])
}

// linkShmem points open descriptors of deleted files and memfds that are
// also mapped shared at the shared memory object the mappings use: the
// descriptor and the mappings stay one object after a restore, and the
// contents travel once.
func (t *fileTable) linkShmem() {
	for key, obj := range t.shmem {
		for _, ref := range t.byIno[key] {
			f := &t.files[ref.index]
			if (f.Kind != FileDeleted && f.Kind != FileMemfd) || f.Obj != 0 {
				continue
			}
			f.Obj = obj
			t.dropBlob(f.Blob)
			f.Blob, f.Size = 0, 0
		}
	}
}
