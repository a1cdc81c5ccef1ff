package image

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the current version's fixture and the FuzzReader seeds from the current writer")

// fixtures are images written by earlier builds, one per major version
// this reader reads; the last is the current version's.
var fixtures = []string{"testdata/v1.img", "testdata/v2.img"}

// TestFixture reads images written by earlier builds, so that a change of
// format is a deliberate act: a reader that can no longer read one fails
// here. go test -run TestFixture -update rewrites the current version's
// (and the fuzz seeds); do that only with a version bump, a new entry in
// fixtures and one under Changes in FORMAT.md. Older fixtures stay as
// they were written.
func TestFixture(t *testing.T) {
	if *update {
		img := write(t, sampleOps(), 1)
		if err := os.WriteFile(fixtures[len(fixtures)-1], img, 0o644); err != nil {
			t.Fatal(err)
		}
		writeSeeds(t, img)
	}
	for i, path := range fixtures {
		t.Run(path, func(t *testing.T) { testFixture(t, path, i+1) })
	}
}

func testFixture(t *testing.T, path string, major int) {
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := int(img[8]) | int(img[9])<<8; got != major {
		t.Fatalf("%s is format %d, want %d", path, got, major)
	}
	got, r, err := readAll(img)
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, got, expected(sampleOps()))
	h := r.Header()
	if h.Producer != testHeader.Producer || h.Kernel != testHeader.Kernel || !h.Created.Equal(testHeader.Created) ||
		len(h.CPU.Flags) != 2 || h.CPU.XCR0 != testHeader.CPU.XCR0 || h.CPU.XSaveSize != testHeader.CPU.XSaveSize {
		t.Errorf("header %+v, want %+v", h, testHeader)
	}
	if tr := r.Trailer(); tr.Records != 8 || tr.Pages != 5 || tr.ZeroPages != 5 || tr.RawBytes != 10*PageSize {
		t.Errorf("trailer %+v", tr)
	}
	// Both encodings of both data-carrying kinds are in the fixture.
	seen := map[[2]uint32]bool{}
	for off := preambleSize; off < len(img); {
		k := Kind(img[off])
		n := int(le32(img[off+4:]))
		if k == KindPages || k == KindBlob {
			seen[[2]uint32{uint32(k), le32(img[off+frameSize+4:])}] = true
		}
		off += frameSize + n + crcSize
	}
	for _, k := range []Kind{KindPages, KindBlob} {
		for _, f := range []uint32{0, flagLZ4} {
			if !seen[[2]uint32{uint32(k), f}] {
				t.Errorf("fixture has no %s record with flags %d", k, f)
			}
		}
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// writeSeeds writes the FuzzReader seed corpus: the fixture, cut short in
// a few places, and with a newer major version.
func writeSeeds(t *testing.T, img []byte) {
	newer := bytes.Clone(img)
	newer[8] = MaxMajor + 1
	headerEnd := preambleSize + frameSize + int(le32(img[preambleSize+4:])) + crcSize
	seeds := map[string][]byte{
		"fixture":       img,
		"fixture_half":  img[:len(img)/2],
		"fixture_short": img[:len(img)-1],
		"header_only":   img[:headerEnd],
		"magic_only":    img[:len(Magic)],
		"newer_major":   newer,
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range old {
		os.Remove(f)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzReader: whatever the input, reading it must end in an error or in a
// verified trailer, without a panic and without allocating past the caps.
func FuzzReader(f *testing.F) {
	f.Add(write(f, sampleOps(), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		var records uint64 = 1
		for {
			rec, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if _, again := r.Next(); again != err {
					t.Fatalf("Next after %v returned %v", err, again)
				}
				return
			}
			records++
			if rec.Pages != nil && (len(rec.Pages.Data) == 0 || len(rec.Pages.Data)%PageSize != 0) {
				t.Fatalf("pages record of %d bytes", len(rec.Pages.Data))
			}
		}
		if tr := r.Trailer(); tr.Records != records || r.Offset() != int64(len(b)) {
			t.Fatalf("accepted: trailer %+v after %d records, offset %d of %d", tr, records, r.Offset(), len(b))
		}
	})
}
