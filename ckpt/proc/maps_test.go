package proc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixture reads testdata/real/name, captured by testdata/capture/capture.sh.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "real", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantParseError checks that err is a *ParseError for file at line whose
// message contains substr.
func wantParseError(t *testing.T, err error, file string, line int, substr string) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T), want a *ParseError", err, err)
	}
	if pe.File != file || pe.Line != line || !strings.Contains(pe.Error(), substr) {
		t.Fatalf("error %q (file %q line %d), want file %q line %d containing %q", pe, pe.File, pe.Line, file, line, substr)
	}
	if errors.Unwrap(err) == nil {
		t.Fatalf("error %q unwraps to nil", err)
	}
}

// byPath finds the mapping whose path ends with suffix.
func byPath(t *testing.T, ms []Mapping, suffix string) Mapping {
	t.Helper()
	for _, m := range ms {
		if strings.HasSuffix(m.Path, suffix) {
			return m
		}
	}
	t.Fatalf("no mapping with a path ending in %q", suffix)
	return Mapping{}
}

func checkRealMappings(t *testing.T, ms []Mapping, nlines int) {
	t.Helper()
	if len(ms) != nlines {
		t.Fatalf("%d mappings from %d lines", len(ms), nlines)
	}
	for i, m := range ms {
		if m.Start >= m.End || m.Start%4096 != 0 || m.End%4096 != 0 {
			t.Errorf("mapping %d: bad range %#x-%#x", i, m.Start, m.End)
		}
		if i > 0 && ms[i-1].End > m.Start {
			t.Errorf("mapping %d overlaps its predecessor", i)
		}
	}
	for _, tc := range []struct {
		suffix                    string
		read, write, exec, shared bool
		deleted                   bool
		anonDev                   bool
	}{
		{suffix: "[heap]", read: true, write: true, anonDev: true},
		{suffix: "[stack]", read: true, write: true, anonDev: true},
		{suffix: "[vdso]", read: true, exec: true, anonDev: true},
		{suffix: "[vvar]", read: true, anonDev: true},
		{suffix: "[vvar_vclock]", read: true, anonDev: true},
		{suffix: "[vsyscall]", exec: true, anonDev: true},
		{suffix: "/dir with space/with space.bin", read: true, write: true, shared: true},
		{suffix: "/dir with space/gone.bin", read: true, write: true, shared: true, deleted: true},
		{suffix: "/dir with space/a (deleted) b", read: true, write: true, shared: true},
		{suffix: "/dir with space/x (deleted) y (deleted)", read: true, write: true, shared: true, deleted: true},
		{suffix: "/memfd:my memfd", read: true, shared: true, deleted: true},
		{suffix: "/dev/zero", read: true, write: true, shared: true, deleted: true},
	} {
		m := byPath(t, ms, tc.suffix)
		if m.Read != tc.read || m.Write != tc.write || m.Exec != tc.exec || m.Shared != tc.shared || m.Deleted != tc.deleted {
			t.Errorf("%s: got %+v", tc.suffix, m)
		}
		if tc.anonDev != (m.Major == 0 && m.Inode == 0) {
			t.Errorf("%s: device %x:%x inode %d", tc.suffix, m.Major, m.Minor, m.Inode)
		}
	}
	if m := byPath(t, ms, "[vsyscall]"); m.Start != 0xffffffffff600000 || m.Size() != 4096 {
		t.Errorf("vsyscall at %#x size %d", m.Start, m.Size())
	}
	anon := 0
	for _, m := range ms {
		if m.Path == "" {
			anon++
			if m.Inode != 0 || m.Deleted {
				t.Errorf("anonymous mapping %+v", m)
			}
		}
	}
	if anon == 0 {
		t.Error("no anonymous mappings")
	}
	libc := byPath(t, ms, "/libc.so.6")
	if libc.Inode == 0 || libc.Major == 0 || !strings.HasPrefix(libc.Path, "/") {
		t.Errorf("libc: %+v", libc)
	}
}

func TestParseMapsReal(t *testing.T) {
	b := fixture(t, "maps")
	ms, err := ParseMaps(b)
	if err != nil {
		t.Fatal(err)
	}
	checkRealMappings(t, ms, bytes.Count(b, []byte("\n")))
	for _, m := range ms {
		if m.VmFlags != nil || m.Rss != 0 {
			t.Errorf("maps gave smaps data: %+v", m)
		}
	}
}

func TestParseMapsEmpty(t *testing.T) {
	ms, err := ParseMaps(fixture(t, "zombie_maps"))
	if err != nil || len(ms) != 0 {
		t.Fatalf("zombie maps: %v, %v", ms, err)
	}
}

func TestParseMapsUgly(t *testing.T) {
	long := strings.Repeat("/very long dir name", 20000) + "/f"
	for _, tc := range []struct {
		name string
		in   string
		want Mapping
	}{
		{"anonymous with trailing space", "7f14c3dfe000-7f14c3dff000 ---p 00000000 00:00 0 \n",
			Mapping{Start: 0x7f14c3dfe000, End: 0x7f14c3dff000}},
		{"anonymous without trailing space nor newline", "7f14c3dfe000-7f14c3dff000 rw-p 00000000 00:00 0",
			Mapping{Start: 0x7f14c3dfe000, End: 0x7f14c3dff000, Read: true, Write: true}},
		{"path with spaces", "1000-3000 r-xs 0000a000 fe:01 123456                     /a b/c  d \n",
			Mapping{Start: 0x1000, End: 0x3000, Read: true, Exec: true, Shared: true, Offset: 0xa000, Major: 0xfe, Minor: 1, Inode: 123456, Path: "/a b/c  d "}},
		{"deleted", "1000-2000 rw-s 00000000 00:01 1047                       /dev/zero (deleted)",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Write: true, Shared: true, Minor: 1, Inode: 1047, Path: "/dev/zero", Deleted: true}},
		{"deleted inside", "1000-2000 r--p 00000000 fe:00 5 /tmp/a (deleted) b",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: "/tmp/a (deleted) b"}},
		{"deleted twice", "1000-2000 r--p 00000000 fe:00 5 /tmp/a (deleted) (deleted)",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: "/tmp/a (deleted)", Deleted: true}},
		{"padding is not part of the suffix", "1000-2000 r--p 00000000 fe:00 5  (deleted)",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: "(deleted)"}},
		{"anon name", "1000-2000 rw-p 00000000 00:00 0 [anon:my region (deleted)]",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Write: true, Path: "[anon:my region (deleted)]"}},
		{"escaped newline", `1000-2000 r--p 00000000 fe:00 5 /tmp/a\012b`,
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: `/tmp/a\012b`}},
		{"colon and dash in path", "1000-2000 r--p 00000000 fe:00 5 /x/00400000-00452000 r-xp 00:00",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: "/x/00400000-00452000 r-xp 00:00"}},
		{"huge values", "0-ffffffffffffffff ---p ffffffffffffffff fff:fffff 18446744073709551615 x",
			Mapping{End: 1<<64 - 1, Offset: 1<<64 - 1, Major: 0xfff, Minor: 0xfffff, Inode: 1<<64 - 1, Path: "x"}},
		{"very long path", "1000-2000 r--p 00000000 fe:00 5 " + long,
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: long}},
		{"carriage return kept", "1000-2000 r--p 00000000 fe:00 5 /a\r",
			Mapping{Start: 0x1000, End: 0x2000, Read: true, Major: 0xfe, Inode: 5, Path: "/a\r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ParseMaps([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 || !reflect.DeepEqual(ms[0], tc.want) {
				t.Fatalf("got %+v\nwant %+v", ms, tc.want)
			}
		})
	}
}

func TestParseMapsErrors(t *testing.T) {
	good := "1000-2000 r--p 00000000 fe:00 5 /a\n"
	for _, tc := range []struct{ in, substr string }{
		{"1000 r--p 00000000 fe:00 5 /a", "bad address range"},
		{"1000-zz r--p 00000000 fe:00 5 /a", `bad end address "zz"`},
		{"-2000 r--p 00000000 fe:00 5 /a", "bad start address"},
		{"2000-1000 r--p 00000000 fe:00 5 /a", "start address after end"},
		{"1000-2000 r--q 00000000 fe:00 5 /a", "bad permissions"},
		{"1000-2000 r- 00000000 fe:00 5 /a", "bad permissions"},
		{"1000-2000 r--p 0000000g fe:00 5 /a", "bad offset"},
		{"1000-2000 r--p 00000000 fe00 5 /a", "bad device"},
		{"1000-2000 r--p 00000000 fe:00 x5 /a", "bad inode"},
		{"1000-2000 r--p 00000000 fe:00", "bad inode"},
		{"1000-2000  r--p 00000000 fe:00 5 /a", "bad permissions"},
		{"10000000000000000-2 r--p 00000000 fe:00 5 /a", "bad start address"},
		{"1000-2000 r--p 00000000 fe:00 -5 /a", "bad inode"},
		{"Rss:   4 kB", "bad address range"},
	} {
		_, err := ParseMaps([]byte(good + tc.in + "\n" + good))
		wantParseError(t, err, "maps", 2, tc.substr)
	}
}

func TestParseErrorTextIsCut(t *testing.T) {
	line := "1000-2000 r--q 00000000 fe:00 5 " + strings.Repeat("x", 1<<20)
	_, err := ParseMaps([]byte(line))
	var pe *ParseError
	if !errors.As(err, &pe) || len(pe.Text) > maxErrText+3 || !strings.HasSuffix(pe.Text, "...") {
		t.Fatalf("error %.100v", err)
	}
}

func TestParseSmapsReal(t *testing.T) {
	b := fixture(t, "smaps")
	ms, err := ParseSmaps(b)
	if err != nil {
		t.Fatal(err)
	}
	checkRealMappings(t, ms, bytes.Count(b, []byte("VmFlags:")))
	maps, err := ParseMaps(fixture(t, "maps"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range maps {
		if i >= len(ms) {
			break
		}
		got := ms[i]
		got.VmFlags, got.Rss, got.Anonymous, got.Swap = nil, 0, 0, 0
		if !reflect.DeepEqual(got, maps[i]) {
			t.Errorf("smaps mapping %d is %+v, maps says %+v", i, got, maps[i])
		}
	}
	for _, m := range ms {
		if len(m.VmFlags) == 0 {
			t.Errorf("%#x %s: no VmFlags", m.Start, m.Path)
		}
		if m.Read != m.HasFlag("rd") || m.Write != m.HasFlag("wr") || m.Exec != m.HasFlag("ex") || m.Shared != m.HasFlag("sh") {
			t.Errorf("%#x %s: perms disagree with %v", m.Start, m.Path, m.VmFlags)
		}
		if m.Rss%1024 != 0 || m.Rss > m.Size() || m.Anonymous > m.Rss {
			t.Errorf("%#x %s: rss %d anonymous %d size %d", m.Start, m.Path, m.Rss, m.Anonymous, m.Size())
		}
	}
	heap := byPath(t, ms, "[heap]")
	if heap.Rss == 0 || heap.Anonymous == 0 || !heap.HasFlag("ac") {
		t.Errorf("heap: %+v", heap)
	}
	if vdso := byPath(t, ms, "[vdso]"); vdso.HasFlag("wr") || !vdso.HasFlag("ex") {
		t.Errorf("vdso: %v", vdso.VmFlags)
	}
	// The workload mlocks a page, marks a region MADV_DONTFORK and another
	// MADV_NOHUGEPAGE, and its stack grows down.
	for _, f := range []string{"lo", "dc", "nh", "gd"} {
		found := false
		for _, m := range ms {
			found = found || m.HasFlag(f)
		}
		if !found {
			t.Errorf("no mapping has VmFlag %q", f)
		}
	}
	if stack := byPath(t, ms, "[stack]"); !stack.HasFlag("gd") {
		t.Errorf("stack: %v", stack.VmFlags)
	}
	if m := byPath(t, ms, "/gone.bin"); m.Rss != 4096 || m.Anonymous != 0 || !m.HasFlag("sh") {
		t.Errorf("gone.bin: %+v", m)
	}
}

func TestParseSmapsUgly(t *testing.T) {
	in := "1000-3000 rw-p 00000000 00:00 0 \n" +
		"Size:                  8 kB\n" +
		"Rss:                   8 kB\n" +
		"Anonymous:             4 kB\n" +
		"Swap:                  4 kB\n" +
		"THPeligible:           0\n" +
		"ProtectionKey:         0\n" +
		"Future_Thing:          whatever\n" +
		"VmFlags: rd wr mr mw me ac zz \n" +
		"\n" +
		"4000-5000 r--s 00001000 fe:01 42                         /path: with colon Rss: 4 kB (deleted)\n" +
		"VmFlags:\n" +
		"Rss: 0 kB"
	ms, err := ParseSmaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Start: 0x1000, End: 0x3000, Read: true, Write: true, VmFlags: []string{"rd", "wr", "mr", "mw", "me", "ac", "zz"}, Rss: 8192, Anonymous: 4096, Swap: 4096},
		{Start: 0x4000, End: 0x5000, Read: true, Shared: true, Offset: 0x1000, Major: 0xfe, Minor: 1, Inode: 42, Path: "/path: with colon Rss: 4 kB", Deleted: true},
	}
	if !reflect.DeepEqual(ms, want) {
		t.Fatalf("got  %+v\nwant %+v", ms, want)
	}
	if !ms[0].HasFlag("ac") || ms[0].HasFlag("a") || ms[1].HasFlag("rd") {
		t.Fatal("HasFlag")
	}
}

func TestParseSmapsErrors(t *testing.T) {
	head := "1000-2000 r--p 00000000 fe:00 5 /a\n"
	for _, tc := range []struct {
		in     string
		line   int
		substr string
	}{
		{"Rss: 4 kB\n", 1, "before the first mapping"},
		{head + "Rss: 4 MB\n", 2, "want N kB"},
		{head + "Rss: x kB\n", 2, "bad size"},
		{head + "Rss: 4 kB extra\n", 2, "bad size"},
		{head + "Anonymous:\n", 2, "bad size"},
		{head + "Swap: 18014398509481984 kB\n", 2, "overflows"},
		{head + "no colon here\n", 2, "neither a mapping"},
		{head + "Key with space: 1\n", 2, "neither a mapping"},
		{head + ": 1\n", 2, "neither a mapping"},
		{head + "1000-2000 r--p 00000000 fe:00 5x /a\n", 2, "bad inode"},
	} {
		_, err := ParseSmaps([]byte(tc.in))
		wantParseError(t, err, "smaps", tc.line, tc.substr)
	}
}

func TestMappingSize(t *testing.T) {
	if (Mapping{Start: 0x1000, End: 0x3000}).Size() != 0x2000 {
		t.Fatal("size")
	}
	if (Mapping{Start: 0x3000, End: 0x1000}).Size() != 0 {
		t.Fatal("size of an inverted mapping")
	}
}

func BenchmarkParseSmaps(b *testing.B) {
	in := fixture(b, "smaps")
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseSmaps(in); err != nil {
			b.Fatal(err)
		}
	}
}
