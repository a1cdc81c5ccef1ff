package ckpt

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

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
// marks PreCopied, in stream order for each page (a later copy wins, and
// the records after the metadata come later still); pages anywhere else
// belonged to memory that went away or was replaced, and are dropped.
// Workers write disjoint 2 MiB blocks in parallel: the first touch of
// fresh memory is what a restore waits for most.
func (sh *shared) writeHeld() error {
	if sh.precopied == nil {
		return nil
	}
	type piece struct {
		host int
		r    mem.Range
		data []byte
	}
	workers := runtime.GOMAXPROCS(0)
	queues := make([][]piece, workers)
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
			// Split at 2 MiB boundaries; a block always goes to the same
			// worker, so copies of one page keep their order.
			for a := lo; a < hi; {
				b := min(hi, (a>>21+1)<<21)
				q := int((a >> 21) % uint64(workers))
				queues[q] = append(queues[q], piece{host: rs.host, r: mem.Range{Start: a, End: b}, data: h.data[a-h.addr : b-h.addr]})
				a = b
			}
		}
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i, q := range queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range q {
				if err := mem.WriteRuns(p.host, [][]byte{p.data}, []mem.Range{p.r}); err != nil {
					errs[i] = err
					return
				}
				sh.opts.Progress.add(int64(p.r.Len()))
			}
		}()
	}
	wg.Wait()
	sh.precopied = nil
	return errors.Join(errs...)
}
