package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Format identity. A reader accepts majors MinMajor..MaxMajor and any minor
// of them; the writer writes Major.Minor.
const (
	Magic    = "RELOCATE"
	Major    = 2
	Minor    = 0
	MinMajor = 1
	MaxMajor = 2
)

const (
	// PageSize is the unit of page records, whatever the header says about
	// the machine that wrote them.
	PageSize = 4096
	// ChunkSize is the size of a PageBuffer: the most one WritePages call
	// takes, and the unit blobs are split into.
	ChunkSize = 256 * PageSize
	// MaxRecordPages is the most pages one page record may hold.
	MaxRecordPages = 1024
)

// Sizes of the fixed parts of the stream.
const (
	preambleSize  = 16
	frameSize     = 8 // kind, flags, reserved, length
	crcSize       = 4
	pagesHdrSize  = 24 // pid, flags, addr, npages, rawlen
	blobHdrSize   = 20 // id, flags, offset, rawlen
	trailerSize   = 36 // records, pages, zero pages, raw bytes, stream crc
	maxHeaderSize = 1 << 20
	maxMetaSize   = 64 << 20
	maxBlobData   = 4 << 20
	flagLZ4       = 1
)

// Kind is the type of a record.
type Kind uint8

const (
	KindHeader  Kind = 1
	KindMeta    Kind = 2
	KindPages   Kind = 3
	KindBlob    Kind = 4
	KindTrailer Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindHeader:
		return "header"
	case KindMeta:
		return "meta"
	case KindPages:
		return "pages"
	case KindBlob:
		return "blob"
	case KindTrailer:
		return "trailer"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// maxPayload is the cap on a record's payload length, checked before
// anything is allocated for it; ok is false for kinds this version does not
// know.
func (k Kind) maxPayload() (n int, ok bool) {
	switch k {
	case KindHeader:
		return maxHeaderSize, true
	case KindMeta:
		return maxMetaSize, true
	case KindPages:
		return pagesHdrSize + MaxRecordPages*PageSize, true
	case KindBlob:
		return blobHdrSize + maxBlobData, true
	case KindTrailer:
		return trailerSize, true
	}
	return 0, false
}

// Header describes the machine and program that wrote an image. It is the
// first record of every stream; new fields may be added in minor versions,
// and readers ignore the ones they do not know.
type Header struct {
	Producer string    `json:"producer"` // "relocate 0.1.0"
	Kernel   string    `json:"kernel"`
	Arch     string    `json:"arch"`
	Hostname string    `json:"hostname"`
	Created  time.Time `json:"created"`
	PageSize int       `json:"page_size"` // of the dumped machine
	CPU      CPUInfo   `json:"cpu"`
	// Regions, in a stream that starts with pre-copied pages, are the
	// address ranges the process those pages belong to mapped when the
	// stream began, with the mmap flags each needs: a restore that places
	// the pages before the metadata comes keeps its own mappings clear of
	// them. A hint (at most MaxRegions), never authoritative.
	Regions []Region `json:"regions,omitempty"`
}

// MaxRegions bounds Header.Regions.
const MaxRegions = 8192

// Region is a mapped address range and the mmap flags (MAP_GROWSDOWN,
// MAP_NORESERVE) it was made with.
type Region struct {
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
	Flags uint64 `json:"flags,omitempty"`
}

// CPUInfo is what a restore needs to know about the dumping CPU to decide
// whether the saved register state fits this one.
type CPUInfo struct {
	Flags     []string `json:"flags"`
	XCR0      uint64   `json:"xcr0"`
	XSaveSize int      `json:"xsave_size"`
}

// Trailer is the content of the final record. Records counts the records
// before it, the header included.
type Trailer struct {
	Records   uint64
	Pages     uint64 // pages stored in page records
	ZeroPages uint64 // pages given to the writer that were zero and not stored
	RawBytes  uint64 // (Pages+ZeroPages)*PageSize: memory given to the writer
	StreamCRC uint32 // CRC32C of every byte before the trailer record
}

func (t *Trailer) marshal() []byte {
	b := make([]byte, trailerSize)
	le := binary.LittleEndian
	le.PutUint64(b, t.Records)
	le.PutUint64(b[8:], t.Pages)
	le.PutUint64(b[16:], t.ZeroPages)
	le.PutUint64(b[24:], t.RawBytes)
	le.PutUint32(b[32:], t.StreamCRC)
	return b
}

func parseTrailer(b []byte) Trailer {
	le := binary.LittleEndian
	return Trailer{Records: le.Uint64(b), Pages: le.Uint64(b[8:]), ZeroPages: le.Uint64(b[16:]),
		RawBytes: le.Uint64(b[24:]), StreamCRC: le.Uint32(b[32:])}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendPreamble appends the 16 bytes that open a stream.
func appendPreamble(b []byte, major, minor uint16) []byte {
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint16(b, major)
	b = binary.LittleEndian.AppendUint16(b, minor)
	return append(b, 0, 0, 0, 0)
}

// appendRecord frames payload as one record of kind k.
func appendRecord(b []byte, k Kind, payload []byte) []byte {
	start := len(b)
	b = append(b, byte(k), 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

var zeroPage [PageSize]byte

// IsZeroPage reports whether every byte of p is zero. p may be of any
// length; comparing against a zero page with bytes.Equal (assembly) runs at
// tens of GB/s, several times a loop over 8-byte words.
func IsZeroPage(p []byte) bool {
	for len(p) > PageSize {
		if !bytes.Equal(p[:PageSize], zeroPage[:]) {
			return false
		}
		p = p[PageSize:]
	}
	return bytes.Equal(p, zeroPage[:len(p)])
}

// Errors a Reader returns, usually inside a *FormatError. Test with
// errors.Is.
var (
	ErrNotImage     error = expectedErr("not a relocate image")
	ErrTruncated    error = expectedErr("image is truncated")
	ErrCorrupt      error = expectedErr("image is corrupt")
	ErrTrailingData error = expectedErr("data after the end of the image")
	// ErrAborted is what every Writer call returns after Abort.
	ErrAborted = errors.New("image writing aborted")
)

// expected is a failure that describes the input, not a bug: its Expected
// method tells the command line to print it as one line without asking for
// a bug report (FormatError and VersionError say the same).
type expectedErr string

func (e expectedErr) Error() string  { return string(e) }
func (e expectedErr) Expected() bool { return true }

// errEmpty is returned for an input with no bytes at all: most often a
// producer that failed before writing anything.
var errEmpty = &detail{msg: "image is empty", kind: ErrTruncated}

// detail is a specific finding ("checksum mismatch") that unwraps to one of
// the sentinels above, so that a FormatError names the sentinel once.
type detail struct {
	msg  string
	kind error
}

func (d *detail) Error() string { return d.msg }
func (d *detail) Unwrap() error { return d.kind }

func corrupt(format string, a ...any) error {
	return &detail{msg: fmt.Sprintf(format, a...), kind: ErrCorrupt}
}

func truncated(format string, a ...any) error {
	return &detail{msg: fmt.Sprintf(format, a...), kind: ErrTruncated}
}

// FormatError locates a problem in a stream: the byte offset where the
// record at fault starts (where the data ran out, for truncation) and that
// record's kind, zero outside any record. Err unwraps to ErrCorrupt,
// ErrTruncated or ErrTrailingData.
type FormatError struct {
	Offset int64
	Kind   Kind
	Err    error
}

func (e *FormatError) Error() string {
	what := "image corrupt"
	switch {
	case errors.Is(e.Err, ErrTruncated):
		what = "image truncated"
	case errors.Is(e.Err, ErrTrailingData):
		what = "image has trailing data"
	}
	s := fmt.Sprintf("%s at byte %d", what, e.Offset)
	if e.Kind != 0 {
		s += fmt.Sprintf(" (%s record)", e.Kind)
	}
	var d *detail
	if errors.As(e.Err, &d) {
		return s + ": " + d.msg
	}
	if e.Err == ErrCorrupt || e.Err == ErrTruncated || e.Err == ErrTrailingData {
		return s
	}
	return s + ": " + e.Err.Error()
}

func (e *FormatError) Unwrap() error { return e.Err }

// Expected: a damaged image is bad input.
func (e *FormatError) Expected() bool { return true }

// Expected: an image of another format version is bad input.
func (e *VersionError) Expected() bool { return true }

// VersionError is returned for a stream whose major version this package
// cannot read.
type VersionError struct {
	Major, Minor int
}

func (e *VersionError) Error() string {
	reads := fmt.Sprintf("%d.x", MinMajor)
	if MinMajor != MaxMajor {
		reads = fmt.Sprintf("%d.x to %d.x", MinMajor, MaxMajor)
	}
	age := "newer"
	if e.Major < MinMajor {
		age = "older"
	}
	return fmt.Sprintf("image format %d.%d is %s than this relocate understands (reads %s)", e.Major, e.Minor, age, reads)
}
