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
	"slices"

	"github.com/pierrec/lz4/v4"
)

// Record is one record after the header. Exactly one of Meta, Pages and
// Blob is set, according to Kind.
type Record struct {
	Kind  Kind
	Meta  []byte // the caller's to keep
	Pages *Pages
	Blob  *Blob
}

// Pages is a run of consecutive pages of one process. Data is valid only
// until the next call to Next.
type Pages struct {
	PID  int
	Addr uint64
	Data []byte // npages*PageSize bytes, decompressed
}

// Blob is a piece of content the engine carries (a deleted file, a pipe
// buffer). Data is valid only until the next call to Next.
type Blob struct {
	ID     uint32
	Offset uint64
	Data   []byte
}

// Reader reads an image stream front to back, checking every record as it
// goes and the trailer at the end. Nothing it returns is known to belong to
// a complete image until Next has returned io.EOF.
type Reader struct {
	br      *bufio.Reader
	off     int64
	crc     uint32 // of every byte before the current record
	hdr     Header
	trailer Trailer
	err     error // sticky; io.EOF once the trailer was verified

	records, pages uint64

	buf []byte // payload of the current record
	dec []byte // its decompressed data

	pf *prefetch // set by Prefetch
}

// NewReader reads and checks the preamble and header record of r.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{br: bufio.NewReaderSize(r, 64<<10)}
	if err := rd.readPreamble(); err != nil {
		return nil, err
	}
	k, p, start, err := rd.readRecord(true)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(p, &rd.hdr); err != nil {
		return nil, &FormatError{Offset: start, Kind: k, Err: corrupt("bad header: %v", err)}
	}
	if len(rd.hdr.Regions) > MaxRegions {
		return nil, &FormatError{Offset: start, Kind: k, Err: corrupt("header lists %d regions, more than %d", len(rd.hdr.Regions), MaxRegions)}
	}
	rd.records = 1
	return rd, nil
}

func (r *Reader) readPreamble() error {
	var pre [preambleSize]byte
	n, err := io.ReadFull(r.br, pre[:])
	r.off = int64(n)
	switch {
	case n == 0 && err == io.EOF:
		return errEmpty
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("read image: %w", err)
	case string(pre[:min(n, len(Magic))]) != Magic[:min(n, len(Magic))]:
		return ErrNotImage
	case err != nil:
		return &FormatError{Offset: int64(n), Err: truncated("the stream ends inside the preamble")}
	}
	le := binary.LittleEndian
	major, minor := le.Uint16(pre[8:]), le.Uint16(pre[10:])
	if major < MinMajor || major > MaxMajor {
		return &VersionError{Major: int(major), Minor: int(minor)}
	}
	if le.Uint32(pre[12:]) != 0 {
		return &FormatError{Offset: 12, Err: corrupt("reserved bytes of the preamble are not zero")}
	}
	r.crc = crc32.Checksum(pre[:], castagnoli)
	return nil
}

// Header returns the header record.
func (r *Reader) Header() Header { return r.hdr }

// Offset returns the number of bytes of the stream consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// Trailer returns the trailer once Next has returned io.EOF.
func (r *Reader) Trailer() Trailer { return r.trailer }

// Next returns the next record. It returns io.EOF only after the trailer
// has been read and verified against the stream and nothing follows it.
// After any error, every later call returns the same error.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	next := r.next
	if r.pf != nil {
		next = r.pf.next
	}
	rec, err := next()
	if err != nil {
		r.err = err
	}
	return rec, err
}

func (r *Reader) next() (Record, error) {
	rec, enc, err := r.nextRaw()
	if err != nil || enc == nil {
		return rec, err
	}
	data, err := enc.decode(&r.dec)
	if err != nil {
		return Record{}, err
	}
	rec.setData(data)
	return rec, nil
}

// encoded is the data of a pages or blob record as stored: checked but for
// the decompression.
type encoded struct {
	kind   Kind
	start  int64 // the record's offset, for errors
	flags  uint32
	body   []byte
	rawLen int
}

// decode returns the raw data, decompressed into *dec (grown as needed)
// when it is compressed.
func (e *encoded) decode(dec *[]byte) ([]byte, error) {
	data, err := decodeData(e.flags, e.body, e.rawLen, dec)
	if err != nil {
		return nil, &FormatError{Offset: e.start, Kind: e.kind, Err: corrupt("%v", err)}
	}
	return data, nil
}

func (rec *Record) setData(data []byte) {
	if rec.Pages != nil {
		rec.Pages.Data = data
	} else if rec.Blob != nil {
		rec.Blob.Data = data
	}
}

// nextRaw reads and checks the next record; for pages and blobs it returns
// the record without its data and the stored data to decode, which lies
// in r.buf.
func (r *Reader) nextRaw() (Record, *encoded, error) {
	crcBefore := r.crc
	k, p, start, err := r.readRecord(false)
	if err != nil {
		return Record{}, nil, err
	}
	bad := func(format string, a ...any) error {
		return &FormatError{Offset: start, Kind: k, Err: corrupt(format, a...)}
	}
	le := binary.LittleEndian
	switch k {
	case KindMeta:
		r.records++
		return Record{Kind: k, Meta: p}, nil, nil

	case KindPages:
		pid, flags, addr := le.Uint32(p), le.Uint32(p[4:]), le.Uint64(p[8:])
		npages, rawLen := le.Uint32(p[16:]), le.Uint32(p[20:])
		switch {
		case npages == 0 || npages > MaxRecordPages:
			return Record{}, nil, bad("%d pages in one record (1 to %d allowed)", npages, MaxRecordPages)
		case uint64(rawLen) != uint64(npages)*PageSize:
			return Record{}, nil, bad("%d pages but %d raw bytes", npages, rawLen)
		case addr%PageSize != 0:
			return Record{}, nil, bad("address %#x is not page aligned", addr)
		case addr+uint64(rawLen) < addr:
			return Record{}, nil, bad("pages at %#x wrap around the address space", addr)
		}
		r.records++
		r.pages += uint64(npages)
		return Record{Kind: k, Pages: &Pages{PID: int(pid), Addr: addr}},
			&encoded{kind: k, start: start, flags: flags, body: p[pagesHdrSize:], rawLen: int(rawLen)}, nil

	case KindBlob:
		id, flags, off, rawLen := le.Uint32(p), le.Uint32(p[4:]), le.Uint64(p[8:]), le.Uint32(p[16:])
		switch {
		case rawLen > maxBlobData:
			return Record{}, nil, bad("blob of %d bytes (at most %d allowed)", rawLen, maxBlobData)
		case off+uint64(rawLen) < off:
			return Record{}, nil, bad("blob at offset %#x wraps around", off)
		}
		r.records++
		return Record{Kind: k, Blob: &Blob{ID: id, Offset: off}},
			&encoded{kind: k, start: start, flags: flags, body: p[blobHdrSize:], rawLen: int(rawLen)}, nil

	case KindTrailer:
		t := parseTrailer(p)
		switch {
		case t.Records != r.records:
			return Record{}, nil, bad("trailer counts %d records, the stream has %d", t.Records, r.records)
		case t.Pages != r.pages:
			return Record{}, nil, bad("trailer counts %d pages, the stream has %d", t.Pages, r.pages)
		case t.ZeroPages > math.MaxUint64/PageSize-t.Pages || t.RawBytes != (t.Pages+t.ZeroPages)*PageSize:
			return Record{}, nil, bad("trailer counts %d raw bytes for %d pages and %d zero pages", t.RawBytes, t.Pages, t.ZeroPages)
		case t.StreamCRC != crcBefore:
			return Record{}, nil, bad("stream checksum mismatch")
		}
		switch _, err := r.br.ReadByte(); {
		case err == nil:
			return Record{}, nil, &FormatError{Offset: r.off, Err: ErrTrailingData}
		case err != io.EOF:
			return Record{}, nil, fmt.Errorf("read image at byte %d: %w", r.off, err)
		}
		r.trailer = t
		return Record{}, nil, io.EOF
	}
	return Record{}, nil, bad("unexpected record")
}

// readRecord reads one record, checking its frame, its length against the
// kind's cap and its checksum. The payload is a reused buffer except for
// meta records. With first set, the record must be the header; otherwise
// it must not be.
func (r *Reader) readRecord(first bool) (k Kind, payload []byte, start int64, err error) {
	start = r.off
	var frame [frameSize]byte
	n, err := io.ReadFull(r.br, frame[:])
	if err != nil {
		return 0, nil, start, r.readErr(err, start+int64(n), 0, n == 0)
	}
	k = Kind(frame[0])
	length := binary.LittleEndian.Uint32(frame[4:])
	bad := func(format string, a ...any) error {
		return &FormatError{Offset: start, Kind: k, Err: corrupt(format, a...)}
	}
	limit, known := k.maxPayload()
	switch {
	case !known:
		return k, nil, start, bad("unknown record kind")
	case frame[1] != 0 || frame[2] != 0 || frame[3] != 0:
		return k, nil, start, bad("flags or reserved bits are not zero")
	case first != (k == KindHeader):
		if first {
			return k, nil, start, bad("the stream does not start with a header record")
		}
		return k, nil, start, bad("a second header record")
	case int64(length) > int64(limit):
		return k, nil, start, bad("length %d exceeds the cap of %d", length, limit)
	case k == KindTrailer && length != trailerSize,
		k == KindPages && length < pagesHdrSize,
		k == KindBlob && length < blobHdrSize:
		return k, nil, start, bad("length %d is impossible", length)
	}
	buf := r.buf
	if k == KindMeta {
		buf = nil // handed to the caller
	}
	buf, err = readN(r.br, buf[:0], int(length)+crcSize)
	if k != KindMeta {
		r.buf = buf
	}
	if err != nil {
		return k, nil, start, r.readErr(err, start+frameSize+int64(len(buf)), k, false)
	}
	payload = buf[:length]
	sum := crc32.Update(crc32.Checksum(frame[:], castagnoli), castagnoli, payload)
	if sum != binary.LittleEndian.Uint32(buf[length:]) {
		return k, nil, start, bad("checksum mismatch")
	}
	if k != KindTrailer {
		r.crc = crc32.Update(crc32.Update(r.crc, castagnoli, frame[:]), castagnoli, buf)
	}
	r.off = start + frameSize + int64(len(buf))
	return k, payload, start, nil
}

// readErr turns an error from reading a record at off into what Next
// returns: truncation for an early EOF, the I/O error otherwise.
func (r *Reader) readErr(err error, off int64, k Kind, atBoundary bool) error {
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read image at byte %d: %w", off, err)
	}
	switch {
	case atBoundary && r.records == 0:
		return &FormatError{Offset: off, Err: truncated("the stream ends after the preamble")}
	case atBoundary:
		return &FormatError{Offset: off, Err: truncated("the stream ends before the trailer record")}
	case k == 0:
		return &FormatError{Offset: off, Err: truncated("the stream ends inside a record frame")}
	}
	return &FormatError{Offset: off, Kind: k, Err: truncated("the stream ends inside the record (or its length field is corrupt)")}
}

// readN appends n bytes from r to b. It grows b as data arrives rather
// than by n up front, so that a length field claiming megabytes in a stream
// that ends early costs no more memory than the stream holds.
func readN(r io.Reader, b []byte, n int) ([]byte, error) {
	const step = 1 << 20
	for n > 0 {
		m := min(n, step)
		if cap(b)-len(b) < m {
			b = slices.Grow(b, min(n, max(m, len(b))))
		}
		got, err := io.ReadFull(r, b[len(b):len(b)+m])
		b = b[:len(b)+got]
		if err != nil {
			return b, err
		}
		n -= m
	}
	return b, nil
}

// decodeData returns the raw data of a pages or blob record: body itself,
// or body decompressed into *dec (grown as needed).
func decodeData(flags uint32, body []byte, rawLen int, dec *[]byte) ([]byte, error) {
	switch flags {
	case 0:
		if len(body) != rawLen {
			return nil, fmt.Errorf("%d bytes of data for %d raw bytes", len(body), rawLen)
		}
		return body, nil
	case flagLZ4:
		if len(body) >= rawLen {
			return nil, fmt.Errorf("%d compressed bytes for %d raw bytes", len(body), rawLen)
		}
		if cap(*dec) < rawLen {
			*dec = make([]byte, rawLen)
		}
		n, err := lz4.UncompressBlock(body, (*dec)[:rawLen])
		if err != nil {
			return nil, fmt.Errorf("decompression failed: %v", err)
		}
		if n != rawLen {
			return nil, fmt.Errorf("decompressed to %d bytes, not %d", n, rawLen)
		}
		return (*dec)[:rawLen], nil
	}
	return nil, fmt.Errorf("unknown data flags %#x", flags)
}
