package proc

// Interim minimal parsers so the engine can be integrated; replaced by the
// full, fuzzed implementation.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

type FS struct{ Root string }

func Default() FS { return FS{Root: "/proc"} }

func (fs FS) Read(pid int, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(fs.Root, strconv.Itoa(pid), name))
}
func (fs FS) ReadTask(pid, tid int, name string) ([]byte, error) {
	return fs.Read(pid, filepath.Join("task", strconv.Itoa(tid), name))
}
func (fs FS) Readlink(pid int, name string) (string, error) {
	return os.Readlink(filepath.Join(fs.Root, strconv.Itoa(pid), name))
}
func (fs FS) dirInts(path string) ([]int, error) {
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}
func (fs FS) Tasks(pid int) ([]int, error) {
	return fs.dirInts(filepath.Join(fs.Root, strconv.Itoa(pid), "task"))
}
func (fs FS) FDs(pid int) ([]int, error) {
	return fs.dirInts(filepath.Join(fs.Root, strconv.Itoa(pid), "fd"))
}
func (fs FS) Children(pid int) ([]int, error) {
	tids, err := fs.Tasks(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, t := range tids {
		b, err := fs.ReadTask(pid, t, "children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

type Mapping struct {
	Start, End                uint64
	Read, Write, Exec, Shared bool
	Offset                    uint64
	Major, Minor              uint32
	Inode                     uint64
	Path                      string
	Deleted                   bool
	VmFlags                   []string
	Rss, Anonymous, Swap      uint64
}

func (m Mapping) Size() uint64 { return m.End - m.Start }

func parseMapLine(line string) (Mapping, error) {
	var m Mapping
	// 5 fields then path (may contain spaces).
	rest := line
	var f [5]string
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			if i == 4 {
				f[i], rest = rest, ""
				break
			}
			return m, fmt.Errorf("short maps line %q", line)
		}
		f[i], rest = rest[:j], rest[j+1:]
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return m, fmt.Errorf("bad range in %q", line)
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, err
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, err
	}
	if len(f[1]) != 4 {
		return m, fmt.Errorf("bad perms in %q", line)
	}
	m.Read, m.Write, m.Exec, m.Shared = f[1][0] == 'r', f[1][1] == 'w', f[1][2] == 'x', f[1][3] == 's'
	if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return m, err
	}
	if ma, mi, ok := strings.Cut(f[3], ":"); ok {
		a, _ := strconv.ParseUint(ma, 16, 32)
		b, _ := strconv.ParseUint(mi, 16, 32)
		m.Major, m.Minor = uint32(a), uint32(b)
	}
	if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return m, err
	}
	m.Path = strings.TrimLeft(rest, " ")
	if strings.HasSuffix(m.Path, " (deleted)") && m.Inode != 0 {
		m.Path, m.Deleted = strings.TrimSuffix(m.Path, " (deleted)"), true
	}
	return m, nil
}

func ParseMaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		m, err := parseMapLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func ParseSmaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		k, v, ok := strings.Cut(line, ":")
		if ok && !strings.Contains(k, " ") && !strings.Contains(k, "-") {
			if len(out) == 0 {
				return nil, fmt.Errorf("smaps: %q before any mapping", line)
			}
			m := &out[len(out)-1]
			switch k {
			case "VmFlags":
				m.VmFlags = strings.Fields(v)
			case "Rss", "Anonymous", "Swap":
				n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				n *= 1024
				switch k {
				case "Rss":
					m.Rss = n
				case "Anonymous":
					m.Anonymous = n
				default:
					m.Swap = n
				}
			}
			continue
		}
		m, err := parseMapLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

type Stat struct {
	PID                                                              int
	Comm                                                             string
	State                                                            byte
	PPID, PGRP, Session, TTYNr                                       int
	Flags                                                            uint64
	NumThreads                                                       int
	StartTime                                                        uint64
	StartCode, EndCode, StartStack                                   uint64
	StartData, EndData, StartBrk, ArgStart, ArgEnd, EnvStart, EnvEnd uint64
	ExitCode                                                         int
}

func ParseStat(b []byte) (Stat, error) {
	var s Stat
	str := strings.TrimRight(string(b), "\n")
	i, j := strings.IndexByte(str, '('), strings.LastIndexByte(str, ')')
	if i < 0 || j < i {
		return s, errors.New("stat: no comm")
	}
	s.PID, _ = strconv.Atoi(strings.TrimSpace(str[:i]))
	s.Comm = str[i+1 : j]
	f := strings.Fields(str[j+1:])
	if len(f) < 50 {
		return s, fmt.Errorf("stat: %d fields", len(f)+2)
	}
	u := func(n int) uint64 { v, _ := strconv.ParseUint(f[n-3], 10, 64); return v }
	in := func(n int) int { v, _ := strconv.Atoi(f[n-3]); return v }
	s.State = f[0][0]
	s.PPID, s.PGRP, s.Session, s.TTYNr = in(4), in(5), in(6), in(7)
	s.Flags = u(9)
	s.NumThreads = in(20)
	s.StartTime = u(22)
	s.StartCode, s.EndCode, s.StartStack = u(26), u(27), u(28)
	s.StartData, s.EndData, s.StartBrk = u(45), u(46), u(47)
	s.ArgStart, s.ArgEnd, s.EnvStart, s.EnvEnd = u(48), u(49), u(50), u(51)
	s.ExitCode = in(52)
	return s, nil
}

type Status struct {
	Name                                   string
	Umask                                  uint32
	State                                  byte
	Tgid, PID, PPID, TracerPID             int
	UID, GID                               [4]int
	Groups                                 []int
	NStgid, NSpid                          []int
	SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt uint64
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             bool
	Seccomp, SeccompFilters, Threads       int
	Fields                                 map[string]string
}

func ints(v string) []int {
	var out []int
	for _, f := range strings.Fields(v) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

func ParseStatus(b []byte) (Status, error) {
	s := Status{Fields: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		s.Fields[k] = v
		hex := func() uint64 { n, _ := strconv.ParseUint(v, 16, 64); return n }
		switch k {
		case "Name":
			s.Name = v
		case "Umask":
			n, _ := strconv.ParseUint(v, 8, 32)
			s.Umask = uint32(n)
		case "State":
			if v != "" {
				s.State = v[0]
			}
		case "Tgid":
			s.Tgid, _ = strconv.Atoi(v)
		case "Pid":
			s.PID, _ = strconv.Atoi(v)
		case "PPid":
			s.PPID, _ = strconv.Atoi(v)
		case "TracerPid":
			s.TracerPID, _ = strconv.Atoi(v)
		case "Uid", "Gid":
			var a [4]int
			copy(a[:], ints(v))
			if k == "Uid" {
				s.UID = a
			} else {
				s.GID = a
			}
		case "Groups":
			s.Groups = ints(v)
		case "NStgid":
			s.NStgid = ints(v)
		case "NSpid":
			s.NSpid = ints(v)
		case "SigPnd":
			s.SigPnd = hex()
		case "ShdPnd":
			s.ShdPnd = hex()
		case "SigBlk":
			s.SigBlk = hex()
		case "SigIgn":
			s.SigIgn = hex()
		case "SigCgt":
			s.SigCgt = hex()
		case "CapInh":
			s.CapInh = hex()
		case "CapPrm":
			s.CapPrm = hex()
		case "CapEff":
			s.CapEff = hex()
		case "CapBnd":
			s.CapBnd = hex()
		case "CapAmb":
			s.CapAmb = hex()
		case "NoNewPrivs":
			s.NoNewPrivs = v == "1"
		case "Seccomp":
			s.Seccomp, _ = strconv.Atoi(v)
		case "Seccomp_filters":
			s.SeccompFilters, _ = strconv.Atoi(v)
		case "Threads":
			s.Threads, _ = strconv.Atoi(v)
		}
	}
	return s, nil
}

type FDInfo struct {
	Pos    int64
	Flags  uint32
	MntID  int
	Ino    uint64
	Fields map[string]string
	Lines  []string
}

func ParseFDInfo(b []byte) (FDInfo, error) {
	fi := FDInfo{Fields: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			fi.Pos, _ = strconv.ParseInt(v, 10, 64)
		case "flags":
			n, _ := strconv.ParseUint(v, 8, 32)
			fi.Flags = uint32(n)
		case "mnt_id":
			fi.MntID, _ = strconv.Atoi(v)
		case "ino":
			fi.Ino, _ = strconv.ParseUint(v, 10, 64)
		default:
			fi.Fields[k] = v
			fi.Lines = append(fi.Lines, line)
		}
	}
	return fi, nil
}

type Timer struct {
	ID         int
	Signal     int
	SigevValue uint64
	Notify     string
	NotifyTID  int
	ClockID    int
}

func ParseTimers(b []byte) ([]Timer, error) {
	var out []Timer
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if k == "ID" {
			id, _ := strconv.Atoi(v)
			out = append(out, Timer{ID: id})
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("timers: %q before ID", line)
		}
		t := &out[len(out)-1]
		switch k {
		case "signal":
			s, val, _ := strings.Cut(v, "/")
			t.Signal, _ = strconv.Atoi(s)
			t.SigevValue, _ = strconv.ParseUint(val, 16, 64)
		case "notify":
			how, who, _ := strings.Cut(v, "/")
			t.Notify = how
			if _, n, ok := strings.Cut(who, "."); ok {
				t.NotifyTID, _ = strconv.Atoi(n)
			}
		case "ClockID":
			t.ClockID, _ = strconv.Atoi(v)
		}
	}
	return out, nil
}

type AuxEntry struct{ Type, Value uint64 }

func ParseAuxv(b []byte) ([]AuxEntry, error) {
	if len(b)%16 != 0 {
		return nil, errors.New("auxv: odd length")
	}
	var out []AuxEntry
	for i := 0; i+16 <= len(b); i += 16 {
		t := binary.LittleEndian.Uint64(b[i:])
		if t == 0 {
			break
		}
		out = append(out, AuxEntry{t, binary.LittleEndian.Uint64(b[i+8:])})
	}
	return out, nil
}
