package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The seed corpora live in testdata/fuzz/<Name>/: the captured fixtures and
// ugly cases, as listed by seedCorpus. Each target checks that a failure is
// a well-formed *ParseError and that a success obeys the format's invariants.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz from seedCorpus")

// seedCorpus lists the seed inputs of each fuzz target by file name.
func seedCorpus(t *testing.T) map[string]map[string][]byte {
	aux := func(w ...uint64) []byte {
		b := make([]byte, 8*len(w))
		for i, x := range w {
			binary.LittleEndian.PutUint64(b[8*i:], x)
		}
		return b
	}
	s := map[string]map[string][]byte{
		"FuzzParseMaps": {
			"real": fixture(t, "maps"),
			"ugly": []byte("1000-2000 r--p 00000000 fe:00 5 /tmp/a (deleted) b\n" +
				"2000-3000 rw-s 00000000 00:01 1047                       /dev/zero (deleted)\n" +
				"3000-4000 rw-p 00000000 00:00 0 \n4000-5000 ---p 00000000 00:00 0 [anon:x y]\n" +
				"5000-6000 r-xp 0000a000 fe:01 123456                     /a b/c  d  (deleted) (deleted)"),
			"bad": []byte("2000-1000 r--p 00000000 fe:00 5 /a\n"),
		},
		"FuzzParseSmaps": {
			"real": fixture(t, "smaps"),
			"ugly": []byte("1000-3000 rw-p 00000000 00:00 0 \nRss:                   8 kB\nAnonymous: 4 kB\nSwap: 4 kB\n" +
				"VmFlags: rd wr mr mw me ac zz \n4000-5000 r--s 00001000 fe:01 42 /p: Rss: 4 kB (deleted)\nVmFlags:\nRss: 0 kB"),
		},
		"FuzzParseStat": {
			"real":    fixture(t, "stat"),
			"thread":  fixture(t, "task_stat"),
			"zombie":  fixture(t, "zombie_stat"),
			"kthread": fixture(t, "kthread_stat"),
			"ugly":    []byte(strings.Replace(statLine("7", "(((ugly )pr()cess()"), " 19 ", " -19 ", 1)),
		},
		"FuzzParseStatus": {
			"real":    fixture(t, "status"),
			"thread":  fixture(t, "task_status"),
			"kthread": fixture(t, "kthread_status"),
			"ugly":    []byte("Name:\t\\\\ ((ugly )pr()cess(\\n \nUid:\t1\t2\t3\t4\nGroups:\t \nNSpid:\t9\t1\nSigBlk:\tfffffffe7ffbfeff\nOdd key: v"),
		},
		"FuzzParseFDInfo": {
			"ugly": []byte("pos:\t-1\nflags:\t037777777777\n" +
				"inotify wd:b ino:ffffffffffffffff sdev:0 mask:80000000 ignored_mask:ff fhandle-bytes:0 fhandle-type:ffffffff f_handle:\n" +
				"tfd: 5 events: 19 data: 5 pos:0 ino:8e3 sdev:f\nit_value: (1, 2)\nclockid: 1\nticks: 0\nsettime flags: 01\n" +
				"it_interval: (0, 0)\neventfd-count: 7\nsigmask:\t0000000000010800"),
		},
		"FuzzParseTimers": {
			"real": fixture(t, "timers"),
			"ugly": []byte("ID: 2147483647\nsignal: 64/ffffffffffffffff\nnotify: thread/tid.1\nFuture: x\n" +
				"ClockID: -2147483648\nID:0\nClockID:\t3\nnotify: none/pid.0\nsignal: 0/0"),
		},
		"FuzzParseAuxv": {
			"real":     fixture(t, "auxv"),
			"short":    aux(6, 4096, 0, 0, 9, 9)[:40],
			"trailing": aux(6, 4096, 0, 0, 9, 9),
		},
		"FuzzParseLimits": {
			"real": fixture(t, "limits"),
		},
	}
	for _, n := range []string{"epoll", "inotify", "fanotify", "eventfd", "timerfd", "timerfd_abs", "signalfd", "pidfd", "flock", "posixlock", "memfd", "pipe"} {
		s["FuzzParseFDInfo"][n] = fixture(t, "fdinfo_"+n)
	}
	return s
}

// TestSeedCorpus keeps testdata/fuzz in step with seedCorpus and the
// fixtures; after capture.sh, run it with -update-corpus.
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range seedCorpus(t) {
		for name, b := range seeds {
			path := filepath.Join("testdata", "fuzz", target, name)
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if *updateCorpus {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != want {
				t.Errorf("%s is stale or missing (%v): run go test -run TestSeedCorpus -update-corpus", path, err)
			}
		}
	}
}

func checkErr(t *testing.T, file string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is a %T, not a *ParseError", err, err)
	}
	if pe.File != file || pe.Line < 0 || pe.Err == nil || len(pe.Text) > maxErrText+3 {
		t.Fatalf("malformed ParseError %+v", pe)
	}
	_ = pe.Error()
}

// formatMapping prints m as show_map_vma would.
func formatMapping(m Mapping) string {
	perms := []byte("---p")
	if m.Read {
		perms[0] = 'r'
	}
	if m.Write {
		perms[1] = 'w'
	}
	if m.Exec {
		perms[2] = 'x'
	}
	if m.Shared {
		perms[3] = 's'
	}
	path := m.Path
	if m.Deleted {
		path += deletedSuffix
	}
	return fmt.Sprintf("%08x-%08x %s %08x %02x:%02x %d %s\n", m.Start, m.End, perms, m.Offset, m.Major, m.Minor, m.Inode, path)
}

func checkMappings(t *testing.T, ms []Mapping) {
	t.Helper()
	for _, m := range ms {
		if m.Start > m.End || m.Size() != m.End-m.Start {
			t.Fatalf("bad range %+v", m)
		}
		if strings.Contains(m.Path, "\n") || strings.HasPrefix(m.Path, " ") {
			t.Fatalf("bad path %q", m.Path)
		}
		if !m.Deleted && strings.HasSuffix(m.Path, deletedSuffix) {
			t.Fatalf("path %q keeps its suffix", m.Path)
		}
		if m.Rss%1024 != 0 || m.Anonymous%1024 != 0 || m.Swap%1024 != 0 {
			t.Fatalf("sizes not in kB: %+v", m)
		}
		for _, f := range m.VmFlags {
			if f == "" || strings.ContainsAny(f, " \t\n") {
				t.Fatalf("bad VmFlag %q", f)
			}
		}
		// The header fields survive printing and parsing again.
		header := m
		header.VmFlags, header.Rss, header.Anonymous, header.Swap = nil, 0, 0, 0
		again, err := ParseMaps([]byte(formatMapping(header)))
		if err != nil || len(again) != 1 || !reflect.DeepEqual(again[0], header) {
			t.Fatalf("round trip of %+v gave %+v, %v", header, again, err)
		}
	}
}

func FuzzParseMaps(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseMaps(b)
		checkErr(t, "maps", err)
		if err == nil && len(ms) > bytes.Count(b, []byte("\n"))+1 {
			t.Fatalf("%d mappings from %d lines", len(ms), bytes.Count(b, []byte("\n"))+1)
		}
		checkMappings(t, ms)
	})
}

func FuzzParseSmaps(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseSmaps(b)
		checkErr(t, "smaps", err)
		checkMappings(t, ms)
	})
}

func FuzzParseStat(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(b)
		checkErr(t, "stat", err)
		if err != nil {
			return
		}
		lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if s.Comm != string(b[lp+1:rp]) {
			t.Fatalf("comm %q is not what lies between the first ( and the last )", s.Comm)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStatus(b)
		checkErr(t, "status", err)
		if err != nil {
			return
		}
		if s.Fields == nil {
			t.Fatal("nil Fields")
		}
		for k, v := range s.Fields {
			if k == "" || strings.Contains(k, ":") || strings.Contains(k, "\n") || strings.Contains(v, "\n") {
				t.Fatalf("field %q: %q", k, v)
			}
		}
		if _, ok := s.Fields["Name"]; !ok && s.Name != "" {
			t.Fatalf("name %q without a Name line", s.Name)
		}
	})
}

func FuzzParseFDInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, err := ParseFDInfo(b)
		checkErr(t, "fdinfo", err)
		if err != nil {
			return
		}
		if _, ok := fi.Fields["pos"]; !ok {
			t.Fatal("no pos field")
		}
		for _, l := range fi.Lines {
			if strings.Contains(l, "\n") || l == "" {
				t.Fatalf("line %q", l)
			}
		}
		items, err := fi.EpollItems()
		checkErr(t, "fdinfo", err)
		if err == nil && len(items) > len(fi.Lines) {
			t.Fatal("more epoll items than lines")
		}
		ws, err := fi.InotifyWatches()
		checkErr(t, "fdinfo", err)
		for _, w := range ws {
			if len(w.FHandle) != w.FHandleBytes {
				t.Fatalf("watch %+v", w)
			}
		}
		_, err = fi.Eventfd()
		checkErr(t, "fdinfo", err)
		_, err = fi.Timerfd()
		checkErr(t, "fdinfo", err)
		_, err = fi.Signalfd()
		checkErr(t, "fdinfo", err)
	})
}

func FuzzParseTimers(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseTimers(b)
		checkErr(t, "timers", err)
		if err == nil && len(ts) > bytes.Count(b, []byte("ID:")) {
			t.Fatalf("%d timers from %d ID lines", len(ts), bytes.Count(b, []byte("ID:")))
		}
		for _, tm := range ts {
			if tm.Notify == "" || strings.ContainsAny(tm.Notify, "/\n") {
				t.Fatalf("timer %+v", tm)
			}
		}
	})
}

func FuzzParseAuxv(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		aux, err := ParseAuxv(b)
		checkErr(t, "auxv", err)
		if err != nil {
			return
		}
		if len(b)%16 != 0 || len(b) > 0 && 16*(len(aux)+1) > len(b) {
			t.Fatalf("%d entries from %d bytes", len(aux), len(b))
		}
		for _, e := range aux {
			if e.Type == 0 {
				t.Fatal("AT_NULL entry returned")
			}
		}
	})
}

func FuzzParseLimits(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := ParseLimits(b)
		checkErr(t, "limits", err)
		for _, l := range ls {
			if l.Name == "" || strings.ContainsAny(l.Units, " \t\n") {
				t.Fatalf("limit %+v", l)
			}
		}
	})
}
