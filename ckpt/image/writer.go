package image

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pierrec/lz4/v4"
)

// WriterOptions tunes a Writer.
type WriterOptions struct {
	// Workers is the number of goroutines that compress pages; 0 means
	// runtime.GOMAXPROCS(0).
	Workers int
}

// Stats is a snapshot of what a Writer has written so far. Records counts
// records before the trailer, the header included; StoredBytes counts every
// byte written, preamble and (after Close) trailer included; RawBytes is the
// memory given to WritePages, zero pages included.
type Stats struct {
	RawBytes, StoredBytes, Pages, ZeroPages, Records int64
}

// Writer writes an image stream. Page chunks are compressed by a pool of
// worker goroutines while one emitter goroutine writes the finished records
// in exactly the order they were submitted. At most a fixed number of
// chunks is in flight: when the output falls behind, WritePages blocks.
//
// The first error is sticky: every later call returns it. Except for Stats
// and Abort, a Writer's methods must be called from one goroutine.
type Writer struct {
	bw  *bufio.Writer // the emitter's after NewWriter
	crc uint32        // stream CRC so far; the emitter's after NewWriter

	free  chan *job // slots not in flight; taking one is the back-pressure
	work  chan *job // to the workers
	order chan *job // to the emitter, in submission order
	bufs  chan []byte

	done      chan struct{} // closed when the emitter returns
	abort     chan struct{}
	abortOnce sync.Once
	workers   sync.WaitGroup
	closed    bool

	err atomic.Pointer[error]

	raw, stored, pages, zero, records atomic.Int64
}

// job is one slot of the pipeline: a unit of input and the framed records
// it became. Slots and their output buffers are reused.
type job struct {
	kind Kind
	id   uint32 // pid for pages
	addr uint64 // offset for blobs
	in   []byte // a chunk buffer, or a framed meta record
	out  []byte

	ready    chan struct{} // the worker is done with it
	flushed  chan struct{} // a Flush: closed once everything before it is out
	keepZero bool          // store zero pages too (a page resent as zero)

	records, pages, zero int64
}

// NewWriter writes the preamble and the header record to w and starts the
// workers. The Writer never closes w.
func NewWriter(w io.Writer, h Header, opts WriterOptions) (*Writer, error) {
	if len(h.Regions) > MaxRegions {
		return nil, fmt.Errorf("image: header with %d regions, more than %d", len(h.Regions), MaxRegions)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("image: header: %w", err)
	}
	if len(hb) > maxHeaderSize {
		return nil, fmt.Errorf("image: header of %d bytes is larger than %d", len(hb), maxHeaderSize)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Enough slots for every worker to be busy while as many finished
	// chunks wait for the emitter; that bounds memory to about
	// 2*slots*ChunkSize however slow the output is.
	slots := 2*workers + 2
	wr := &Writer{
		bw:    bufio.NewWriterSize(w, 64<<10),
		free:  make(chan *job, slots),
		work:  make(chan *job, slots),
		order: make(chan *job, slots),
		bufs:  make(chan []byte, slots+16),
		done:  make(chan struct{}),
		abort: make(chan struct{}),
	}
	for range slots {
		wr.free <- &job{ready: make(chan struct{}, 1)}
	}
	head := appendRecord(appendPreamble(nil, Major, Minor), KindHeader, hb)
	if err := wr.emit(head); err != nil {
		return nil, err
	}
	// The reader on the other end of a pipe can check the version now.
	if err := wr.bw.Flush(); err != nil {
		return nil, err
	}
	wr.records.Store(1)
	wr.workers.Add(workers)
	for range workers {
		go wr.worker()
	}
	go wr.emitter()
	return wr, nil
}

// PageBuffer returns a buffer of ChunkSize bytes to fill with pages and hand
// to WritePages.
func (w *Writer) PageBuffer() []byte {
	select {
	case b := <-w.bufs:
		return b
	default:
		return make([]byte, ChunkSize)
	}
}

func (w *Writer) recycle(b []byte) {
	if cap(b) != ChunkSize {
		return
	}
	select {
	case w.bufs <- b[:ChunkSize]:
	default:
	}
}

// WritePages queues the pages in buf, which lie at addr in process pid.
// buf is a PageBuffer sliced to a multiple of PageSize; it belongs to the
// Writer from this call on, whatever the call returns.
func (w *Writer) WritePages(pid int, addr uint64, buf []byte) error {
	return w.writePages(pid, addr, buf, false)
}

// ResendPages is WritePages for pages that may have been sent before in
// the stream: zero pages are stored too, since a reader keeps the last copy
// of a page and an omitted zero page would leave the earlier one.
func (w *Writer) ResendPages(pid int, addr uint64, buf []byte) error {
	return w.writePages(pid, addr, buf, true)
}

func (w *Writer) writePages(pid int, addr uint64, buf []byte, keepZero bool) error {
	switch {
	case len(buf) == 0 || len(buf)%PageSize != 0 || len(buf) > ChunkSize:
		w.recycle(buf)
		return fmt.Errorf("image: page buffer of %d bytes is not 1 to %d whole pages", len(buf), ChunkSize/PageSize)
	case addr%PageSize != 0 || addr+uint64(len(buf)) < addr:
		w.recycle(buf)
		return fmt.Errorf("image: pages at %#x+%#x are not page aligned or wrap around", addr, len(buf))
	case pid <= 0 || pid > math.MaxUint32:
		w.recycle(buf)
		return fmt.Errorf("image: pid %d out of range", pid)
	}
	j, err := w.slot()
	if err != nil {
		w.recycle(buf)
		return err
	}
	j.kind, j.id, j.addr, j.in, j.keepZero = KindPages, uint32(pid), addr, buf, keepZero
	w.order <- j
	w.work <- j
	return nil
}

// WriteMeta writes v, encoded as JSON, as a meta record.
func (w *Writer) WriteMeta(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("image: meta: %w", err)
	}
	if len(b) > maxMetaSize {
		return fmt.Errorf("image: meta of %d bytes is larger than %d", len(b), maxMetaSize)
	}
	j, err := w.slot()
	if err != nil {
		return err
	}
	// Framing costs less than the copy a worker would make; the slot still
	// keeps the record in order.
	j.kind, j.in, j.records = KindMeta, appendRecord(nil, KindMeta, b), 1
	j.ready <- struct{}{}
	w.order <- j
	return nil
}

// kindFlush marks the slot of a Flush: no record.
const kindFlush Kind = 0

// Flush returns once every record given so far has been written to the
// underlying writer (a pre-copy drains its rounds before the freeze, so
// that the frozen pass does not queue behind them).
func (w *Writer) Flush() error {
	j, err := w.slot()
	if err != nil {
		return err
	}
	j.kind, j.flushed = kindFlush, make(chan struct{})
	done := j.flushed
	j.ready <- struct{}{}
	w.order <- j
	select {
	case <-done:
	case <-w.abort:
	}
	return w.loadErr()
}

// WriteBlob writes data (copied) as blob records of id starting at offset,
// split into ChunkSize pieces that are compressed like pages.
func (w *Writer) WriteBlob(id uint32, offset uint64, data []byte) error {
	if offset+uint64(len(data)) < offset {
		return fmt.Errorf("image: blob %d at offset %#x+%#x wraps around", id, offset, len(data))
	}
	for len(data) > 0 {
		j, err := w.slot()
		if err != nil {
			return err
		}
		buf := w.PageBuffer()
		n := copy(buf, data)
		j.kind, j.id, j.addr, j.in = KindBlob, id, offset, buf[:n]
		w.order <- j
		w.work <- j
		data, offset = data[n:], offset+uint64(n)
	}
	return nil
}

// slot waits for a free pipeline slot. Sends on order and work never block
// afterwards: both have room for every slot.
func (w *Writer) slot() (*job, error) {
	if err := w.loadErr(); err != nil {
		return nil, err
	}
	if w.closed {
		return nil, errors.New("image: write after Close")
	}
	select {
	case j := <-w.free:
		if err := w.loadErr(); err != nil {
			w.free <- j
			return nil, err
		}
		return j, nil
	case <-w.abort:
		return nil, w.loadErr()
	}
}

// Stats returns the counters so far; safe from any goroutine.
func (w *Writer) Stats() Stats {
	return Stats{RawBytes: w.raw.Load(), StoredBytes: w.stored.Load(), Pages: w.pages.Load(),
		ZeroPages: w.zero.Load(), Records: w.records.Load()}
}

// Close waits for every queued record to be written, then writes the
// trailer and flushes. It does not close the underlying writer. After an
// error or Abort it returns that error and writes no trailer.
func (w *Writer) Close() error {
	if w.closed {
		if err := w.loadErr(); err != nil {
			return err
		}
		return errors.New("image: Close called twice")
	}
	w.closed = true
	close(w.order)
	close(w.work)
	select {
	case <-w.done:
		w.workers.Wait()
	case <-w.abort: // the emitter may be stuck in a Write; do not wait for it
	}
	return w.loadErr()
}

// Abort stops the workers and makes every pending and later call return
// ErrAborted (or the error that came first), without waiting for a Write
// that may never return: a stalled pipe or SSH channel. The stream is left
// without a trailer, so no reader will accept it. Safe from any goroutine;
// after a successful Close it does nothing.
func (w *Writer) Abort() {
	select {
	case <-w.done:
		if w.loadErr() == nil {
			return
		}
	default:
	}
	w.fail(ErrAborted)
	w.abortOnce.Do(func() { close(w.abort) })
}

func (w *Writer) fail(err error) { w.err.CompareAndSwap(nil, &err) }

func (w *Writer) loadErr() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// emit writes b to the stream. Called by NewWriter, then by the emitter
// only.
func (w *Writer) emit(b []byte) error {
	w.crc = crc32.Update(w.crc, castagnoli, b)
	w.stored.Add(int64(len(b)))
	_, err := w.bw.Write(b)
	return err
}

func (w *Writer) emitter() {
	defer close(w.done)
	for {
		var j *job
		var ok bool
		select {
		case j, ok = <-w.order:
		default:
			// Nothing queued: let the reader at the other end have what
			// is buffered rather than hold it until more comes.
			if w.loadErr() == nil {
				if err := w.bw.Flush(); err != nil {
					w.fail(err)
				}
			}
			select {
			case j, ok = <-w.order:
			case <-w.abort:
				return
			}
		}
		if !ok {
			w.finish()
			return
		}
		select {
		case <-j.ready:
		case <-w.abort:
			return
		}
		if w.loadErr() == nil {
			w.write(j)
		}
		if j.flushed != nil {
			close(j.flushed)
			j.flushed = nil
		}
		if j.kind == KindMeta {
			j.in = nil
		}
		if cap(j.out) > maxSlotOut {
			j.out = nil
		}
		j.records, j.pages, j.zero, j.keepZero = 0, 0, 0, false
		w.free <- j
	}
}

// maxSlotOut is the most a slot keeps allocated between uses: all the
// records one chunk can turn into.
const maxSlotOut = ChunkSize + (ChunkSize/PageSize/2+1)*(frameSize+pagesHdrSize+crcSize)

func (w *Writer) write(j *job) {
	if j.kind == kindFlush {
		if err := w.bw.Flush(); err != nil {
			w.fail(err)
		}
		return
	}
	rec := j.out
	if j.kind == KindMeta {
		rec = j.in
	}
	if err := w.emit(rec); err != nil {
		w.fail(err)
		return
	}
	w.records.Add(j.records)
	w.pages.Add(j.pages)
	w.zero.Add(j.zero)
	if j.kind == KindPages {
		w.raw.Add((j.pages + j.zero) * PageSize)
	}
}

func (w *Writer) finish() {
	if w.loadErr() != nil {
		return
	}
	t := Trailer{Records: uint64(w.records.Load()), Pages: uint64(w.pages.Load()),
		ZeroPages: uint64(w.zero.Load()), RawBytes: uint64(w.raw.Load()), StreamCRC: w.crc}
	err := w.emit(appendRecord(nil, KindTrailer, t.marshal()))
	if err == nil {
		err = w.bw.Flush()
	}
	if err != nil {
		w.fail(err)
	}
}

func (w *Writer) worker() {
	defer w.workers.Done()
	c := new(lz4.Compressor) // its 160 KiB of tables are reused for every block
	for {
		select {
		case j, ok := <-w.work:
			if !ok {
				return
			}
			if w.loadErr() == nil {
				w.encode(c, j)
			}
			w.recycle(j.in)
			j.in = nil
			j.ready <- struct{}{}
		case <-w.abort:
			return
		}
	}
}

// encode turns a pages or blob job's input into framed records in j.out.
// Pages are split into runs of non-zero pages; zero pages are only counted.
func (w *Writer) encode(c *lz4.Compressor, j *job) {
	out := j.out[:0]
	if j.kind == KindBlob {
		j.out = appendData(c, out, KindBlob, j.id, j.addr, j.in, 0)
		j.records = 1
		return
	}
	n := len(j.in) / PageSize
	page := func(i int) []byte { return j.in[i*PageSize : (i+1)*PageSize] }
	for i := 0; i < n; {
		if !j.keepZero && IsZeroPage(page(i)) {
			j.zero++
			i++
			continue
		}
		k := i + 1
		for k < n && k-i < MaxRecordPages && (j.keepZero || !IsZeroPage(page(k))) {
			k++
		}
		out = appendData(c, out, KindPages, j.id, j.addr+uint64(i*PageSize), j.in[i*PageSize:k*PageSize], uint32(k-i))
		j.records++
		j.pages += int64(k - i)
		i = k
	}
	j.out = out
}

// appendData appends one pages record (npages > 0) or blob record holding
// data, LZ4-compressed in place when that makes it smaller.
func appendData(c *lz4.Compressor, b []byte, k Kind, id uint32, addr uint64, data []byte, npages uint32) []byte {
	le := binary.LittleEndian
	start := len(b)
	b = append(b, byte(k), 0, 0, 0, 0, 0, 0, 0)
	b = le.AppendUint32(b, id)
	flagsAt := len(b)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, addr)
	if k == KindPages {
		b = le.AppendUint32(b, npages)
	}
	b = le.AppendUint32(b, uint32(len(data)))
	b = slices.Grow(b, len(data)+crcSize)
	at := len(b)
	if n := compress(c, data, b[at:at:at+len(data)]); n > 0 {
		b = b[:at+n]
		le.PutUint32(b[flagsAt:], flagLZ4)
	} else {
		b = append(b, data...)
	}
	le.PutUint32(b[start+4:], uint32(len(b)-start-frameSize))
	return le.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// compress writes data as one LZ4 block into dst's spare capacity and
// returns its length, or 0 if the block would not be smaller than data.
func compress(c *lz4.Compressor, data, dst []byte) int {
	if len(data) < 2 {
		return 0
	}
	// A destination of exactly len(data)-1 bytes makes the compressor give
	// up as soon as the block would not be smaller.
	n, err := c.CompressBlock(data, dst[:len(data)-1])
	if err != nil {
		return 0
	}
	return n
}
