package ckpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/relocate/relocate/ckpt/image"
)

// metaImage frames meta as the metadata record of an image stream.
func metaImage(t testing.TB, meta any) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := image.NewWriter(&buf, image.Header{Arch: runtime.GOARCH}, image.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMeta(meta); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readMeta(b []byte) (*Checkpoint, error) {
	r, err := image.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return ReadCheckpoint(r)
}

// sampleCheckpoint is a small tree that validates: two processes, a pipe,
// an inotify file, two descriptions of a POSIX message queue, a TCP lock.
func sampleCheckpoint() *Checkpoint {
	th := func(tid int) Thread { return Thread{TID: tid, RegSets: validRegSets()} }
	return &Checkpoint{
		Root:     100,
		NetLocks: []string{"relocate_100"},
		Processes: []Process{
			{PID: 100, PPID: 1, Threads: []Thread{th(100), th(102)}, FDs: []FD{{FD: 0, File: 0}, {FD: 3, File: 1}},
				VMAs: []VMA{{Start: 0x1000, End: 0x3000, Kind: VMAAnon}}},
			{PID: 101, PPID: 100, Threads: []Thread{th(101)}, FDs: []FD{{FD: 1, File: 0}}},
		},
		Files: []File{
			{Kind: FilePipe, Pipe: 7, Size: 5, Blob: 1},
			{Kind: FileInotify, Inotify: []InotifyWatch{{WD: 1, Path: "/tmp"}, {WD: 4, Path: "/etc"}}},
			{Kind: FileMQueue, Flags: 2, MQueue: &MQueue{Name: "/jobs", Ino: 5, MaxMsg: 10, MsgSize: 64, Mode: 0o600,
				Msgs: []MQMsg{{Prio: 3, Text: []byte("x")}, {Prio: 1, Text: []byte{}}}}},
			{Kind: FileMQueue, MQueue: &MQueue{Name: "/jobs", Ino: 5, MaxMsg: 10, MsgSize: 64, Mode: 0o600}},
		},
	}
}

func TestReadCheckpointSample(t *testing.T) {
	cp, err := readMeta(metaImage(t, sampleCheckpoint()))
	if err != nil {
		t.Fatalf("a valid checkpoint is refused: %v", err)
	}
	if len(cp.Processes) != 2 || len(cp.Files[1].Inotify) != 2 {
		t.Fatalf("decoded %+v", cp)
	}
}

// TestMetaBomb: a few megabytes of small JSON values that would decode to
// gigabytes are refused before json.Unmarshal allocates them.
func TestMetaBomb(t *testing.T) {
	const n = 1 << 20
	for _, c := range []struct{ name, pre, elem, post string }{
		{"processes", `{"root":1,"processes":[`, `{},`, `{}]}`},
		{"threads", `{"root":1,"processes":[{"pid":1,"threads":[`, `{},`, `{}]}]}`},
		{"files", `{"root":1,"files":[`, `{},`, `{}]}`},
		{"pending", `{"root":1,"processes":[{"threads":[{"pending":[`, `[],`, `[]]}]}]}`},
		{"sockets", `{"root":1,"files":[`, `{"socket":{},"tcp":{},"unix":{}},`, `{}]}`},
		{"unknown", `{"root":1,"nothing":[`, `[],`, `[]]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			js := c.pre + strings.Repeat(c.elem, n) + c.post
			img := metaImage(t, json.RawMessage(js))
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			_, err := readMeta(img)
			runtime.ReadMemStats(&m1)
			if !errors.Is(err, image.ErrCorrupt) {
				t.Fatalf("%d bytes of JSON: got %v, want a refusal", len(js), err)
			}
			if alloc := m1.TotalAlloc - m0.TotalAlloc; c.name != "unknown" && alloc > 256<<20 {
				t.Fatalf("refused only after allocating %d MiB", alloc>>20)
			}
			t.Logf("%s: %v", c.name, err)
		})
	}
}

// TestMetaDeep: deep nesting is refused, not recursed into.
func TestMetaDeep(t *testing.T) {
	js := `{"root":1,"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`
	if _, err := readMeta(metaImage(t, json.RawMessage(js))); !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "nested") {
		t.Fatalf("got %v", err)
	}
}

func TestValidateHostile(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Checkpoint)
		want string
	}{
		{"foreign table", func(cp *Checkpoint) { cp.NetLocks = []string{"filter"} }, `nftables table "filter"`},
		{"lock of a pid not in the image", func(cp *Checkpoint) { cp.NetLocks = []string{"relocate_1"} }, "relocate_1"},
		{"listen table name", func(cp *Checkpoint) { cp.NetLocks = []string{"relocate_listen_100"} }, "relocate_listen_100"},
		{"huge watch number", func(cp *Checkpoint) { cp.Files[1].Inotify[1].WD = 1 << 30 }, "inotify watch number"},
		{"watches out of order", func(cp *Checkpoint) { cp.Files[1].Inotify[1].WD = 1 }, "inotify watch number"},
		{"huge pipe", func(cp *Checkpoint) { cp.Files[0].Size = 1 << 40 }, "buffers"},
		{"negative size", func(cp *Checkpoint) { cp.Files[0].Size = -1 }, "size -1"},
		{"queue without state", func(cp *Checkpoint) { cp.Files[2].MQueue = nil }, "message queue without state"},
		{"queue name with a slash", func(cp *Checkpoint) { cp.Files[2].MQueue.Name = "/../etc/x" }, "more than one component"},
		{"queue capacity", func(cp *Checkpoint) { cp.Files[3].MQueue.MsgSize = 1 << 30 }, "1073741824 bytes"},
		{"message beyond its size", func(cp *Checkpoint) { cp.Files[2].MQueue.Msgs[0].Text = make([]byte, 65) }, "message 0 of 65 bytes"},
		{"messages carried twice", func(cp *Checkpoint) { cp.Files[3].MQueue.Msgs = []MQMsg{{Text: []byte("y")}} }, "carried twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp := sampleCheckpoint()
			c.edit(cp)
			_, err := readMeta(metaImage(t, cp))
			if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a refusal mentioning %q", err, c.want)
			}
		})
	}
}

// FuzzCheckpoint: whatever metadata an image carries, ReadCheckpoint
// either refuses it or returns a checkpoint whose every cross reference
// restore follows is in range, and that reads back the same once written.
func FuzzCheckpoint(f *testing.F) {
	good, _ := json.Marshal(sampleCheckpoint())
	f.Add(good)
	f.Add([]byte(`{"root":1,"processes":[{"pid":1,"threads":[{"tid":1}],"fds":[{"fd":0,"file":0}]}],"files":[{"kind":"file","path":"/x"}]}`))
	f.Add([]byte(`{"root":1,"processes":[` + strings.Repeat(`{},`, 100) + `{}]}`))
	f.Add([]byte(`{"root":1,"net_locks":["filter"],"processes":[{"pid":1,"threads":[{"tid":1}]}]}`))
	f.Add([]byte(`{"root":1,"processes":[{"pid":1,"creds":{"securebits":16},"cgroup":{"path":"/a/b","limits":{"memory.max":"max"}},"threads":[{"tid":1,"seccomp":[{"insns":"BgAAAAAA/38=","flags":2}]}]}]}`))
	f.Fuzz(func(t *testing.T, meta []byte) {
		if !json.Valid(meta) {
			return
		}
		cp, err := readMeta(metaImage(t, json.RawMessage(meta)))
		if err != nil {
			if !errors.Is(err, image.ErrCorrupt) {
				t.Fatalf("refused without ErrCorrupt: %v", err)
			}
			return
		}
		for _, p := range cp.Processes {
			for _, fd := range p.FDs {
				if fd.File < 0 || fd.File >= len(cp.Files) {
					t.Fatalf("accepted fd %d -> file %d of %d", fd.FD, fd.File, len(cp.Files))
				}
			}
		}
		for _, name := range cp.NetLocks {
			if !strings.HasPrefix(name, "relocate_") {
				t.Fatalf("accepted lock table %q", name)
			}
		}
		for _, f := range cp.Files {
			for _, w := range f.Inotify {
				if w.WD <= 0 || w.WD > maxInotifyWD {
					t.Fatalf("accepted watch number %d", w.WD)
				}
			}
		}
		again, err := readMeta(metaImage(t, cp))
		if err != nil {
			t.Fatalf("accepted, written back, refused: %v", err)
		}
		a, _ := json.Marshal(cp)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip changed the checkpoint:\n%s\n%s", a, b)
		}
	})
}
