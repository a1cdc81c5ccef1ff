package proc

import (
	"errors"
	"strings"
)

// RLimInfinity is RLIM_INFINITY, printed "unlimited".
const RLimInfinity = ^uint64(0)

// Limit is one line of /proc/PID/limits.
type Limit struct {
	Name       string // "Max open files"
	Soft, Hard uint64 // RLimInfinity for "unlimited"
	Units      string // "files", "bytes", "us", ...; "" for the priorities
}

// ParseLimits parses /proc/PID/limits, for information: the engine reads
// limits with prlimit(2). The header line is skipped.
func ParseLimits(b []byte) ([]Limit, error) {
	var out []Limit
	for n, line := range lines(b) {
		if len(trimSpace(line)) == 0 || n == 1 && strings.HasPrefix(string(line), "Limit ") {
			continue
		}
		l, err := parseLimit(line)
		if err != nil {
			return nil, parseErr("limits", n, line, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// parseLimit splits "Max open files  1024  4096  files": the name is all
// that comes before the first number or "unlimited" (names have no digits).
func parseLimit(line []byte) (Limit, error) {
	var l Limit
	rest := line
	for {
		tok, after := nextField(rest)
		if len(tok) == 0 {
			return l, errors.New("no soft limit")
		}
		if isLimitValue(tok) {
			l.Name = string(trimSpace(line[:len(line)-len(rest)]))
			break
		}
		rest = after
	}
	if l.Name == "" {
		return l, errors.New("no name")
	}
	var p numParser
	soft, rest := nextField(rest)
	hard, rest := nextField(rest)
	units, rest := nextField(rest)
	if len(trimSpace(rest)) != 0 {
		return l, errors.New("trailing words")
	}
	l.Soft = p.limit("soft limit", soft)
	l.Hard = p.limit("hard limit", hard)
	l.Units = string(units)
	return l, p.err
}

func isLimitValue(tok []byte) bool {
	_, ok := parseUint(tok, 10, 64)
	return ok || string(tok) == "unlimited"
}

func (p *numParser) limit(what string, v []byte) uint64 {
	if string(v) == "unlimited" {
		return RLimInfinity
	}
	return p.u64(what, v)
}
