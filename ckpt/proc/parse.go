package proc

import (
	"bytes"
	"fmt"
	"iter"
	"strconv"
)

// lines yields the lines of b without their "\n", numbered from 1. A last
// line without "\n" is yielded too; a final "\n" does not start another.
func lines(b []byte) iter.Seq2[int, []byte] {
	return func(yield func(int, []byte) bool) {
		for n := 1; len(b) > 0; n++ {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			if !yield(n, line) {
				return
			}
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// nextField skips blanks and returns the run of non-blank bytes that follows
// and what remains after it.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

// parseUint parses digits of the given base (8, 10 or 16, no prefix, no
// sign) into a value that fits in bits bits.
func parseUint(b []byte, base uint64, bits uint) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	maxv := ^uint64(0) >> (64 - bits)
	var n uint64
	for _, c := range b {
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base || n > (maxv-d)/base {
			return 0, false
		}
		n = n*base + d
	}
	return n, true
}

// parseInt parses an optionally negative decimal that fits in bits bits.
func parseInt(b []byte, bits uint) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	u, ok := parseUint(b, 10, 64)
	limit := uint64(1) << (bits - 1) // magnitude of the most negative value
	if !ok || u > limit || !neg && u == limit {
		return 0, false
	}
	if neg {
		return -int64(u), true // int64(1<<63) wraps to its own negation
	}
	return int64(u), true
}

// quote renders a value for an error message, cut short when long.
func quote(b []byte) string {
	const max = 40
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// numParser accumulates the first failure of a series of conversions so that
// callers can convert a row of fields and check once.
type numParser struct{ err error }

func (p *numParser) fail(what string, v []byte) {
	if p.err == nil {
		p.err = fmt.Errorf("bad %s %s", what, quote(v))
	}
}

func (p *numParser) uint(what string, v []byte, base uint64, bits uint) uint64 {
	n, ok := parseUint(v, base, bits)
	if !ok {
		p.fail(what, v)
	}
	return n
}

func (p *numParser) u64(what string, v []byte) uint64 { return p.uint(what, v, 10, 64) }
func (p *numParser) hex64(what string, v []byte) uint64 {
	return p.uint(what, v, 16, 64)
}
func (p *numParser) hex32(what string, v []byte) uint32 {
	return uint32(p.uint(what, v, 16, 32))
}

func (p *numParser) int64(what string, v []byte) int64 {
	n, ok := parseInt(v, 64)
	if !ok {
		p.fail(what, v)
	}
	return n
}

func (p *numParser) int(what string, v []byte) int {
	n, ok := parseInt(v, strconv.IntSize)
	if !ok {
		p.fail(what, v)
	}
	return int(n)
}
