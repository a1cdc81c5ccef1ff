package ckpt

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// Pages of a pre-copy come before the metadata, while the source still
// runs. Holding them in relocate's memory and writing them into the
// process once the metadata came would put the first touch of all that
// memory (seconds for a GiB here) inside the freeze. Instead the restore
// starts its stub when the first of them arrives and writes them there,
// at their own addresses, as they come (earlyPages). When the metadata
// arrives, the stub keeps what still lies in a pre-copied mapping of the
// root process and drops the rest (adoptEarly); the root is then cloned
// sharing the stub's address space (CLONE_VM), so its pre-copied memory
// is in place before the first page of the frozen pass is read.
//
// What cannot be placed (a page where the stub has its own code page or
// vDSO, or of a process other than the root: its children are cloned from
// it, each address space a copy) or kept (a mapping whose flags changed
// since, a restore into a new PID namespace, whose root is cloned from
// the namespace's init) is held in memory and written after the mappings
// are made (writeHeld), in stream order; a later copy of a page still
// wins, since placed and held pages never share an address.

// maxHeld caps the pre-copied memory a restore keeps in its own memory
// before the metadata says where it goes: an image is untrusted.
const maxHeld = 64 << 30

// earlyPages places the pre-copied pages of one process in a stub.
type earlyPages struct {
	tr   *ptrace.Tracer
	log  *slog.Logger
	hint []mem.Range // the header's regions: the code page keeps clear
	// flags: the mmap flags of each hint region, by index
	flags  []uint64
	pid    int     // whose pages are placed: the first seen
	stub   *remote // nil until the first page, and once given away
	own    []mem.Range
	placed []placedRange // mapped in the stub: sorted, disjoint
	heldAt []mem.Range   // where pages could not be mapped: held for good
	held   heldPages     // what was not placed
	bytes  int64         // placed
	failed bool          // the stub could not start: hold everything
}

type placedRange struct {
	mem.Range
	flags uint64 // MAP_GROWSDOWN, MAP_NORESERVE
}

func newEarlyPages(tr *ptrace.Tracer, h image.Header, log *slog.Logger) *earlyPages {
	e := &earlyPages{tr: tr, log: log}
	regions := slices.Clone(h.Regions)
	slices.SortFunc(regions, func(a, b image.Region) int { return cmp.Compare(a.Start, b.Start) })
	for _, r := range regions {
		if r.Start >= r.End || r.Start%mem.PageSize != 0 || r.End%mem.PageSize != 0 {
			continue
		}
		if n := len(e.hint); n > 0 && e.hint[n-1].End > r.Start {
			continue // overlapping: an image is untrusted
		}
		e.hint = append(e.hint, mem.Range{Start: r.Start, End: r.End})
		e.flags = append(e.flags, r.Flags&(unix.MAP_GROWSDOWN|unix.MAP_NORESERVE))
	}
	return e
}

// add takes one page record of the pre-copy.
func (e *earlyPages) add(p *image.Pages) error {
	if e.stub == nil && !e.failed {
		e.pid = p.PID
		err := e.tr.Do(func() (err error) {
			if e.stub, err = startStub(e.hint); err != nil {
				return err
			}
			maps, err := stubMaps(e.stub.pid)
			for _, m := range maps {
				e.own = append(e.own, mem.Range{Start: m.Start, End: m.End})
			}
			return err
		})
		if err != nil {
			// The restore proper starts its own stub later and says
			// what is wrong, if anything still is.
			logDebug(e.log, "pre-copy: no stub to place pages in", "error", err)
			e.close()
			e.failed = true
		}
	}
	end := p.Addr + uint64(len(p.Data))
	if e.stub == nil || p.PID != e.pid || end <= p.Addr {
		return e.held.add(p)
	}
	r := mem.Range{Start: p.Addr, End: end}
	// A region of the hint the pages fall in is mapped whole, once: one
	// mapping, as the process had it (mappings made piece by piece would
	// each get their own anon_vma and never merge again).
	i, _ := slices.BinarySearchFunc(e.hint, r.Start, func(h mem.Range, a uint64) int { return cmp.Compare(h.End, a+1) })
	for ; i < len(e.hint) && e.hint[i].Start < r.End; i++ {
		h := e.hint[i]
		if slices.ContainsFunc(e.placed, func(p placedRange) bool { return p.Start < h.End && h.Start < p.End }) {
			continue
		}
		// The stub's own mappings may lie inside a large region (its
		// vDSO goes anywhere the kernel's mmap randomization puts it,
		// and a region can be a 64 GiB reservation): the parts around
		// them are each mapped whole. Skipping the region would map its
		// pages one by one, and the restored mapping would come back
		// in pieces.
		for _, part := range subtractRanges(h, e.own) {
			if err := e.mmap(placedRange{Range: part, flags: e.flags[i]}); err != nil {
				// A hint is only a hint (an image is untrusted): the
				// pages are mapped piece by piece below instead.
				logDebug(e.log, "pre-copy: a region of the hint cannot be mapped", "error", err)
			}
		}
	}
	for _, pc := range planPieces(r, e.placed, append(slices.Clone(e.own), e.heldAt...), e.hint, e.flags) {
		data := p.Data[pc.Start-p.Addr : pc.End-p.Addr]
		if pc.how == pieceMap {
			if err := e.mmap(pc.placedRange); err != nil {
				// Held, here and for every later copy of these pages
				// (the held ones are written last: a placed later copy
				// would lose to them).
				logDebug(e.log, "pre-copy: pages held instead of placed", "error", err)
				pc.how = pieceHold
				e.heldAt = mergeRanges(append(e.heldAt, pc.Range))
			}
		}
		if pc.how == pieceHold {
			if err := e.held.add(&image.Pages{PID: p.PID, Addr: pc.Start, Data: data}); err != nil {
				return err
			}
			continue
		}
		if err := mem.WriteRuns(e.stub.pid, [][]byte{data}, []mem.Range{pc.Range}); err != nil {
			return fmt.Errorf("pre-copied pages at %#x: %w", pc.Start, err)
		}
		e.bytes += int64(pc.Len())
	}
	return nil
}

// mmap maps r in the stub, fresh and writable.
func (e *earlyPages) mmap(r placedRange) error {
	err := e.tr.Do(func() error {
		got, err := e.stub.call(unix.SYS_MMAP, r.Start, r.Len(), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE|r.flags, ^uint64(0), 0)
		if err == nil && got != r.Start {
			err = fmt.Errorf("mapped at %#x", got)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("map pre-copied pages at %#x-%#x: %w", r.Start, r.End, err)
	}
	e.placed = insertPlaced(e.placed, r)
	return nil
}

// close kills the stub unless it was given away. Not on the tracer
// thread.
func (e *earlyPages) close() {
	if e == nil || e.stub == nil {
		return
	}
	st := e.stub
	e.stub = nil
	_ = e.tr.Do(func() error { st.kill(); return nil })
}

// adoptEarly settles the placed pages once the metadata is known (used:
// every range of the image). It returns the stub to restore with when it
// can be kept (sh.kept then lists the memory the root finds in place);
// otherwise nil, and every placed page still wanted is held instead.
// Precondition: called on the tracer thread.
func (sh *shared) adoptEarly(used []mem.Range) (*remote, error) {
	e := sh.early
	if e == nil {
		return nil, nil
	}
	defer func() {
		if len(e.held.runs) > 0 {
			sh.precopied = &e.held
		}
	}()
	if e.stub == nil {
		return nil, nil
	}
	st := e.stub
	root := sh.procs[sh.cp.Root]
	var vmas []VMA
	if e.pid == sh.cp.Root {
		vmas = root.p.VMAs
	}
	keep, salvage := sortPlaced(e.placed, vmas)
	code := mem.Range{Start: st.code, End: st.code + codeSize}
	adopt := !sh.opts.PIDNS && !overlapsAny(code, used)
	if !adopt {
		salvage, keep = mergeRanges(append(salvage, keep...)), nil
	}
	for _, r := range salvage {
		if err := e.salvage(r); err != nil {
			return nil, err
		}
	}
	logDebug(sh.opts.Log, "pre-copied pages placed early", "written", e.bytes, "kept_mapped", rangesLen(keep),
		"held", e.held.bytes, "adopted", adopt)
	if !adopt {
		st.kill() // on the tracer thread already
		e.stub = nil
		return nil, nil
	}
	for _, pr := range e.placed {
		for _, r := range subtractRanges(pr.Range, keep) {
			if _, err := st.call(unix.SYS_MUNMAP, r.Start, r.Len()); err != nil {
				return nil, fmt.Errorf("drop pre-copied pages at %#x-%#x: %w", r.Start, r.End, err)
			}
		}
	}
	e.stub = nil // sh.stub now
	sh.kept = keep
	sh.pages += min(e.bytes, rangesLen(keep)) / mem.PageSize // written, at most what stays
	return st, nil
}

// salvage reads a placed range back into held memory.
func (e *earlyPages) salvage(r mem.Range) error {
	const chunk = 4 << 20
	for a := r.Start; a < r.End; a += chunk {
		b := min(r.End, a+chunk)
		data := make([]byte, b-a)
		if err := mem.ReadRuns(e.stub.pid, [][]byte{data}, []mem.Range{{Start: a, End: b}}); err != nil {
			return fmt.Errorf("pre-copied pages at %#x: %w", a, err)
		}
		e.held.runs = append(e.held.runs, heldRun{pid: e.pid, addr: a, data: data})
		e.held.bytes += int64(len(data))
	}
	return nil
}

// pieceHow says what becomes of a piece of a pre-copied page record.
type pieceHow int

const (
	pieceWrite pieceHow = iota // mapped in the stub already
	pieceMap                   // to map, then write
	pieceHold                  // the stub has something of its own there
)

type piece struct {
	placedRange
	how pieceHow
}

// planPieces cuts r into pieces: parts already placed, parts to map
// (with the flags of the hint region they lie in), parts that collide
// with the stub's own mappings. All lists are sorted and disjoint.
func planPieces(r mem.Range, placed []placedRange, own, hint []mem.Range, flags []uint64) []piece {
	cuts := []uint64{r.Start, r.End}
	cut := func(a uint64) {
		if a > r.Start && a < r.End {
			cuts = append(cuts, a)
		}
	}
	for _, p := range placed {
		cut(p.Start)
		cut(p.End)
	}
	for _, o := range append(slices.Clone(own), hint...) {
		cut(o.Start)
		cut(o.End)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []piece
	for i := 0; i+1 < len(cuts); i++ {
		seg := mem.Range{Start: cuts[i], End: cuts[i+1]}
		pc := piece{placedRange: placedRange{Range: seg}, how: pieceMap}
		switch {
		case slices.ContainsFunc(placed, func(p placedRange) bool { return p.Start <= seg.Start && seg.End <= p.End }):
			pc.how = pieceWrite
		case overlapsAny(seg, own):
			pc.how = pieceHold
		default:
			for j, h := range hint {
				if h.Start <= seg.Start && seg.End <= h.End {
					pc.flags = flags[j]
				}
			}
		}
		if n := len(out); n > 0 && out[n-1].how == pc.how && out[n-1].flags == pc.flags {
			out[n-1].End = seg.End
			continue
		}
		out = append(out, pc)
	}
	return out
}

// insertPlaced adds r to the sorted, disjoint list, merged with a
// neighbour of the same flags.
func insertPlaced(placed []placedRange, r placedRange) []placedRange {
	i, _ := slices.BinarySearchFunc(placed, r.Start, func(p placedRange, a uint64) int { return cmp.Compare(p.Start, a) })
	placed = slices.Insert(placed, i, r)
	if i+1 < len(placed) && placed[i].End == placed[i+1].Start && placed[i].flags == placed[i+1].flags {
		placed[i].End = placed[i+1].End
		placed = slices.Delete(placed, i+1, i+2)
	}
	if i > 0 && placed[i-1].End == placed[i].Start && placed[i-1].flags == placed[i].flags {
		placed[i-1].End = placed[i].End
		placed = slices.Delete(placed, i, i+1)
	}
	return placed
}

// sortPlaced splits the placed ranges by what the metadata's mappings
// make of them: keep, inside a pre-copied mapping with the same mmap
// flags (the process can have it as it is); salvage, inside one with
// other flags (the pages are wanted, the mapping is not); anything else
// belonged to memory that went away.
func sortPlaced(placed []placedRange, vmas []VMA) (keep, salvage []mem.Range) {
	for _, v := range vmas {
		if !v.PreCopied {
			continue
		}
		for _, p := range placed {
			lo, hi := max(v.Start, p.Start), min(v.End, p.End)
			if lo >= hi {
				continue
			}
			if p.flags == v.mmapFlags() {
				keep = append(keep, mem.Range{Start: lo, End: hi})
			} else {
				salvage = append(salvage, mem.Range{Start: lo, End: hi})
			}
		}
	}
	return mergeRanges(keep), mergeRanges(salvage)
}

// subtractRanges returns the parts of r outside every range of minus.
func subtractRanges(r mem.Range, minus []mem.Range) []mem.Range {
	out := []mem.Range{r}
	for _, m := range minus {
		var next []mem.Range
		for _, o := range out {
			if m.End <= o.Start || m.Start >= o.End {
				next = append(next, o)
				continue
			}
			if o.Start < m.Start {
				next = append(next, mem.Range{Start: o.Start, End: m.Start})
			}
			if m.End < o.End {
				next = append(next, mem.Range{Start: m.End, End: o.End})
			}
		}
		out = next
	}
	return out
}

// mergeRanges sorts rs and joins the ranges that touch or overlap.
func mergeRanges(rs []mem.Range) []mem.Range {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b mem.Range) int { return cmp.Compare(a.Start, b.Start) })
	var out []mem.Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

func overlapsAny(r mem.Range, rs []mem.Range) bool {
	return slices.ContainsFunc(rs, func(o mem.Range) bool { return o.Start < r.End && r.Start < o.End })
}

func rangesLen(rs []mem.Range) int64 {
	var n int64
	for _, r := range rs {
		n += int64(r.Len())
	}
	return n
}

// heldPages are page records that came before the metadata and could not
// be placed early, in stream order.
type heldPages struct {
	runs  []heldRun
	bytes int64
}

type heldRun struct {
	pid  int
	addr uint64
	data []byte
}

func (h *heldPages) add(p *image.Pages) error {
	h.bytes += int64(len(p.Data))
	if h.bytes > maxHeld {
		return fmt.Errorf("image: more than %d GiB of pages before the metadata: %w", maxHeld>>30, image.ErrCorrupt)
	}
	h.runs = append(h.runs, heldRun{pid: p.PID, addr: p.Addr, data: slices.Clone(p.Data)})
	return nil
}

// writeHeld writes the held pages into the mappings the metadata marks
// PreCopied, in stream order for each page (a later copy wins, and the
// records after the metadata come later still); pages anywhere else
// belonged to memory that went away or was replaced, and are dropped.
func (sh *shared) writeHeld() error {
	if sh.precopied == nil {
		return nil
	}
	pw := newPageWriters(runtime.GOMAXPROCS(0))
	err := func() error {
		for _, h := range sh.precopied.runs {
			rs := sh.procs[h.pid]
			if rs == nil {
				continue
			}
			end := h.addr + uint64(len(h.data))
			for _, v := range rs.p.VMAs {
				if !v.PreCopied || v.End <= h.addr || v.Start >= end {
					continue
				}
				lo, hi := max(v.Start, h.addr), min(v.End, end)
				if err := pw.writeOwned(rs.host, lo, h.data[lo-h.addr:hi-h.addr]); err != nil {
					return err
				}
				sh.pages += int64(hi-lo) / mem.PageSize
				sh.opts.Progress.add(int64(hi - lo))
			}
		}
		return nil
	}()
	err = errors.Join(err, pw.wait())
	sh.precopied = nil
	return err
}
