package ckpt

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
)

// FileExternal is a descriptor that led out of the tree: a pipe whose
// other end a process outside the checkpoint holds (`app | logger`, the
// stdout a supervisor captures, a descriptor inherited from a cron job).
// The other side stays behind; restore connects the descriptor to what
// the user names (RestoreOptions.External), /dev/null by default.
const FileExternal = "external"

// External names, in the image, what an external descriptor was.
type External struct {
	What string `json:"what"` // "pipe:[1234]"
	// Journal: the descriptor was a stdout stream to journald, opened as
	// this (see journal.go).
	Journal *JournalStream `json:"journal,omitempty"`
}

// ExternalRule says where external descriptors go at restore. PID 0
// matches every process, FD -1 every descriptor; the most particular
// rule that matches wins.
type ExternalRule struct {
	PID    int
	FD     int
	Target string // "/dev/null", a file, "stdin", "stdout", "stderr" or "journal"
}

// targetJournal: a new stdout stream to the restoring host's journal.
const targetJournal = "journal"

// ParseExternalRule reads "[PID:]FD=TARGET" or "all=TARGET".
func ParseExternalRule(s string) (ExternalRule, error) {
	r := ExternalRule{FD: -1}
	sel, target, ok := strings.Cut(s, "=")
	if !ok || target == "" {
		return r, fmt.Errorf("--external %q: want FD=TARGET, PID:FD=TARGET or all=TARGET", s)
	}
	r.Target = target
	if sel == "all" {
		return r, nil
	}
	if p, f, ok := strings.Cut(sel, ":"); ok {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return r, fmt.Errorf("--external %q: %q is not a pid", s, p)
		}
		r.PID, sel = pid, f
	}
	fd, err := strconv.Atoi(sel)
	if err != nil || fd < 0 {
		return r, fmt.Errorf("--external %q: %q is not a descriptor number", s, sel)
	}
	r.FD = fd
	return r, nil
}

// ExternalNote tells where an external descriptor went at restore.
type ExternalNote struct {
	PID    int    `json:"pid"`
	FD     int    `json:"fd"`
	What   string `json:"what"`
	Target string `json:"target"`
}

// externalKind is a descriptor that led outside the tree.
type externalKind struct{ baseKind }

func (externalKind) dump(*fdProbe, *File) (bool, error) { return false, nil }

func (externalKind) describe(f *File) string {
	if f.External == nil {
		return f.Kind
	}
	return f.External.What + " to a process outside the checkpoint"
}

// open duplicates the target resolveExternals opened for f.
func (externalKind) open(sh *shared, f *File) (int, error) {
	t, ok := sh.externals[f]
	if !ok || f.External == nil {
		return -1, fmt.Errorf("external descriptor without state: %w", image.ErrCorrupt)
	}
	return unix.FcntlInt(uintptr(t.fd), unix.F_DUPFD_CLOEXEC, 3)
}

// externalTarget is where one external descriptor goes, opened.
type externalTarget struct {
	name string
	fd   int
}

// openTarget opens what an external descriptor with status flags
// flags goes to: a standard descriptor of relocate itself, /dev/null, or
// a file (created, appended to, for a write end).
func openTarget(name string, flags int) (int, error) {
	if n, ok := map[string]int{"stdin": 0, "stdout": 1, "stderr": 2}[name]; ok {
		fd, err := unix.FcntlInt(uintptr(n), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return -1, fmt.Errorf("relocate's %s: %w", name, err)
		}
		return fd, nil
	}
	flags = flags&(unix.O_ACCMODE|unix.O_NONBLOCK) | unix.O_CLOEXEC
	if flags&unix.O_ACCMODE != unix.O_RDONLY && name != "/dev/null" {
		flags |= unix.O_CREAT | unix.O_APPEND
	}
	fd, err := unix.Open(name, flags, 0o644)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	return fd, nil
}

// makeExternal turns a pipe end whose other end is outside the tree into
// an external descriptor: the buffered bytes stay in the pipe, for the
// process outside (a reader) or for nobody.
func (t *fileTable) makeExternal(f *File, what string) {
	if f.Blob != 0 {
		t.dropBlob(f.Blob)
	}
	*f = File{Kind: FileExternal, Flags: f.Flags, Mode: f.Mode, External: &External{What: what}}
}

// resolveExternals decides where each external descriptor of the image
// goes and opens it, before anything is made: a rule that matches no
// external descriptor is refused, as is a target that cannot be opened.
func (sh *shared) resolveExternals(rules []ExternalRule) error {
	sh.externals = map[*File]externalTarget{}
	used := make([]bool, len(rules))
	targets := map[int]string{}
	for i := range sh.cp.Files {
		f := &sh.cp.Files[i]
		if f.Kind != FileExternal || f.External == nil {
			continue
		}
		best, score := "/dev/null", -1
		if f.External.Journal != nil && journalAvailable() {
			best = targetJournal // the lines go on where they went
		}
		comm := ""
		for _, p := range sh.cp.Processes {
			for _, fd := range p.FDs {
				if fd.File != i {
					continue
				}
				for j, r := range rules {
					if (r.PID != 0 && r.PID != p.PID) || (r.FD >= 0 && r.FD != fd.FD) {
						continue
					}
					used[j] = true
					s := 0
					if r.FD >= 0 {
						s++
					}
					if r.PID != 0 {
						s += 2
					}
					if s > score {
						best, score = r.Target, s
					} else if s == score && r.Target != best {
						return externalError(fmt.Sprintf("--external: pid %d fd %d (%s) is named twice, %s and %s", p.PID, fd.FD, f.Describe(), best, r.Target), nil)
					}
				}
				sh.notes = append(sh.notes, ExternalNote{PID: p.PID, FD: fd.FD, What: f.External.What})
				if comm == "" {
					comm = p.Comm
				}
			}
		}
		targets[i] = best
		var tfd int
		var err error
		if best == targetJournal {
			js := f.External.Journal
			if js == nil {
				// A pipe sent to the journal: named after its process.
				js = &JournalStream{Identifier: comm, Priority: 6}
			}
			tfd, err = connectJournal(js)
			if err == nil && f.Flags&unix.O_NONBLOCK != 0 {
				err = unix.SetNonblock(tfd, true)
			}
		} else {
			tfd, err = openTarget(best, f.Flags)
		}
		if err != nil {
			return externalError("--external: "+f.Describe(), err)
		}
		sh.toClose = append(sh.toClose, tfd)
		sh.externals[f] = externalTarget{name: best, fd: tfd}
	}
	for j, r := range rules {
		if !used[j] && r.FD >= 0 {
			return externalError("--external "+ruleString(r)+": the image has no such descriptor leading outside the checkpoint (relocate inspect lists them)", nil)
		}
	}
	for k := range sh.notes {
		n := &sh.notes[k]
		for _, p := range sh.cp.Processes {
			for _, fd := range p.FDs {
				if p.PID == n.PID && fd.FD == n.FD {
					n.Target = targets[fd.File]
				}
			}
		}
	}
	return nil
}

func ruleString(r ExternalRule) string {
	s := strconv.Itoa(r.FD)
	if r.PID != 0 {
		s = strconv.Itoa(r.PID) + ":" + s
	}
	return s + "=" + r.Target
}

// externalError is a rule that cannot be followed: msg, and err if set.
func externalError(msg string, err error) error {
	if err != nil {
		msg += ": " + err.Error()
	}
	return &wrapped{msg: msg, err: ErrExternal}
}

// wrapped is an error whose text is msg and which unwraps to err.
type wrapped struct {
	msg string
	err error
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.err }

// externals lists the descriptors of the tree that lead outside it.
func (cp *Checkpoint) externals() []ExternalNote {
	var out []ExternalNote
	for _, p := range cp.Processes {
		for _, fd := range p.FDs {
			if f := cp.Files[fd.File]; f.Kind == FileExternal && f.External != nil {
				out = append(out, ExternalNote{PID: p.PID, FD: fd.FD, What: f.External.What})
			}
		}
	}
	return out
}
