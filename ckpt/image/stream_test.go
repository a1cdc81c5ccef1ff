package image

import (
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"io"
	"os"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/v1.img")

type sample struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

// writeSample writes a small stream with every record kind: zero pages,
// compressible and incompressible pages, a blob and metadata.
func writeSample(t testing.TB, workers int) ([]byte, [][]byte) { return writeSampleN(t, workers, 6) }

// writeSampleN writes n chunks of 4 pages.
func writeSampleN(t testing.TB, workers, n int) ([]byte, [][]byte) {
	t.Helper()
	var out bytes.Buffer
	h := Header{Producer: "test", Kernel: "6.18", Arch: "amd64", PageSize: PageSize,
		Created: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)}
	w, err := NewWriter(&out, h, WriterOptions{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMeta(sample{Name: "x", N: 42}); err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	for i := 0; i < n; i++ {
		buf := w.PageBuffer()[:4*PageSize]
		clear(buf)
		switch i % 3 {
		case 0: // text-like, compressible; page 2 stays zero
			for k := 0; k < PageSize*2; k++ {
				buf[k] = "relocate "[k%9]
			}
			copy(buf[3*PageSize:], "tail")
		case 1: // incompressible
			rand.Read(buf)
		}
		chunks = append(chunks, bytes.Clone(buf))
		if err := w.WritePages(7, uint64(0x10000+i*0x10000), buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteBlob(1, 0, []byte("blob contents")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), chunks
}

// readAll reads a stream to its end, returning the pages by address.
func readAll(b []byte) (map[uint64][]byte, error) {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	pages := map[uint64][]byte{}
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return pages, nil
		}
		if err != nil {
			return nil, err
		}
		if rec.Pages != nil {
			for off := 0; off < len(rec.Pages.Data); off += PageSize {
				pages[rec.Pages.Addr+uint64(off)] = bytes.Clone(rec.Pages.Data[off : off+PageSize])
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, workers := range []int{1, 2, 8} {
		img, chunks := writeSample(t, workers)
		pages, err := readAll(img)
		if err != nil {
			t.Fatalf("workers=%d: %v", workers, err)
		}
		for i, c := range chunks {
			for p := 0; p < 4; p++ {
				addr := uint64(0x10000+i*0x10000) + uint64(p*PageSize)
				want := c[p*PageSize : (p+1)*PageSize]
				got, stored := pages[addr]
				if IsZeroPage(want) {
					if stored {
						t.Errorf("zero page at %#x was stored", addr)
					}
					continue
				}
				if !bytes.Equal(got, want) {
					t.Errorf("workers=%d: page at %#x differs", workers, addr)
				}
			}
		}
	}
}

func TestStats(t *testing.T) {
	var out bytes.Buffer
	w, _ := NewWriter(&out, Header{}, WriterOptions{Workers: 2})
	buf := w.PageBuffer()[:8*PageSize]
	clear(buf)
	buf[PageSize] = 1
	if err := w.WritePages(1, 0, buf); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Pages != 1 || st.ZeroPages != 7 || st.RawBytes != 8*PageSize {
		t.Fatalf("stats %+v, want 1 page stored, 7 zero pages", st)
	}
}

// TestTruncated cuts the stream at every length: each must fail cleanly.
func TestTruncated(t *testing.T) {
	img, _ := writeSampleN(t, 2, 3)
	for n := 0; n < len(img); n++ {
		_, err := readAll(img[:n])
		if err == nil {
			t.Fatalf("stream cut to %d of %d bytes was accepted", n, len(img))
		}
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrNotImage) {
			t.Fatalf("cut to %d: %v is neither truncated nor not-an-image", n, err)
		}
	}
}

// TestFlipped flips every byte in turn: each must be detected.
func TestFlipped(t *testing.T) {
	img, _ := writeSampleN(t, 2, 3)
	for i := range img {
		bad := bytes.Clone(img)
		bad[i] ^= 0x01
		if _, err := readAll(bad); err == nil {
			t.Fatalf("flipped byte %d of %d was not detected", i, len(img))
		}
	}
}

func TestTrailingData(t *testing.T) {
	img, _ := writeSample(t, 2)
	if _, err := readAll(append(bytes.Clone(img), 0)); !errors.Is(err, ErrTrailingData) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestNewerVersion(t *testing.T) {
	img, _ := writeSample(t, 2)
	img[8] = 2
	var ve *VersionError
	if _, err := readAll(img); !errors.As(err, &ve) || ve.Major != 2 {
		t.Fatalf("major 2: %v", err)
	}
}

// TestHugeLength claims a 4 GiB record: refused without allocating it.
func TestHugeLength(t *testing.T) {
	img, _ := writeSample(t, 1)
	// The first record after the 16-byte preamble is the header; its
	// length field is at 16+4.
	bad := bytes.Clone(img)
	copy(bad[20:24], []byte{0xff, 0xff, 0xff, 0xff})
	if _, err := readAll(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("4 GiB length: %v", err)
	}
}

type failingWriter struct{ left int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.left {
		return 0, errors.New("disk full")
	}
	f.left -= len(p)
	return len(p), nil
}

func TestWriteErrorIsSticky(t *testing.T) {
	w, err := NewWriter(&failingWriter{left: 200}, Header{}, WriterOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	var failed bool
	for i := 0; i < 50 && !failed; i++ {
		buf := w.PageBuffer()
		rand.Read(buf)
		failed = w.WritePages(1, uint64(i)*ChunkSize, buf) != nil
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write returned nil")
	}
}

// TestFixture reads an image written by an earlier build, so that format
// changes are deliberate (go test -run TestFixture -update rewrites it).
func TestFixture(t *testing.T) {
	const path = "testdata/v1.img"
	if *update {
		img, _ := writeSample(t, 1)
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pages, err := readAll(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("fixture has no pages")
	}
}

func FuzzReader(f *testing.F) {
	if img, err := os.ReadFile("testdata/v1.img"); err == nil {
		f.Add(img)
		f.Add(img[:len(img)/2])
	}
	f.Add([]byte("RELOCATE"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = readAll(b) // must not panic or allocate beyond the caps
	})
}

func BenchmarkWritePages(b *testing.B) {
	src := make([]byte, 16<<20)
	for i := range src {
		src[i] = byte(i>>3) ^ "heap-like words "[i%16]
		if i%64 < 8 {
			src[i] = byte(i * 7)
		}
	}
	b.SetBytes(int64(len(src)))
	for i := 0; i < b.N; i++ {
		w, _ := NewWriter(io.Discard, Header{}, WriterOptions{})
		for off := 0; off < len(src); off += ChunkSize {
			buf := w.PageBuffer()
			copy(buf, src[off:off+ChunkSize])
			if err := w.WritePages(1, uint64(off), buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
