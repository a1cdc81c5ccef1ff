package proc

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// FS reads /proc files below Root, "/proc" when empty, so that a fixture
// tree can stand in for the real one. Errors name the path.
type FS struct{ Root string }

// Default is the real /proc.
func Default() FS { return FS{Root: "/proc"} }

func (fs FS) root() string {
	if fs.Root == "" {
		return "/proc"
	}
	return fs.Root
}

// Path is the path of the file name of process pid: Path(42, "fd/3").
func (fs FS) Path(pid int, name string) string {
	return filepath.Join(fs.root(), strconv.Itoa(pid), name)
}

// Read reads a file of process pid: Read(42, "maps"), Read(42, "task/43/stat").
func (fs FS) Read(pid int, name string) ([]byte, error) {
	return os.ReadFile(fs.Path(pid, name))
}

// ReadTask reads a file of thread tid of process pid.
func (fs FS) ReadTask(pid, tid int, name string) ([]byte, error) {
	return fs.Read(pid, filepath.Join("task", strconv.Itoa(tid), name))
}

// Readlink reads a symbolic link of process pid: "fd/3", "cwd", "exe", "root".
func (fs FS) Readlink(pid int, name string) (string, error) {
	return os.Readlink(fs.Path(pid, name))
}

// Tasks lists the thread ids of process pid, sorted.
func (fs FS) Tasks(pid int) ([]int, error) {
	return readDirInts(fs.Path(pid, "task"))
}

// PIDs lists the processes (the numeric entries of Root), sorted.
func (fs FS) PIDs() ([]int, error) {
	return readDirInts(fs.root())
}

// FDs lists the open descriptors of process pid, sorted.
func (fs FS) FDs(pid int) ([]int, error) {
	return readDirInts(fs.Path(pid, "fd"))
}

// Children lists the children of all threads of process pid, sorted and
// without repeats. The kernel builds each children file by walking a list
// that changes under it, so the answer is only complete for a frozen
// process. A thread that exits meanwhile is skipped.
func (fs FS) Children(pid int) ([]int, error) {
	tids, err := fs.Tasks(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, tid := range tids {
		name := filepath.Join("task", strconv.Itoa(tid), "children")
		b, err := fs.Read(pid, name)
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(fs.Path(pid, filepath.Dir(name))); errors.Is(serr, os.ErrNotExist) {
				continue // the thread is gone
			}
		}
		if err != nil {
			return nil, err
		}
		kids, err := ParseChildren(b)
		if pe, ok := err.(*ParseError); ok {
			pe.File = fs.Path(pid, name)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, kids...)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ParseChildren parses a /proc/PID/task/TID/children file: pids separated
// by blanks.
func ParseChildren(b []byte) ([]int, error) {
	var out []int
	for n, line := range lines(b) {
		var p numParser
		for f, rest := nextField(line); len(f) > 0; f, rest = nextField(rest) {
			out = append(out, p.int("pid", f))
		}
		if p.err != nil {
			return nil, parseErr("children", n, line, p.err)
		}
	}
	return out, nil
}

// readDirInts lists the names of dir that are decimal numbers, sorted.
func readDirInts(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, ok := parseInt([]byte(e.Name()), strconv.IntSize); ok && n >= 0 {
			out = append(out, int(n))
		}
	}
	slices.Sort(out)
	return out, nil
}
