package proc

import (
	"bytes"
	"errors"
	"slices"
)

// Mapping is one line of /proc/PID/maps, or one entry of /proc/PID/smaps.
type Mapping struct {
	Start, End                uint64
	Read, Write, Exec, Shared bool // perms "rwxp", "r--s"
	Offset                    uint64
	Major, Minor              uint32
	Inode                     uint64

	// Path is the name exactly as maps prints it, minus a trailing
	// " (deleted)": a file path (spaces kept; a newline in a file name is
	// printed as "\012"), "" for anonymous memory, or a pseudo name kept
	// as is: "[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]",
	// "[vsyscall]", "[anon:name]", "/memfd:name", "/dev/zero", "/SYSV...".
	Path string
	// Deleted says maps appended " (deleted)" to Path: the file is unlinked.
	// maps prints a live file named "x (deleted)" the same way; callers who
	// must know stat /proc/PID/map_files/START-END.
	Deleted bool

	// From smaps only.
	VmFlags              []string // mnemonics: "rd", "wr", "gd", "dd", "hg", "nh", ...
	Rss, Anonymous, Swap uint64   // bytes
}

// Size is the length of the mapping in bytes.
func (m Mapping) Size() uint64 {
	if m.End < m.Start {
		return 0
	}
	return m.End - m.Start
}

// HasFlag reports whether smaps listed f among the mapping's VmFlags.
func (m Mapping) HasFlag(f string) bool { return slices.Contains(m.VmFlags, f) }

const deletedSuffix = " (deleted)"

// ParseMaps parses /proc/PID/maps. Blank lines are ignored.
func ParseMaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	for n, line := range lines(b) {
		if len(line) == 0 {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, parseErr("maps", n, line, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// ParseSmaps parses /proc/PID/smaps (or smaps of a task): each maps line is
// followed by "Key: value" lines, of which Rss, Anonymous, Swap (in kB) and
// VmFlags are kept. Unknown keys are skipped. Blank lines are ignored.
func ParseSmaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	for n, line := range lines(b) {
		if len(line) == 0 {
			continue
		}
		if isMapsHeader(line) {
			m, err := parseMapsLine(line)
			if err != nil {
				return nil, parseErr("smaps", n, line, err)
			}
			out = append(out, m)
			continue
		}
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(key) == 0 || bytes.ContainsAny(key, " \t") {
			return nil, parseErr("smaps", n, line, errors.New("neither a mapping nor a Key: value line"))
		}
		if len(out) == 0 {
			return nil, parseErr("smaps", n, line, errors.New("field before the first mapping"))
		}
		m := &out[len(out)-1]
		var err error
		switch string(key) {
		case "VmFlags":
			m.VmFlags = parseVmFlags(val)
		case "Rss":
			m.Rss, err = parseKB(val)
		case "Anonymous":
			m.Anonymous, err = parseKB(val)
		case "Swap":
			m.Swap, err = parseKB(val)
		}
		if err != nil {
			return nil, parseErr("smaps", n, line, err)
		}
	}
	return out, nil
}

// isMapsHeader reports whether line starts with "hex-hex ", an address
// range, rather than a "Key:" of smaps.
func isMapsHeader(line []byte) bool {
	tok := line
	if i := bytes.IndexByte(tok, ' '); i >= 0 {
		tok = tok[:i]
	}
	lo, hi, ok := bytes.Cut(tok, []byte("-"))
	return ok && isHex(lo) && isHex(hi)
}

func isHex(b []byte) bool {
	_, ok := parseUint(b, 16, 64)
	return ok
}

// cutSpace splits b at its first space.
func cutSpace(b []byte) (before, after []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// parseMapsLine parses
//
//	start-end perms offset major:minor inode [padding path]
//
// with single spaces between the first five fields, as show_map_vma prints
// them. Everything after the blanks that follow the inode is the path.
func parseMapsLine(line []byte) (Mapping, error) {
	var m Mapping
	var p numParser
	addr, rest := cutSpace(line)
	perms, rest := cutSpace(rest)
	off, rest := cutSpace(rest)
	dev, rest := cutSpace(rest)
	ino, rest := cutSpace(rest)

	lo, hi, ok := bytes.Cut(addr, []byte("-"))
	if !ok {
		return m, errors.New("bad address range " + quote(addr))
	}
	m.Start = p.hex64("start address", lo)
	m.End = p.hex64("end address", hi)
	if p.err != nil {
		return m, p.err
	}
	if m.Start > m.End {
		return m, errors.New("start address after end address")
	}
	if len(perms) != 4 ||
		perms[0] != 'r' && perms[0] != '-' ||
		perms[1] != 'w' && perms[1] != '-' ||
		perms[2] != 'x' && perms[2] != '-' ||
		perms[3] != 's' && perms[3] != 'p' {
		return m, errors.New("bad permissions " + quote(perms))
	}
	m.Read, m.Write, m.Exec, m.Shared = perms[0] == 'r', perms[1] == 'w', perms[2] == 'x', perms[3] == 's'
	m.Offset = p.hex64("offset", off)
	maj, min, ok := bytes.Cut(dev, []byte(":"))
	if !ok {
		p.fail("device", dev)
	}
	m.Major = p.hex32("device major", maj)
	m.Minor = p.hex32("device minor", min)
	m.Inode = p.u64("inode", ino)
	if p.err != nil {
		return m, p.err
	}
	path := bytes.TrimLeft(rest, " ")
	if bytes.HasSuffix(path, []byte(deletedSuffix)) {
		path, m.Deleted = path[:len(path)-len(deletedSuffix)], true
	}
	m.Path = string(path)
	return m, nil
}

// parseKB parses an smaps size, "  12 kB", into bytes.
func parseKB(v []byte) (uint64, error) {
	num, rest := nextField(v)
	unit, rest := nextField(rest)
	n, ok := parseUint(num, 10, 64)
	if !ok || string(unit) != "kB" || len(trimSpace(rest)) != 0 {
		return 0, errors.New("bad size " + quote(trimSpace(v)) + ", want N kB")
	}
	if n > ^uint64(0)/1024 {
		return 0, errors.New("size overflows")
	}
	return n * 1024, nil
}

// vmFlagNames interns the mnemonics of show_smap_vma_flags
// (fs/proc/task_mmu.c) so that each mapping does not allocate them anew.
var vmFlagNames = func() map[string]string {
	m := map[string]string{}
	for _, f := range []string{
		"rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "lo", "io",
		"sr", "rr", "dc", "de", "ac", "nr", "ht", "sf", "nl", "ar", "wf", "dd",
		"um", "uw", "ss", "sl", "mg", "hg", "nh", "bt", "mt", "gu", "lf", "pk",
	} {
		m[f] = f
	}
	return m
}()

func parseVmFlags(v []byte) []string {
	var out []string
	for f, rest := nextField(v); len(f) > 0; f, rest = nextField(rest) {
		s, ok := vmFlagNames[string(f)]
		if !ok {
			s = string(f)
		}
		out = append(out, s)
	}
	return out
}
