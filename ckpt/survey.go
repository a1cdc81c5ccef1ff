package ckpt

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/sock"
)

// Survey is what a target must offer to take a process tree, read from
// the running tree without stopping it: a migration checks it on the
// target before anything is frozen, so that a refusal costs the source
// nothing.
type Survey struct {
	Root     int      `json:"root"`
	Arch     string   `json:"arch"`
	PageSize int      `json:"page_size"`
	CPUFlags []string `json:"cpu_flags"`
	// IDs are every PID and TID of the tree, which the restore reuses.
	IDs []int `json:"ids"`
	// Files are the executables and mapped files: they must be the same
	// files on the target.
	Files []FileID `json:"files"`
	// Paths are open files, directories and working directories: they
	// must exist on the target.
	Paths []string `json:"paths"`
	// TCP: the tree has established TCP connections (needs TCP_REPAIR and
	// the nftables lock on the target).
	TCP bool `json:"tcp"`
	// Unmovable lists what keeps the tree from leaving this host at all,
	// found without freezing it (a terminal); a migration refuses at once.
	Unmovable []string `json:"unmovable,omitempty"`
}

// SurveyTree reads the survey of pid and its descendants. A tree that
// changes meanwhile is fine: the dump itself rechecks everything.
func SurveyTree(pid int) (*Survey, error) {
	fs := proc.Default()
	d := &dumper{pid: pid, fs: fs}
	if err := d.precheck(); err != nil {
		return nil, err
	}
	s := &Survey{Root: pid, Arch: archName, PageSize: os.Getpagesize(), CPUFlags: cpuFlags()}
	seenFile := map[string]bool{}
	seenPath := map[string]bool{}
	addFile := func(path string) {
		if seenFile[path] || path == "" {
			return
		}
		seenFile[path] = true
		if id := fileID(path); id != nil {
			s.Files = append(s.Files, *id)
		}
	}
	addPath := func(path string) {
		if !seenPath[path] && strings.HasPrefix(path, "/") && !strings.HasSuffix(path, " (deleted)") {
			seenPath[path] = true
			s.Paths = append(s.Paths, path)
		}
	}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tids, err := fs.Tasks(p)
		if errors.Is(err, os.ErrNotExist) && p != pid {
			continue // exited meanwhile
		}
		if err != nil {
			return nil, &ProcessError{PID: p, Err: err}
		}
		s.IDs = append(s.IDs, tids...)
		if len(tids) == 0 { // a zombie keeps its PID
			s.IDs = append(s.IDs, p)
			continue
		}
		if exe, err := fs.Readlink(p, "exe"); err == nil {
			addFile(strings.TrimSuffix(exe, " (deleted)"))
		}
		if cwd, err := fs.Readlink(p, "cwd"); err == nil {
			addPath(cwd)
		}
		if b, err := fs.Read(p, "maps"); err == nil {
			maps, _ := proc.ParseMaps(b)
			for _, m := range maps {
				if m.Inode != 0 && strings.HasPrefix(m.Path, "/") && !strings.HasSuffix(m.Path, " (deleted)") &&
					!strings.HasPrefix(m.Path, "/memfd:") && !strings.HasPrefix(m.Path, "/SYSV") {
					addFile(m.Path)
				}
			}
		}
		s.surveyFDs(fs, p, addPath)
		kids, err := fs.Children(p)
		if err == nil {
			queue = append(queue, kids...)
		}
	}
	slices.Sort(s.IDs)
	s.IDs = slices.Compact(s.IDs)
	return s, nil
}

// surveyFDs adds the open files and directories of pid, and notes TCP.
func (s *Survey) surveyFDs(fs proc.FS, pid int, addPath func(string)) {
	fds, err := fs.FDs(pid)
	if err != nil {
		return
	}
	for _, fd := range fds {
		link, err := fs.Readlink(pid, fmt.Sprintf("fd/%d", fd))
		if err != nil {
			continue
		}
		if strings.HasPrefix(link, "socket:") {
			s.TCP = s.TCP || peekTCPConn(pid, fd)
			continue
		}
		if strings.HasPrefix(link, "/dev/pts/") || strings.HasPrefix(link, "/dev/tty") || link == "/dev/console" {
			s.Unmovable = append(s.Unmovable, fmt.Sprintf("pid %d fd %d is the terminal %s: a terminal cannot move to another host (start the job detached, e.g. with setsid and its output in a file)", pid, fd, link))
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fs.Path(pid, fmt.Sprintf("fd/%d", fd)), &st) != nil {
			continue
		}
		if t := st.Mode & unix.S_IFMT; t == unix.S_IFREG || t == unix.S_IFDIR {
			addPath(link)
		}
	}
}

// peekTCPConn looks at a socket of another process through a copy
// of its descriptor.
func peekTCPConn(pid, fd int) bool {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return false
	}
	defer unix.Close(local)
	return sock.CarriedTCP(local)
}

// Check lists, one line each, why this machine cannot restore the
// surveyed tree; nil means it can. It changes nothing. With pidns the
// tree would get a PID namespace of its own: taken PIDs do not matter.
// missing are the paths among the problems that do not exist here: a file
// the tree held open for a moment (a temporary file renamed since) is one
// of them, and the source may look again (Gone).
func (s *Survey) Check(pidns bool) (problems, missing []string) {
	if s.Arch != archName {
		return []string{fmt.Sprintf("the process is %s, this machine is %s", s.Arch, archName)}, nil
	}
	if s.PageSize != os.Getpagesize() {
		problems = append(problems, fmt.Sprintf("the process has %d-byte pages, this machine %d", s.PageSize, os.Getpagesize()))
	}
	if missing := missingCPUFlags(s.CPUFlags, cpuFlags()); len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("this CPU lacks features the process may use: %s", strings.Join(missing, " ")))
	}
	if os.Geteuid() != 0 {
		problems = append(problems, "relocate does not run as root here")
	}
	for _, c := range Check() {
		if c.Required && !c.OK {
			problems = append(problems, fmt.Sprintf("kernel: %s: %s", c.Name, c.Detail))
		}
	}
	if s.TCP {
		if err := sock.LockAvailable(); err != nil {
			problems = append(problems, fmt.Sprintf("the process has TCP connections and nftables is not usable here: %v", err))
		}
	}
	var taken []string
	for _, id := range s.IDs {
		if pidns {
			break
		}
		if err := unix.Kill(id, 0); err == nil || errors.Is(err, unix.EPERM) {
			taken = append(taken, fmt.Sprintf("%d (%s)", id, pidHolder(id)))
		}
	}
	if len(taken) > 0 {
		problems = append(problems, fmt.Sprintf("PIDs taken here: %s", strings.Join(taken, ", ")))
	}
	// Paths are looked at as restore will open them: a symbolic link
	// planted anywhere in one is a problem, not a pass.
	for _, f := range s.Files {
		if err := checkPath(f.Path, expect{typ: unix.S_IFREG, id: &f}); errors.Is(err, unix.ENOENT) {
			problems = append(problems, fmt.Sprintf("%s: missing here", f.Path))
			missing = append(missing, f.Path)
		} else if err != nil {
			problems = append(problems, err.Error())
		}
	}
	for _, p := range s.Paths {
		if fd, _, err := openPath(p); errors.Is(err, unix.ENOENT) {
			problems = append(problems, fmt.Sprintf("%s: missing here", p))
			missing = append(missing, p)
		} else if err != nil {
			problems = append(problems, err.Error())
		} else {
			unix.Close(fd)
		}
	}
	return problems, missing
}

// Gone reports whether the tree, as surveyed now, holds none of paths
// (files the target found missing) any more: they were there for a
// moment, and a new survey is worth checking again.
func (s *Survey) Gone(paths []string) bool {
	held := map[string]bool{}
	for _, f := range s.Files {
		held[f.Path] = true
	}
	for _, p := range s.Paths {
		held[p] = true
	}
	for _, p := range paths {
		if held[p] {
			return false
		}
	}
	return true
}

// SurveyHere is the survey of no process at all: checking it on a target
// tests the machine (root, kernel features, architecture) and nothing else.
func SurveyHere() Survey {
	return Survey{Arch: archName, PageSize: os.Getpagesize()}
}
