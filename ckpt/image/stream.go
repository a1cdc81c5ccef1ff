package image

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pierrec/lz4/v4"
)

const (
	Magic     = "RELOCATE"
	Major     = 1
	Minor     = 0
	PageSize  = 4096
	ChunkSize = 256 * PageSize
)

type Kind uint8

const (
	KindHeader  Kind = 1
	KindMeta    Kind = 2
	KindPages   Kind = 3
	KindBlob    Kind = 4
	KindTrailer Kind = 5
)

var (
	ErrNotImage     = errors.New("not a relocate image")
	ErrTruncated    = errors.New("image is truncated")
	ErrCorrupt      = errors.New("image is corrupt")
	ErrTrailingData = errors.New("data after the end of the image")
	ErrAborted      = errors.New("image writing aborted")
)

type VersionError struct{ Major, Minor int }

func (e *VersionError) Error() string {
	return fmt.Sprintf("image format %d.%d is newer than this relocate understands (reads %d.x)", e.Major, e.Minor, Major)
}

type FormatError struct {
	Offset int64
	Kind   Kind
	Err    error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("image corrupt at byte %d (record kind %d): %v", e.Offset, e.Kind, e.Err)
}
func (e *FormatError) Unwrap() error { return e.Err }

type CPUInfo struct {
	Flags     []string `json:"flags"`
	XCR0      uint64   `json:"xcr0"`
	XSaveSize int      `json:"xsave_size"`
}

type Header struct {
	Producer string    `json:"producer"`
	Kernel   string    `json:"kernel"`
	Arch     string    `json:"arch"`
	Hostname string    `json:"hostname"`
	Created  time.Time `json:"created"`
	PageSize int       `json:"page_size"`
	CPU      CPUInfo   `json:"cpu"`
}

type Stats struct{ RawBytes, StoredBytes, Pages, ZeroPages, Records int64 }

type Trailer struct {
	Records, Pages, ZeroPages, RawBytes uint64
	StreamCRC                           uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	recHdr      = 8
	maxMeta     = 64 << 20
	pagesHdr    = 24
	blobHdr     = 20
	maxBlob     = 4 << 20
	trailerSize = 36
)

func IsZeroPage(p []byte) bool {
	for i := 0; i+8 <= len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != 0 {
			return false
		}
	}
	return true
}

type WriterOptions struct{ Workers int }

type job struct {
	seq   uint64
	kind  Kind
	pid   int
	addr  uint64
	data  []byte
	out   [][]byte
	done  chan struct{}
	owned bool
}

type Writer struct {
	w        io.Writer
	crc      uint32
	records  uint64
	jobs     chan *job
	order    chan *job
	wg       sync.WaitGroup
	writerWG sync.WaitGroup
	err      atomic.Pointer[error]
	pool     sync.Pool
	raw      atomic.Int64
	stored   atomic.Int64
	pages    atomic.Int64
	zero     atomic.Int64
	nrec     atomic.Int64
	closed   bool
	abort    chan struct{} // closed by Abort: nothing may block any more
	abortOne sync.Once
}

func NewWriter(w io.Writer, h Header, opts WriterOptions) (*Writer, error) {
	n := opts.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	wr := &Writer{w: w, jobs: make(chan *job, 2*n), order: make(chan *job, 4*n), abort: make(chan struct{})}
	wr.pool.New = func() any { return make([]byte, ChunkSize) }
	pre := make([]byte, 16)
	copy(pre, Magic)
	binary.LittleEndian.PutUint16(pre[8:], Major)
	binary.LittleEndian.PutUint16(pre[10:], Minor)
	if err := wr.emit(pre); err != nil {
		return nil, err
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if err := wr.emit(record(KindHeader, hb)); err != nil {
		return nil, err
	}
	wr.records++
	for i := 0; i < n; i++ {
		wr.wg.Add(1)
		go wr.worker()
	}
	wr.writerWG.Add(1)
	go wr.writer()
	return wr, nil
}

func record(k Kind, payload []byte) []byte {
	b := make([]byte, recHdr+len(payload)+4)
	b[0] = byte(k)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(payload)))
	copy(b[recHdr:], payload)
	binary.LittleEndian.PutUint32(b[recHdr+len(payload):], crc32.Checksum(b[:recHdr+len(payload)], castagnoli))
	return b
}

func (w *Writer) emit(b []byte) error {
	w.crc = crc32.Update(w.crc, castagnoli, b)
	_, err := w.w.Write(b)
	return err
}

func (w *Writer) fail(err error) {
	w.err.CompareAndSwap(nil, &err)
}

func (w *Writer) Err() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (w *Writer) worker() {
	defer w.wg.Done()
	var c lz4.Compressor
	dst := make([]byte, lz4.CompressBlockBound(ChunkSize))
	for j := range w.jobs {
		if j.kind == KindPages {
			npages := len(j.data) / PageSize
			for i := 0; i < npages; {
				if IsZeroPage(j.data[i*PageSize : (i+1)*PageSize]) {
					w.zero.Add(1)
					i++
					continue
				}
				k := i + 1
				for k < npages && !IsZeroPage(j.data[k*PageSize:(k+1)*PageSize]) {
					k++
				}
				run := j.data[i*PageSize : k*PageSize]
				hdr := make([]byte, pagesHdr)
				binary.LittleEndian.PutUint32(hdr, uint32(j.pid))
				binary.LittleEndian.PutUint64(hdr[8:], j.addr+uint64(i*PageSize))
				binary.LittleEndian.PutUint32(hdr[16:], uint32(k-i))
				binary.LittleEndian.PutUint32(hdr[20:], uint32(len(run)))
				n, err := c.CompressBlock(run, dst)
				var body []byte
				if err == nil && n > 0 && n < len(run) {
					binary.LittleEndian.PutUint32(hdr[4:], 1)
					body = dst[:n]
				} else {
					body = run
				}
				j.out = append(j.out, record(KindPages, append(hdr, body...)))
				w.pages.Add(int64(k - i))
				i = k
			}
			w.raw.Add(int64(len(j.data)))
			if j.owned {
				w.pool.Put(j.data[:cap(j.data)])
			}
		}
		close(j.done)
	}
}

func (w *Writer) writer() {
	defer w.writerWG.Done()
	for j := range w.order {
		<-j.done
		if w.Err() != nil {
			continue
		}
		for _, rec := range j.out {
			if err := w.emit(rec); err != nil {
				w.fail(err)
				break
			}
			w.records++
			w.nrec.Add(1)
			w.stored.Add(int64(len(rec)))
		}
	}
}

func (w *Writer) PageBuffer() []byte { return w.pool.Get().([]byte)[:ChunkSize] }

func (w *Writer) submit(j *job, compute bool) error {
	if err := w.Err(); err != nil {
		return err
	}
	j.done = make(chan struct{})
	select {
	case w.order <- j:
	case <-w.abort:
		return w.Err()
	}
	if !compute {
		close(j.done)
		return nil
	}
	select {
	case w.jobs <- j:
		return nil
	case <-w.abort:
		return w.Err()
	}
}

func (w *Writer) WritePages(pid int, addr uint64, buf []byte) error {
	if len(buf)%PageSize != 0 || len(buf) == 0 {
		return fmt.Errorf("image: page buffer of %d bytes", len(buf))
	}
	return w.submit(&job{kind: KindPages, pid: pid, addr: addr, data: buf, owned: cap(buf) == ChunkSize}, true)
}

func (w *Writer) WriteMeta(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxMeta {
		return fmt.Errorf("image: metadata of %d bytes is too large", len(b))
	}
	return w.submit(&job{kind: KindMeta, out: [][]byte{record(KindMeta, b)}}, false)
}

func (w *Writer) WriteBlob(id uint32, offset uint64, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), maxBlob)
		hdr := make([]byte, blobHdr, blobHdr+n)
		binary.LittleEndian.PutUint32(hdr, id)
		binary.LittleEndian.PutUint64(hdr[8:], offset)
		binary.LittleEndian.PutUint32(hdr[16:], uint32(n))
		if err := w.submit(&job{kind: KindBlob, out: [][]byte{record(KindBlob, append(hdr, data[:n]...))}}, false); err != nil {
			return err
		}
		data, offset = data[n:], offset+uint64(n)
	}
	return nil
}

func (w *Writer) Stats() Stats {
	return Stats{RawBytes: w.raw.Load(), StoredBytes: w.stored.Load(), Pages: w.pages.Load(), ZeroPages: w.zero.Load(), Records: w.nrec.Load()}
}

func (w *Writer) shutdown() {
	if w.closed {
		return
	}
	w.closed = true
	close(w.jobs)
	w.wg.Wait()
	close(w.order)
	w.writerWG.Wait()
}

func (w *Writer) Close() error {
	select {
	case <-w.abort:
		return w.Err()
	default:
	}
	w.shutdown()
	if err := w.Err(); err != nil {
		return err
	}
	t := make([]byte, trailerSize)
	binary.LittleEndian.PutUint64(t, w.records)
	binary.LittleEndian.PutUint64(t[8:], uint64(w.pages.Load()))
	binary.LittleEndian.PutUint64(t[16:], uint64(w.zero.Load()))
	binary.LittleEndian.PutUint64(t[24:], uint64(w.raw.Load()))
	binary.LittleEndian.PutUint32(t[32:], w.crc)
	if err := w.emit(record(KindTrailer, t)); err != nil {
		return err
	}
	if f, ok := w.w.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// Abort makes every pending and later call fail at once, without waiting
// for a write that may never return (a stalled pipe or SSH channel). It is
// safe from any goroutine; the stream is left without a trailer.
func (w *Writer) Abort() {
	w.fail(ErrAborted)
	w.abortOne.Do(func() { close(w.abort) })
}

// Reader.

type Pages struct {
	PID  int
	Addr uint64
	Data []byte
}

type Blob struct {
	ID     uint32
	Offset uint64
	Data   []byte
}

type Record struct {
	Kind  Kind
	Meta  []byte
	Pages *Pages
	Blob  *Blob
}

type Reader struct {
	r       *bufio.Reader
	off     int64
	crc     uint32
	hdr     Header
	records uint64
	pages   uint64
	zero    uint64
	trailer Trailer
	done    bool
	buf     []byte
	dec     []byte
}

func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{r: bufio.NewReaderSize(r, 64<<10)} // reuses a larger *bufio.Reader from the caller
	pre := make([]byte, 16)
	n, err := io.ReadFull(rd.r, pre)
	if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("image is empty: %w", ErrNotImage)
	}
	if n >= 8 && string(pre[:8]) != Magic || n < 8 && string(pre[:n]) != Magic[:n] {
		return nil, ErrNotImage
	}
	if err != nil {
		return nil, &FormatError{Offset: int64(n), Err: ErrTruncated}
	}
	rd.crc = crc32.Update(0, castagnoli, pre)
	rd.off = 16
	if maj := binary.LittleEndian.Uint16(pre[8:]); maj != Major {
		return nil, &VersionError{Major: int(maj), Minor: int(binary.LittleEndian.Uint16(pre[10:]))}
	}
	k, payload, err := rd.readRecord()
	if err != nil {
		return nil, err
	}
	if k != KindHeader {
		return nil, &FormatError{Offset: rd.off, Kind: k, Err: fmt.Errorf("first record is not a header: %w", ErrCorrupt)}
	}
	if err := json.Unmarshal(payload, &rd.hdr); err != nil {
		return nil, &FormatError{Offset: rd.off, Kind: k, Err: fmt.Errorf("header: %v: %w", err, ErrCorrupt)}
	}
	rd.records++
	return rd, nil
}

func (r *Reader) Header() Header   { return r.hdr }
func (r *Reader) Offset() int64    { return r.off }
func (r *Reader) Trailer() Trailer { return r.trailer }

func caps(k Kind) (int, bool) {
	switch k {
	case KindHeader, KindMeta:
		return maxMeta, true
	case KindPages:
		return pagesHdr + ChunkSize*4, true
	case KindBlob:
		return blobHdr + maxBlob, true
	case KindTrailer:
		return trailerSize, true
	}
	return 0, false
}

func (r *Reader) readRecord() (Kind, []byte, error) {
	start := r.off
	var h [recHdr]byte
	if n, err := io.ReadFull(r.r, h[:]); err != nil {
		if n == 0 && err == io.EOF {
			return 0, nil, &FormatError{Offset: start, Err: fmt.Errorf("no end-of-image record: %w", ErrTruncated)}
		}
		return 0, nil, &FormatError{Offset: start, Err: ErrTruncated}
	}
	k := Kind(h[0])
	limit, ok := caps(k)
	if !ok || h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return k, nil, &FormatError{Offset: start, Kind: k, Err: fmt.Errorf("bad record header: %w", ErrCorrupt)}
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if int64(n) > int64(limit) {
		return k, nil, &FormatError{Offset: start, Kind: k, Err: fmt.Errorf("record of %d bytes exceeds %d: %w", n, limit, ErrCorrupt)}
	}
	if cap(r.buf) < int(n)+4 {
		r.buf = make([]byte, int(n)+4)
	}
	b := r.buf[:int(n)+4]
	if _, err := io.ReadFull(r.r, b); err != nil {
		return k, nil, &FormatError{Offset: start, Kind: k, Err: ErrTruncated}
	}
	sum := crc32.Update(crc32.Checksum(h[:], castagnoli), castagnoli, b[:n])
	if sum != binary.LittleEndian.Uint32(b[n:]) {
		return k, nil, &FormatError{Offset: start, Kind: k, Err: fmt.Errorf("checksum mismatch: %w", ErrCorrupt)}
	}
	if k != KindTrailer {
		r.crc = crc32.Update(crc32.Update(r.crc, castagnoli, h[:]), castagnoli, b)
	}
	r.off += int64(recHdr) + int64(n) + 4
	return k, b[:n], nil
}

func (r *Reader) Next() (Record, error) {
	if r.done {
		return Record{}, io.EOF
	}
	start := r.off
	crcBefore := r.crc
	k, p, err := r.readRecord()
	if err != nil {
		return Record{}, err
	}
	bad := func(format string, a ...any) error {
		return &FormatError{Offset: start, Kind: k, Err: fmt.Errorf(format+": %w", append(a, ErrCorrupt)...)}
	}
	le := binary.LittleEndian
	switch k {
	case KindMeta:
		r.records++
		return Record{Kind: k, Meta: p}, nil
	case KindPages:
		if len(p) < pagesHdr {
			return Record{}, bad("short pages record")
		}
		npages, rawLen := le.Uint32(p[16:]), le.Uint32(p[20:])
		addr := le.Uint64(p[8:])
		if npages == 0 || npages > ChunkSize/PageSize || rawLen != npages*PageSize || addr%PageSize != 0 || addr+uint64(rawLen) < addr {
			return Record{}, bad("bad pages record")
		}
		data, err := r.decode(le.Uint32(p[4:]), p[pagesHdr:], int(rawLen))
		if err != nil {
			return Record{}, bad("%v", err)
		}
		r.records++
		r.pages += uint64(npages)
		return Record{Kind: k, Pages: &Pages{PID: int(le.Uint32(p)), Addr: addr, Data: data}}, nil
	case KindBlob:
		if len(p) < blobHdr {
			return Record{}, bad("short blob record")
		}
		rawLen := le.Uint32(p[16:])
		if rawLen > maxBlob || int(rawLen) != len(p)-blobHdr {
			return Record{}, bad("bad blob record")
		}
		r.records++
		return Record{Kind: k, Blob: &Blob{ID: le.Uint32(p), Offset: le.Uint64(p[8:]), Data: p[blobHdr:]}}, nil
	case KindTrailer:
		if len(p) != trailerSize {
			return Record{}, bad("bad trailer")
		}
		t := Trailer{Records: le.Uint64(p), Pages: le.Uint64(p[8:]), ZeroPages: le.Uint64(p[16:]), RawBytes: le.Uint64(p[24:]), StreamCRC: le.Uint32(p[32:])}
		if t.Records != r.records || t.Pages != r.pages || t.StreamCRC != crcBefore {
			return Record{}, bad("trailer does not match the stream")
		}
		if _, err := r.r.ReadByte(); err != io.EOF {
			return Record{}, &FormatError{Offset: r.off, Kind: k, Err: ErrTrailingData}
		}
		r.trailer, r.done = t, true
		return Record{}, io.EOF
	}
	return Record{}, bad("unexpected record")
}

func (r *Reader) decode(flags uint32, body []byte, rawLen int) ([]byte, error) {
	if flags&^1 != 0 {
		return nil, errors.New("unknown flags")
	}
	if flags == 0 {
		if len(body) != rawLen {
			return nil, errors.New("raw size mismatch")
		}
		return body, nil
	}
	if cap(r.dec) < rawLen {
		r.dec = make([]byte, rawLen)
	}
	n, err := lz4.UncompressBlock(body, r.dec[:rawLen])
	if err != nil || n != rawLen {
		return nil, errors.New("decompression failed")
	}
	return r.dec[:rawLen], nil
}
