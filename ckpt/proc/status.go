package proc

import (
	"bytes"
	"errors"
	"fmt"
)

// Status is /proc/PID/status or /proc/PID/task/TID/status. A line the file
// lacks leaves its field zero; Fields says which lines were there.
type Status struct {
	Name                                   string // unescaped: equal to Stat.Comm
	Umask                                  uint32
	State                                  byte
	Tgid, PID, PPID, TracerPID             int
	UID, GID                               [4]int // real, effective, saved, filesystem
	Groups                                 []int
	NStgid, NSpid, NSpgid, NSsid           []int // outermost namespace first
	Kthread                                bool
	SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt uint64
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             bool
	Seccomp                                int // SECCOMP_MODE_*
	SeccompFilters                         int
	Threads                                int

	// Fields holds every line: key without the colon, value with the
	// surrounding blanks trimmed ("VmRSS": "1440 kB").
	Fields map[string]string
}

// ParseStatus parses /proc/PID/status. Blank lines are ignored; any other
// line must be "Key:" followed by a value.
func ParseStatus(b []byte) (Status, error) {
	s := Status{Fields: map[string]string{}}
	for n, line := range lines(b) {
		if len(line) == 0 {
			continue
		}
		key, raw, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(key) == 0 {
			return Status{}, parseErr("status", n, line, errors.New("no Key:"))
		}
		v := trimSpace(raw)
		s.Fields[string(key)] = string(v)
		var p numParser
		switch string(key) {
		case "Name":
			// proc_task_name prints the comm untrimmed after one tab and
			// escapes only "\n" and "\\".
			s.Name = unescapeName(bytes.TrimPrefix(raw, []byte("\t")))
		case "Umask":
			s.Umask = uint32(p.uint("umask", v, 8, 32))
		case "State":
			if len(v) == 0 {
				p.fail("state", v)
			} else {
				s.State = v[0]
			}
		case "Tgid":
			s.Tgid = p.int("Tgid", v)
		case "Pid":
			s.PID = p.int("Pid", v)
		case "PPid":
			s.PPID = p.int("PPid", v)
		case "TracerPid":
			s.TracerPID = p.int("TracerPid", v)
		case "Uid":
			s.UID = p.ids4("Uid", v)
		case "Gid":
			s.GID = p.ids4("Gid", v)
		case "Groups":
			s.Groups = p.ints("Groups", v)
		case "NStgid":
			s.NStgid = p.ints("NStgid", v)
		case "NSpid":
			s.NSpid = p.ints("NSpid", v)
		case "NSpgid":
			s.NSpgid = p.ints("NSpgid", v)
		case "NSsid":
			s.NSsid = p.ints("NSsid", v)
		case "Kthread":
			s.Kthread = p.bool("Kthread", v)
		case "SigPnd":
			s.SigPnd = p.hex64("SigPnd", v)
		case "ShdPnd":
			s.ShdPnd = p.hex64("ShdPnd", v)
		case "SigBlk":
			s.SigBlk = p.hex64("SigBlk", v)
		case "SigIgn":
			s.SigIgn = p.hex64("SigIgn", v)
		case "SigCgt":
			s.SigCgt = p.hex64("SigCgt", v)
		case "CapInh":
			s.CapInh = p.hex64("CapInh", v)
		case "CapPrm":
			s.CapPrm = p.hex64("CapPrm", v)
		case "CapEff":
			s.CapEff = p.hex64("CapEff", v)
		case "CapBnd":
			s.CapBnd = p.hex64("CapBnd", v)
		case "CapAmb":
			s.CapAmb = p.hex64("CapAmb", v)
		case "NoNewPrivs":
			s.NoNewPrivs = p.bool("NoNewPrivs", v)
		case "Seccomp":
			s.Seccomp = p.int("Seccomp", v)
		case "Seccomp_filters":
			s.SeccompFilters = p.int("Seccomp_filters", v)
		case "Threads":
			s.Threads = p.int("Threads", v)
		}
		if p.err != nil {
			return Status{}, parseErr("status", n, line, p.err)
		}
	}
	return s, nil
}

func (p *numParser) bool(what string, v []byte) bool {
	switch string(v) {
	case "0":
		return false
	case "1":
		return true
	}
	p.fail(what, v)
	return false
}

// ints parses a blank-separated list of decimals.
func (p *numParser) ints(what string, v []byte) []int {
	var out []int
	for f, rest := nextField(v); len(f) > 0; f, rest = nextField(rest) {
		out = append(out, p.int(what, f))
	}
	return out
}

// ids4 parses the four ids of a Uid or Gid line.
func (p *numParser) ids4(what string, v []byte) [4]int {
	var a [4]int
	ids := p.ints(what, v)
	if len(ids) != 4 {
		if p.err == nil {
			p.err = fmt.Errorf("%s has %d ids, want 4", what, len(ids))
		}
		return a
	}
	copy(a[:], ids)
	return a
}

// unescapeName undoes the escaping of the Name line: "\n" for a newline and
// "\\" for a backslash; the other sequences of string_escape_mem are undone
// too, should the kernel ever widen the set.
func unescapeName(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 == len(b) {
			out = append(out, c)
			continue
		}
		i++
		switch b[i] {
		case 'n':
			c = '\n'
		case 't':
			c = '\t'
		case 'r':
			c = '\r'
		case 'v':
			c = '\v'
		case 'f':
			c = '\f'
		case 'a':
			c = '\a'
		case 'e':
			c = 0x1b
		case '\\', '"':
			c = b[i]
		default:
			out = append(out, '\\')
			c = b[i]
		}
		out = append(out, c)
	}
	return string(out)
}
