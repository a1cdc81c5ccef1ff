package ckpt

import (
	"sync"
	"sync/atomic"

	"github.com/relocate/relocate/ckpt/mem"
)

// pageWriters write page runs into the restored processes on several
// goroutines: the first touch of fresh memory (a page fault and a zeroed
// page for each) is what a restore waits for most, and it goes as fast as
// there are cores to take the faults. A run is cut at 2 MiB boundaries and
// a block always goes to the same writer, so a later copy of a page is
// written after the earlier one, as the stream has them.
type pageWriters struct {
	queues []chan pageBlock
	wg     sync.WaitGroup
	err    atomic.Pointer[error]
	bufs   sync.Pool
}

type pageBlock struct {
	host int
	r    mem.Range
	data []byte
	buf  *[]byte // data's pooled buffer, if it has one
}

const pageBlockSize = 2 << 20

func newPageWriters(n int) *pageWriters {
	w := &pageWriters{queues: make([]chan pageBlock, max(n, 1))}
	w.bufs.New = func() any { b := make([]byte, pageBlockSize); return &b }
	for i := range w.queues {
		q := make(chan pageBlock, 4)
		w.queues[i] = q
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for b := range q {
				if w.err.Load() == nil {
					if err := mem.WriteRuns(b.host, [][]byte{b.data}, []mem.Range{b.r}); err != nil {
						w.err.CompareAndSwap(nil, &err)
					}
				}
				if b.buf != nil {
					w.bufs.Put(b.buf)
				}
			}
		}()
	}
	return w
}

// write queues data (copied: the caller may reuse it) for addr of host.
// It returns the first error a writer met, if any.
func (w *pageWriters) write(host int, addr uint64, data []byte) error {
	return w.queue(host, addr, data, true)
}

// writeOwned is write for data that stays as it is until wait returns:
// not copied.
func (w *pageWriters) writeOwned(host int, addr uint64, data []byte) error {
	return w.queue(host, addr, data, false)
}

func (w *pageWriters) queue(host int, addr uint64, data []byte, cp bool) error {
	for len(data) > 0 {
		if err := w.err.Load(); err != nil {
			return *err
		}
		end := min(addr+uint64(len(data)), (addr/pageBlockSize+1)*pageBlockSize)
		n := end - addr
		b := pageBlock{host: host, r: mem.Range{Start: addr, End: end}, data: data[:n]}
		if cp {
			b.buf = w.bufs.Get().(*[]byte)
			b.data = (*b.buf)[:copy(*b.buf, data[:n])]
		}
		w.queues[int(addr/pageBlockSize)%len(w.queues)] <- b
		addr, data = end, data[n:]
	}
	return nil
}

// wait lets the writers finish and returns the first error.
func (w *pageWriters) wait() error {
	for _, q := range w.queues {
		close(q)
	}
	w.wg.Wait()
	if err := w.err.Load(); err != nil {
		return *err
	}
	return nil
}
