package ckpt

import (
	"fmt"
	"slices"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/mem"
)

// maxHeld caps the pre-copied memory a restore keeps before the metadata
// says where it goes: an image is untrusted.
const maxHeld = 64 << 30

// heldPages are page records that came before the metadata (a pre-copy),
// in stream order.
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

// writeHeld writes the pre-copied pages into the mappings the metadata
// marks PreCopied, in stream order (a later copy of a page wins, and the
// records after the metadata come later still); pages anywhere else
// belonged to memory that went away or was replaced, and are dropped.
func (sh *shared) writeHeld() error {
	if sh.held == nil {
		return nil
	}
	for _, h := range sh.held.runs {
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
			if err := mem.WriteRuns(rs.host, [][]byte{h.data[lo-h.addr : hi-h.addr]}, []mem.Range{{Start: lo, End: hi}}); err != nil {
				return err
			}
			sh.opts.Progress.add(int64(hi - lo))
		}
	}
	sh.held = nil
	return nil
}
