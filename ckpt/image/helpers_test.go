package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// op is one call to a Writer: WriteMeta, WritePages or WriteBlob.
type op struct {
	kind Kind
	pid  int
	addr uint64 // or blob offset
	id   uint32
	data []byte // JSON for meta
}

// event is the unit the tests compare written and read streams in: one
// meta record, one non-zero page, or a blob piece.
type event struct {
	kind Kind
	pid  int
	addr uint64
	id   uint32
	data string
}

func (e event) String() string {
	return fmt.Sprintf("%s pid=%d addr=%#x id=%d len=%d", e.kind, e.pid, e.addr, e.id, len(e.data))
}

// expected flattens ops into the events a reader must return: zero pages
// vanish, pages are one event each, adjacent pieces of one blob merge.
func expected(ops []op) []event {
	var ev []event
	for _, o := range ops {
		switch o.kind {
		case KindMeta:
			ev = append(ev, event{kind: KindMeta, data: string(o.data)})
		case KindPages:
			ev = appendPages(ev, o.pid, o.addr, o.data)
		case KindBlob:
			ev = appendBlob(ev, o.id, o.addr, o.data)
		}
	}
	return ev
}

func appendPages(ev []event, pid int, addr uint64, data []byte) []event {
	for off := 0; off < len(data); off += PageSize {
		if p := data[off : off+PageSize]; !IsZeroPage(p) {
			ev = append(ev, event{kind: KindPages, pid: pid, addr: addr + uint64(off), data: string(p)})
		}
	}
	return ev
}

func appendBlob(ev []event, id uint32, off uint64, data []byte) []event {
	if n := len(ev); n > 0 && ev[n-1].kind == KindBlob && ev[n-1].id == id && ev[n-1].addr+uint64(len(ev[n-1].data)) == off {
		ev[n-1].data += string(data)
		return ev
	}
	return append(ev, event{kind: KindBlob, id: id, addr: off, data: string(data)})
}

var testHeader = Header{
	Producer: "relocate test", Kernel: "6.18.0", Arch: "amd64", Hostname: "fixture",
	Created: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), PageSize: PageSize,
	CPU: CPUInfo{Flags: []string{"sse4_2", "avx2"}, XCR0: 0x2e7, XSaveSize: 2696},
}

// write runs ops through a Writer with the given number of workers.
func write(t testing.TB, ops []op, workers int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, testHeader, WriterOptions{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	if err := apply(w, ops); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.StoredBytes != int64(out.Len()) {
		t.Errorf("Stats.StoredBytes = %d, stream has %d bytes", st.StoredBytes, out.Len())
	}
	return out.Bytes()
}

func apply(w *Writer, ops []op) error {
	for _, o := range ops {
		var err error
		switch o.kind {
		case KindMeta:
			err = w.WriteMeta(rawJSON(o.data))
		case KindPages:
			buf := w.PageBuffer()[:len(o.data)]
			copy(buf, o.data)
			err = w.WritePages(o.pid, o.addr, buf)
		case KindBlob:
			err = w.WriteBlob(o.id, o.addr, o.data)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// rawJSON marshals to itself, so that tests know the exact meta payload.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

// readAll reads a whole stream into events.
func readAll(b []byte) ([]event, *Reader, error) { return readAllWith(b, 0) }

// readAllWith is readAll with Prefetch(workers) when workers > 0.
func readAllWith(b []byte, workers int) ([]event, *Reader, error) {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	if workers > 0 {
		r.Prefetch(workers)
		defer r.StopPrefetch()
	}
	var ev []event
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return ev, r, nil
		}
		if err != nil {
			return ev, r, err
		}
		switch rec.Kind {
		case KindMeta:
			ev = append(ev, event{kind: KindMeta, data: string(rec.Meta)})
		case KindPages:
			ev = appendPages(ev, rec.Pages.PID, rec.Pages.Addr, rec.Pages.Data)
		case KindBlob:
			ev = appendBlob(ev, rec.Blob.ID, rec.Blob.Offset, rec.Blob.Data)
		}
	}
}

func sameEvents(t *testing.T, got, want []event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d events, wrote %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d: read %v, wrote %v", i, got[i], want[i])
		}
	}
}

// heapLike fills b with what the heap of a real program looks like to a
// compressor: small integers, pointers into a few MiB, text, a little noise
// and some zero runs.
func heapLike(r *rand.Rand, b []byte) {
	words := []string{"the ", "relocate ", "process ", "memory ", "GET /index.html HTTP/1.1\r\n",
		"user_id=", `"name": `, "error: ", "/usr/lib/x86_64-linux-gnu/", "0123456789"}
	for i := 0; i < len(b); {
		n := min(64, len(b)-i)
		w := b[i : i+n]
		switch r.IntN(10) {
		case 0, 1, 2:
			for k := 0; k+8 <= n; k += 8 {
				binary.LittleEndian.PutUint64(w[k:], uint64(r.IntN(300)))
			}
		case 3, 4, 5:
			for k := 0; k+8 <= n; k += 8 {
				binary.LittleEndian.PutUint64(w[k:], 0xc000000000+uint64(r.IntN(1<<20))*8)
			}
		case 6, 7:
			for k := 0; k < n; {
				k += copy(w[k:], words[r.IntN(len(words))])
			}
		case 8:
			clear(w)
		case 9:
			for k := range w {
				w[k] = byte(r.Uint32())
			}
		}
		i += n
	}
}

func newRand(seed byte) *rand.Rand { return rand.New(rand.NewChaCha8([32]byte{seed})) }

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sampleOps is a small stream with every record kind and both encodings:
// compressible and incompressible pages, zero pages inside and between
// runs, a chunk of nothing but zero pages, raw and compressed blobs.
func sampleOps() []op {
	r := newRand(1)
	text := bytes.Repeat([]byte("relocate moves a running process. "), 2*PageSize/34+1)[:2*PageSize]
	mixed := make([]byte, 5*PageSize) // text, zero, text, zero but for its end, zero
	copy(mixed, text[:PageSize])
	copy(mixed[2*PageSize:], text[PageSize:])
	copy(mixed[4*PageSize-4:], "tail")
	blob := bytes.Repeat([]byte("pipe buffer "), 250)
	return []op{
		{kind: KindMeta, data: []byte(`{"name":"fixture","n":42}`)},
		{kind: KindPages, pid: 7, addr: 0x10000, data: mixed},
		{kind: KindPages, pid: 7, addr: 0x20000, data: randomBytes(r, 2*PageSize)},
		{kind: KindPages, pid: 8, addr: 0x7fff_f000_0000, data: make([]byte, 3*PageSize)},
		{kind: KindBlob, id: 1, addr: 0, data: []byte("blob contents")},
		{kind: KindBlob, id: 2, addr: 4096, data: blob},
		{kind: KindMeta, data: []byte(`{"after":"pages"}`)},
	}
}

// Crafting streams by hand, for the reader's checks that a writer never
// trips.

func rec(k Kind, payload []byte) []byte { return appendRecord(nil, k, payload) }

func headerRec() []byte { return rec(KindHeader, []byte(`{"producer":"crafted"}`)) }

func pagesPayload(pid, flags uint32, addr uint64, npages, rawLen uint32, data []byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, pid)
	b = le.AppendUint32(b, flags)
	b = le.AppendUint64(b, addr)
	b = le.AppendUint32(b, npages)
	b = le.AppendUint32(b, rawLen)
	return append(b, data...)
}

func blobPayload(id, flags uint32, off uint64, rawLen uint32, data []byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, id)
	b = le.AppendUint32(b, flags)
	b = le.AppendUint64(b, off)
	b = le.AppendUint32(b, rawLen)
	return append(b, data...)
}

// craft assembles a preamble and records, and closes the stream with a
// trailer that matches them, edited by fix if it is not nil.
func craft(major, minor uint16, recs [][]byte, fix func(*Trailer)) []byte {
	b := appendPreamble(nil, major, minor)
	var t Trailer
	for _, r := range recs {
		b = append(b, r...)
		t.Records++
		if Kind(r[0]) == KindPages && len(r) >= frameSize+pagesHdrSize {
			t.Pages += uint64(binary.LittleEndian.Uint32(r[frameSize+16:]))
		}
	}
	t.RawBytes = t.Pages * PageSize
	t.StreamCRC = crc32c(b)
	if fix != nil {
		fix(&t)
	}
	return appendRecord(b, KindTrailer, t.marshal())
}

// failAfter is an io.Writer that takes n bytes, then fails.
type failAfter struct{ n int }

var errFull = errors.New("disk full")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errFull
	}
	f.n -= len(p)
	return len(p), nil
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
