package image

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// bigOps is a stream of full chunks: heap-like, all zero, zero pages
// between data, incompressible, with meta and a blob split over several
// records in between.
func bigOps() []op {
	r := newRand(2)
	heap := make([]byte, ChunkSize)
	heapLike(r, heap)
	mixed := make([]byte, ChunkSize)
	for p := 0; p < ChunkSize/PageSize; p += 3 {
		heapLike(r, mixed[p*PageSize:(p+1)*PageSize])
	}
	blob := make([]byte, 2*ChunkSize+12345)
	heapLike(r, blob)
	return []op{
		{kind: KindMeta, data: []byte(`{"tree":[1,2,3]}`)},
		{kind: KindPages, pid: 100, addr: 0x400000, data: heap},
		{kind: KindPages, pid: 100, addr: 0x800000, data: make([]byte, ChunkSize)},
		{kind: KindPages, pid: 100, addr: 0xc00000, data: mixed},
		{kind: KindBlob, id: 3, addr: 0, data: blob},
		{kind: KindPages, pid: 101, addr: 0x7f0000000000, data: randomBytes(r, ChunkSize/2)},
		{kind: KindPages, pid: 101, addr: 0x7f0000100000, data: heap[:3*PageSize]},
		{kind: KindMeta, data: []byte(`{"done":true}`)},
	}
}

func TestRoundTrip(t *testing.T) {
	ops := bigOps()
	want := expected(ops)
	var wantPages, wantZero int64
	for _, o := range ops {
		if o.kind == KindPages {
			for off := 0; off < len(o.data); off += PageSize {
				if IsZeroPage(o.data[off : off+PageSize]) {
					wantZero++
				} else {
					wantPages++
				}
			}
		}
	}
	for _, workers := range []int{1, 2, 8} {
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
		img := out.Bytes()
		got, r, err := readAll(img)
		if err != nil {
			t.Fatalf("workers=%d: %v", workers, err)
		}
		sameEvents(t, got, want) // zero pages would show up here
		if h := r.Header(); h.Producer != testHeader.Producer || !h.Created.Equal(testHeader.Created) || h.CPU.XSaveSize != 2696 {
			t.Errorf("header %+v", h)
		}

		st, tr := w.Stats(), r.Trailer()
		if st.Pages != wantPages || st.ZeroPages != wantZero || st.RawBytes != (wantPages+wantZero)*PageSize {
			t.Errorf("workers=%d: stats %+v, want %d pages and %d zero pages", workers, st, wantPages, wantZero)
		}
		if uint64(st.Pages) != tr.Pages || uint64(st.ZeroPages) != tr.ZeroPages || uint64(st.RawBytes) != tr.RawBytes || uint64(st.Records) != tr.Records {
			t.Errorf("stats %+v disagree with trailer %+v", st, tr)
		}
		if st.StoredBytes != int64(len(img)) || r.Offset() != int64(len(img)) {
			t.Errorf("StoredBytes %d, Offset %d, stream %d bytes", st.StoredBytes, r.Offset(), len(img))
		}
		// Heap-like pages compress; random ones are stored raw, not larger.
		if st.StoredBytes > st.RawBytes*9/10 {
			t.Errorf("stored %d of %d raw bytes", st.StoredBytes, st.RawBytes)
		}
	}
}

// TestOrder writes many small chunks through many workers, with meta and
// blobs in between: the reader must see exactly the submission order.
func TestOrder(t *testing.T) {
	r := newRand(3)
	var ops []op
	for i := range 400 {
		npages := 1 + r.IntN(8)
		data := make([]byte, npages*PageSize)
		heapLike(r, data)
		if i%7 == 0 {
			clear(data[:PageSize])
		}
		ops = append(ops, op{kind: KindPages, pid: 1 + i%5, addr: uint64(r.IntN(1<<30)) * PageSize, data: data})
		switch i % 50 {
		case 10:
			ops = append(ops, op{kind: KindMeta, data: []byte(`{"i":` + strconv.Itoa(i) + `}`)})
		case 20:
			ops = append(ops, op{kind: KindBlob, id: uint32(i), data: data[:1000]})
		}
	}
	got, _, err := readAll(write(t, ops, 16))
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, got, expected(ops))
}

// TestWriteError fails the output after n bytes, for many n: the first
// error comes back from some call and from every call after it, Close
// included, and no goroutine is left behind.
func TestWriteError(t *testing.T) {
	ops := bigOps()
	full := write(t, ops, 2)
	for _, n := range []int{0, 15, 16, 100, 64 << 10, 100 << 10, len(full) / 3, len(full) / 2, len(full) - 49, len(full) - 1} {
		synctest.Test(t, func(t *testing.T) {
			w, err := NewWriter(&failAfter{n: n}, testHeader, WriterOptions{Workers: 2})
			if err != nil {
				if !errors.Is(err, errFull) {
					t.Fatalf("n=%d: NewWriter: %v", n, err)
				}
				return
			}
			failed := false
			for i, o := range ops {
				err := apply(w, []op{o})
				if failed && !errors.Is(err, errFull) {
					t.Fatalf("n=%d: op %d after the failure returned %v", n, i, err)
				}
				failed = err != nil
				if failed && !errors.Is(err, errFull) {
					t.Fatalf("n=%d: op %d: %v", n, i, err)
				}
			}
			if err := w.Close(); !errors.Is(err, errFull) {
				t.Fatalf("n=%d: Close: %v", n, err)
			}
			if err := w.WriteMeta(1); !errors.Is(err, errFull) {
				t.Fatalf("n=%d: WriteMeta after Close: %v", n, err)
			}
		})
	}
}

// stall is an io.Writer that takes the first write (the preamble and
// header that NewWriter flushes) and blocks every later one until
// released, like a pipe nobody reads.
type stall struct {
	writes  atomic.Int32
	release chan struct{}
}

func (s *stall) Write(p []byte) (int, error) {
	if s.writes.Add(1) == 1 {
		return len(p), nil
	}
	<-s.release
	return 0, io.ErrClosedPipe
}

// TestBackPressure stalls the output: WritePages must block after a bounded
// number of chunks, and Abort must unblock it and Close at once, while the
// stalled Write is still in progress.
func TestBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &stall{release: make(chan struct{})}
		const workers = 2
		w, err := NewWriter(out, testHeader, WriterOptions{Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		chunk := randomBytes(newRand(4), ChunkSize)
		var accepted atomic.Int32
		result := make(chan error, 1)
		go func() {
			for i := range 100 {
				buf := w.PageBuffer()
				copy(buf, chunk)
				if err := w.WritePages(1, uint64(i)*ChunkSize, buf); err != nil {
					result <- err
					return
				}
				accepted.Add(1)
			}
			result <- nil
		}()
		synctest.Wait() // all blocked: the emitter in Write, the caller on a slot
		select {
		case err := <-result:
			t.Fatalf("WritePages never blocked (%v)", err)
		default:
		}
		if n, limit := accepted.Load(), int32(2*workers+2); n > limit {
			t.Errorf("%d chunks accepted with the output stalled, want at most %d", n, limit)
		}
		w.Abort()
		if err := <-result; !errors.Is(err, ErrAborted) {
			t.Errorf("blocked WritePages after Abort: %v", err)
		}
		if err := w.Close(); !errors.Is(err, ErrAborted) {
			t.Errorf("Close after Abort: %v", err)
		}
		close(out.release) // the stalled Write returns; the emitter exits
	})
}

func TestAbortAfterClose(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, testHeader, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := apply(w, sampleOps()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, _, err := readAll(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Error("second Close returned nil")
	}
}

// TestBadArguments: a caller's mistake is refused without spoiling the
// stream.
func TestBadArguments(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, testHeader, WriterOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pid  int
		addr uint64
		n    int
	}{
		{1, 0, 0}, {1, 0, 100}, {1, 1, PageSize}, {0, 0, PageSize}, {-1, 0, PageSize},
		{1 << 33, 0, PageSize}, {1, 1<<64 - PageSize, 2 * PageSize},
	} {
		if err := w.WritePages(tc.pid, tc.addr, w.PageBuffer()[:tc.n]); err == nil {
			t.Errorf("WritePages(%d, %#x, %d bytes) accepted", tc.pid, tc.addr, tc.n)
		}
	}
	if err := w.WritePages(1, 0, make([]byte, 2*ChunkSize)); err == nil {
		t.Error("a buffer larger than ChunkSize was accepted")
	}
	if err := w.WriteMeta(func() {}); err == nil {
		t.Error("WriteMeta of a func was accepted")
	}
	if err := apply(w, sampleOps()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, _, err := readAll(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, got, expected(sampleOps()))
}

func TestIsZeroPage(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, PageSize - 1, PageSize, PageSize + 1, 3 * PageSize} {
		b := make([]byte, n)
		if !IsZeroPage(b) {
			t.Errorf("%d zero bytes: not zero", n)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if n == 0 {
				continue
			}
			b[i] = 1
			if IsZeroPage(b) {
				t.Errorf("%d bytes with byte %d set: zero", n, i)
			}
			b[i] = 0
		}
	}
}

// TestFlush: after Flush, everything given so far is in the output (not
// in the writer's slots or buffer), and the stream goes on as before.
func TestFlush(t *testing.T) {
	var out lockedBuffer
	w, err := NewWriter(&out, Header{Arch: "amd64"}, WriterOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := newRand(5)
	for i := range 20 {
		buf := w.PageBuffer()[:4*PageSize]
		heapLike(r, buf)
		if err := w.WritePages(1, uint64(i)*4*PageSize, buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := int64(out.Len()), w.Stats().StoredBytes; got != want || w.Stats().Pages != 80 {
		t.Fatalf("after Flush: %d bytes out, %d stored, %d pages", got, want, w.Stats().Pages)
	}
	if err := w.WriteMeta(map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readAll(out.Bytes()); err != nil {
		t.Fatal(err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Bytes()
}
