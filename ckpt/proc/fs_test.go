package proc

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// testdata/proc is a fake /proc:
//
//	100/task/{100,101,102,not-a-tid}/children, fd/{0,1,2,10,notanfd}, cwd, maps, stat
//	300/task/300/children (empty), task/301/ without children
//	400/task/400/children holding garbage
var fakeProc = FS{Root: "testdata/proc"}

func TestFSListings(t *testing.T) {
	tids, err := fakeProc.Tasks(100)
	if err != nil || !reflect.DeepEqual(tids, []int{100, 101, 102}) {
		t.Errorf("Tasks = %v, %v", tids, err)
	}
	kids, err := fakeProc.Children(100)
	if err != nil || !reflect.DeepEqual(kids, []int{200, 201, 202, 203}) {
		t.Errorf("Children = %v, %v", kids, err)
	}
	pids, err := fakeProc.PIDs()
	if err != nil || !reflect.DeepEqual(pids, []int{100, 300, 400}) {
		t.Errorf("PIDs = %v, %v", pids, err)
	}
	fds, err := fakeProc.FDs(100)
	if err != nil || !reflect.DeepEqual(fds, []int{0, 1, 2, 10}) {
		t.Errorf("FDs = %v, %v", fds, err)
	}
	for name, want := range map[string]string{
		"fd/0":  "pipe:[27452]",
		"fd/10": "/tmp/dir with space/gone.bin (deleted)",
		"cwd":   "/tmp/dir with space",
	} {
		if got, err := fakeProc.Readlink(100, name); err != nil || got != want {
			t.Errorf("Readlink(%q) = %q, %v", name, got, err)
		}
	}
}

func TestFSRead(t *testing.T) {
	b, err := fakeProc.Read(100, "maps")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseMaps(b); err != nil {
		t.Fatal(err)
	}
	b, err = fakeProc.ReadTask(100, 101, "stat")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := ParseStat(b); err != nil || s.Comm != uglyThreadName {
		t.Fatalf("task stat %+v, %v", s, err)
	}
	if got := fakeProc.Path(100, "task/101/stat"); got != "testdata/proc/100/task/101/stat" {
		t.Errorf("Path = %q", got)
	}
	if got := (FS{}).Path(1, "maps"); got != "/proc/1/maps" {
		t.Errorf("zero FS Path = %q", got)
	}
	if Default().Root != "/proc" {
		t.Error("Default")
	}
}

func TestFSErrors(t *testing.T) {
	_, err := fakeProc.Read(999, "maps")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "testdata/proc/999/maps") {
		t.Errorf("Read: %v", err)
	}
	_, err = fakeProc.ReadTask(100, 999, "stat")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "testdata/proc/100/task/999/stat") {
		t.Errorf("ReadTask: %v", err)
	}
	for name, f := range map[string]func(int) ([]int, error){"Tasks": fakeProc.Tasks, "FDs": fakeProc.FDs, "Children": fakeProc.Children} {
		if _, err := f(999); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "testdata/proc/999/") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := fakeProc.Readlink(100, "exe"); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "100/exe") {
		t.Errorf("Readlink: %v", err)
	}
	// Thread 301 is there but has no children file: not a vanished thread.
	if _, err := fakeProc.Children(300); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "300/task/301/children") {
		t.Errorf("Children(300): %v", err)
	}
	_, err = fakeProc.Children(400)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.File != "testdata/proc/400/task/400/children" || pe.Line != 1 {
		t.Errorf("Children(400): %v", err)
	}
}

func TestParseChildren(t *testing.T) {
	for in, want := range map[string][]int{
		"":              nil,
		"1":             {1},
		"5 3 4 ":        {5, 3, 4},
		"5\n3\t4\n\n":   {5, 3, 4},
		"  2147483647 ": {2147483647},
	} {
		if got, err := ParseChildren([]byte(in)); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseChildren(%q) = %v, %v", in, got, err)
		}
	}
	_, err := ParseChildren([]byte("1 2\n3 x4\n"))
	wantParseError(t, err, "children", 2, `bad pid "x4"`)
}
