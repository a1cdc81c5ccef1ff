package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// TestPrefetchSame reads streams with and without Prefetch: the same
// records, and for every damaged stream (cut at each length, each byte
// flipped) the same error.
func TestPrefetchSame(t *testing.T) {
	r := newRand(3)
	big := make([]byte, 3*ChunkSize)
	heapLike(r, big)
	streams := map[string][]byte{
		"sample": write(t, sampleOps(), 2),
		"heap": write(t, []op{{kind: KindMeta, data: []byte(`{}`)},
			{kind: KindPages, pid: 1, addr: 0x400000, data: big[:ChunkSize]},
			{kind: KindPages, pid: 1, addr: 0x800000, data: big[ChunkSize : 2*ChunkSize]},
			{kind: KindBlob, id: 3, data: big[2*ChunkSize:]},
			{kind: KindPages, pid: 1, addr: 0x400000, data: big[2*ChunkSize:]}}, 2),
	}
	for name, img := range streams {
		want, _, err := readAll(img)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, workers := range []int{1, 3} {
			got, _, err := readAllWith(img, workers)
			if err != nil {
				t.Fatalf("%s, %d workers: %v", name, workers, err)
			}
			sameEvents(t, got, want)
		}
	}
	img := streams["sample"]
	same := func(what string, b []byte) {
		t.Helper()
		_, _, e1 := readAll(b)
		_, _, e2 := readAllWith(b, 2)
		if fmt.Sprint(e1) != fmt.Sprint(e2) || e1 == nil {
			t.Fatalf("%s: %v without prefetch, %v with", what, e1, e2)
		}
	}
	for n := range len(img) {
		same(fmt.Sprintf("cut to %d", n), img[:n])
	}
	bad := bytes.Clone(img)
	for i := range img {
		bad[i] ^= 0xff
		same(fmt.Sprintf("byte %d flipped", i), bad)
		bad[i] = img[i]
	}
}

// TestPrefetchStop: Next after StopPrefetch fails instead of hanging.
func TestPrefetchStop(t *testing.T) {
	img := write(t, sampleOps(), 2)
	hr, err := NewReader(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go pw.Write(img[:hr.Offset()+3]) // the header, then the stream stalls
	r, err := NewReader(pr)
	if err != nil {
		t.Fatal(err)
	}
	r.Prefetch(2)
	r.StopPrefetch()
	if _, err := r.Next(); !errors.Is(err, errStopped) {
		t.Fatalf("Next after StopPrefetch: %v", err)
	}
	pw.Close()
}
