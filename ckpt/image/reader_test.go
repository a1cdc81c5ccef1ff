package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pierrec/lz4/v4"
)

// TestTruncated cuts a stream at every length: each cut must be refused as
// truncated (or, shorter than the magic and not a prefix of it, as not an
// image), never accepted and never a panic.
func TestTruncated(t *testing.T) {
	img := write(t, sampleOps(), 2)
	for n := range len(img) {
		_, _, err := readAll(img[:n])
		if err == nil {
			t.Fatalf("stream cut to %d of %d bytes was accepted", n, len(img))
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut to %d: %v, want truncated", n, err)
		}
	}
	_, _, err := readAll(nil)
	if err == nil || err.Error() != "image is empty" {
		t.Errorf("empty input: %v, want \"image is empty\"", err)
	}
}

// TestFlipped damages every byte of a stream in turn, with a one-bit flip
// and with all bits flipped: each must be refused.
func TestFlipped(t *testing.T) {
	img := write(t, sampleOps(), 2)
	bad := bytes.Clone(img)
	for i := range img {
		for _, mask := range []byte{1 << (i % 8), 0xff} {
			bad[i] = img[i] ^ mask
			if _, _, err := readAll(bad); err == nil {
				t.Fatalf("byte %d of %d xor %#x was not detected", i, len(img), mask)
			}
		}
		bad[i] = img[i]
	}
}

func TestNotImage(t *testing.T) {
	for _, in := range []string{"this is not an image", "RELOCATF", "R\x00", "\x7fELF\x02\x01\x01"} {
		_, err := NewReader(strings.NewReader(in))
		if !errors.Is(err, ErrNotImage) || err.Error() != "not a relocate image" {
			t.Errorf("%q: %v, want not a relocate image", in, err)
		}
	}
}

func TestTrailingData(t *testing.T) {
	img := write(t, sampleOps(), 2)
	for _, extra := range [][]byte{{0}, img} {
		_, _, err := readAll(append(bytes.Clone(img), extra...))
		if !errors.Is(err, ErrTrailingData) {
			t.Fatalf("%d bytes after the trailer: %v", len(extra), err)
		}
		want := "image has trailing data at byte " + strconv.Itoa(len(img))
		if err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
}

func TestVersions(t *testing.T) {
	recs := [][]byte{headerRec()}
	for _, tc := range []struct {
		major, minor uint16
		want         string // "" for accepted
	}{
		{1, 0, ""},
		{1, 9, ""}, // any minor of a known major
		{2, 0, ""},
		{3, 0, "image format 3.0 is newer than this relocate understands (reads 1.x to 2.x)"},
		{254, 3, "image format 254.3 is newer than this relocate understands (reads 1.x to 2.x)"},
		{0, 1, "image format 0.1 is older than this relocate understands (reads 1.x to 2.x)"},
	} {
		_, _, err := readAll(craft(tc.major, tc.minor, recs, nil))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%d.%d: %v", tc.major, tc.minor, err)
			}
			continue
		}
		var ve *VersionError
		if !errors.As(err, &ve) || ve.Major != int(tc.major) || ve.Minor != int(tc.minor) {
			t.Errorf("%d.%d: %v, want a VersionError", tc.major, tc.minor, err)
		} else if err.Error() != tc.want {
			t.Errorf("%d.%d: %q, want %q", tc.major, tc.minor, err, tc.want)
		}
	}
}

// TestCorrupt feeds streams whose checksums are right but whose content
// breaks a rule of the format.
func TestCorrupt(t *testing.T) {
	page := bytes.Repeat([]byte{0xab}, PageSize)
	var c lz4.Compressor
	block := make([]byte, lz4.CompressBlockBound(PageSize))
	n, _ := c.CompressBlock(page, block)
	block = block[:n]
	short := make([]byte, lz4.CompressBlockBound(PageSize))
	n, _ = c.CompressBlock(page[:PageSize-1], short)
	short = short[:n]

	withFrame := func(r []byte, at int, v byte) []byte {
		r = bytes.Clone(r)
		r[at] = v
		binary.LittleEndian.PutUint32(r[len(r)-4:], crc32c(r[:len(r)-4]))
		return r
	}
	okPages := rec(KindPages, pagesPayload(1, 0, 0x1000, 1, PageSize, page))
	for _, tc := range []struct {
		name string
		recs [][]byte
		fix  func(*Trailer)
		want string
	}{
		{"meta first", [][]byte{rec(KindMeta, []byte("{}"))}, nil,
			"image corrupt at byte 16 (meta record): the stream does not start with a header record"},
		{"two headers", [][]byte{headerRec(), headerRec()}, nil, "second header"},
		{"header not JSON", [][]byte{rec(KindHeader, []byte("{"))}, nil, "bad header"},
		{"unknown kind", [][]byte{headerRec(), rec(9, nil)}, nil, "(kind 9 record): unknown record kind"},
		{"kind zero", [][]byte{headerRec(), rec(0, nil)}, nil, "unknown record kind"},
		{"record flags", [][]byte{headerRec(), withFrame(okPages, 1, 1)}, nil, "flags or reserved bits"},
		{"reserved", [][]byte{headerRec(), withFrame(okPages, 3, 0x80)}, nil, "flags or reserved bits"},
		{"short pages", [][]byte{headerRec(), rec(KindPages, make([]byte, 23))}, nil, "length 23 is impossible"},
		{"short blob", [][]byte{headerRec(), rec(KindBlob, make([]byte, 19))}, nil, "length 19 is impossible"},
		{"short trailer", [][]byte{headerRec(), rec(KindTrailer, make([]byte, 35))}, nil, "length 35 is impossible"},
		{"long trailer", [][]byte{headerRec(), rec(KindTrailer, make([]byte, 37))}, nil, "length 37 exceeds the cap of 36"},
		{"no pages", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 0, 0, 0, 0, nil))}, nil, "0 pages in one record"},
		{"too many pages", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 0, 0, 1025, 1025*PageSize, nil))}, nil, "1025 pages in one record"},
		{"rawlen", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 0, 0, 1, PageSize-1, page[1:]))}, nil, "1 pages but 4095 raw bytes"},
		{"unaligned", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 0, 0x1001, 1, PageSize, page))}, nil, "not page aligned"},
		{"wraps", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 0, math.MaxUint64-PageSize+1, 1, PageSize, page))}, nil, "wrap around"},
		{"raw too short", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 0, 0, 1, PageSize, page[1:]))}, nil, "4095 bytes of data for 4096 raw bytes"},
		{"data flags", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 2, 0, 1, PageSize, page))}, nil, "unknown data flags 0x2"},
		{"lz4 garbage", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 1, 0, 1, PageSize, []byte{0xff, 0xff, 0xff}))}, nil, "decompression failed"},
		{"lz4 short", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 1, 0, 1, PageSize, short))}, nil, "decompressed to 4095 bytes, not 4096"},
		{"lz4 not smaller", [][]byte{headerRec(), rec(KindPages, pagesPayload(1, 1, 0, 1, PageSize, append(block, page[:PageSize-len(block)]...)))}, nil, "4096 compressed bytes for 4096 raw bytes"},
		{"blob too big", [][]byte{headerRec(), rec(KindBlob, blobPayload(1, 1, 0, maxBlobData+1, block))}, nil, "blob of 4194305 bytes"},
		{"blob wraps", [][]byte{headerRec(), rec(KindBlob, blobPayload(1, 0, math.MaxUint64, 2, []byte("ab")))}, nil, "wraps around"},
		{"blob raw size", [][]byte{headerRec(), rec(KindBlob, blobPayload(1, 0, 0, 3, []byte("ab")))}, nil, "2 bytes of data for 3 raw bytes"},
		{"records", [][]byte{headerRec(), okPages}, func(t *Trailer) { t.Records++ }, "trailer counts 3 records, the stream has 2"},
		{"pages", [][]byte{headerRec(), okPages}, func(t *Trailer) { t.Pages = 0; t.RawBytes = 0 }, "trailer counts 0 pages, the stream has 1"},
		{"raw bytes", [][]byte{headerRec(), okPages}, func(t *Trailer) { t.ZeroPages = 1 }, "trailer counts 4096 raw bytes for 1 pages and 1 zero pages"},
		{"zero overflow", [][]byte{headerRec(), okPages}, func(t *Trailer) { t.ZeroPages = math.MaxUint64 / PageSize }, "raw bytes"},
		{"stream crc", [][]byte{headerRec(), okPages}, func(t *Trailer) { t.StreamCRC++ }, "stream checksum mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(craft(1, 0, tc.recs, tc.fix))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want corrupt", err)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *FormatError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q does not say %q", err, tc.want)
			}
		})
	}
	// The crafted pages record itself is fine.
	if _, _, err := readAll(craft(1, 0, [][]byte{headerRec(), okPages}, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestMessages(t *testing.T) {
	img := write(t, sampleOps(), 1)
	bad := bytes.Clone(img)
	bad[len(bad)-1] ^= 1 // the trailer's own checksum
	trailerAt := len(img) - (frameSize + trailerSize + crcSize)

	_, _, err := readAll(bad)
	if want := "image corrupt at byte " + strconv.Itoa(trailerAt) + " (trailer record): checksum mismatch"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	_, _, err = readAll(img[:len(img)-1])
	if want := "image truncated at byte " + strconv.Itoa(len(img)-1) + " (trailer record): the stream ends inside the record (or its length field is corrupt)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	_, _, err = readAll(img[:trailerAt])
	if want := "image truncated at byte " + strconv.Itoa(trailerAt) + ": the stream ends before the trailer record"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestHugeLength claims payloads the stream does not have: a 4 GiB record
// is refused from its length alone, and a meta record of 60 MiB (within the
// cap) in a short stream costs no more memory than the stream holds.
func TestHugeLength(t *testing.T) {
	img := write(t, sampleOps(), 1)
	bad := bytes.Clone(img)
	binary.LittleEndian.PutUint32(bad[preambleSize+4:], math.MaxUint32) // the header's length
	_, _, err := readAll(bad)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "length 4294967295 exceeds the cap") {
		t.Fatalf("4 GiB header: %v", err)
	}

	meta := make([]byte, frameSize, frameSize+1000)
	meta[0] = byte(KindMeta)
	binary.LittleEndian.PutUint32(meta[4:], 60<<20)
	meta = append(meta, make([]byte, 1000)...)
	short := append(appendPreamble(nil, Major, Minor), headerRec()...)
	short = append(short, meta...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = readAll(short)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("60 MiB meta in a short stream: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("reading %d bytes allocated %d bytes", len(short), alloc)
	}
}

// TestOneByteReads reads through a reader that returns a byte at a time:
// every read of the format must be a full read.
func TestOneByteReads(t *testing.T) {
	ops := sampleOps()
	img := write(t, ops, 2)
	r, err := NewReader(iotest.OneByteReader(bytes.NewReader(img)))
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if r.Offset() != int64(len(img)) {
		t.Errorf("Offset() = %d after the whole stream of %d bytes", r.Offset(), len(img))
	}
}

// TestReadError passes an I/O error through as itself, not as a format
// problem.
func TestReadError(t *testing.T) {
	img := write(t, sampleOps(), 2)
	errBoom := errors.New("connection reset")
	in := io.MultiReader(bytes.NewReader(img[:len(img)/2]), iotest.ErrReader(errBoom))
	r, err := NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = r.Next()
	}
	var fe *FormatError
	if !errors.Is(err, errBoom) || errors.As(err, &fe) {
		t.Fatalf("%v, want the I/O error", err)
	}
	if _, again := r.Next(); again != err {
		t.Errorf("second Next: %v, want the same error", again)
	}
}
