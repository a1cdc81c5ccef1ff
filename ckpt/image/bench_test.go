package image

import (
	"bytes"
	"io"
	"testing"
)

// benchMiB of heap-like pages go through the writer or the reader per
// iteration; b.SetBytes makes go test print MB/s. BenchmarkCopy is the
// yardstick of the same run: memcpy of the same bytes.
//
//	go test -run '^$' -bench . -benchtime 5x ./ckpt/image/
const benchMiB = 64

func benchPages(b *testing.B) []byte {
	b.Helper()
	data := make([]byte, benchMiB<<20)
	heapLike(newRand(3), data)
	return data
}

// writeImage writes data as page records, chunk by chunk.
func writeImage(b *testing.B, out io.Writer, data []byte) {
	w, err := NewWriter(out, testHeader, WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for off := 0; off < len(data); off += ChunkSize {
		buf := w.PageBuffer()
		n := copy(buf, data[off:])
		if err := w.WritePages(1, 0x10000000+uint64(off), buf[:n]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkWriter(b *testing.B) { benchWrite(b, benchPages(b)) }

// benchWrite writes data as an image per iteration and reports the ratio
// of stored to raw bytes.
func benchWrite(b *testing.B, data []byte) {
	b.SetBytes(int64(len(data)))
	var stored int64
	for b.Loop() {
		cw := &countWriter{}
		writeImage(b, cw, data)
		stored = cw.n
	}
	b.ReportMetric(float64(stored)/float64(len(data)), "ratio")
}

// BenchmarkWriterRandom: pages that do not compress, stored as they are
// (LZ4 gives up on them quickly: about 5x the speed of heap-like pages).
func BenchmarkWriterRandom(b *testing.B) { benchWrite(b, randomBytes(newRand(5), benchMiB<<20)) }

func BenchmarkReader(b *testing.B) {
	data := benchPages(b)
	var img bytes.Buffer
	writeImage(b, &img, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(img.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	data := benchPages(b)
	dst := make([]byte, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		copy(dst, data)
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
