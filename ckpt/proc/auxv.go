package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// AuxEntry is one entry of the ELF auxiliary vector.
type AuxEntry struct{ Type, Value uint64 }

// ParseAuxv parses /proc/PID/auxv: pairs of little-endian 64-bit words
// ending with an AT_NULL pair, after which nothing is read. Empty input (a
// kernel thread or a zombie) gives no entries; a length that is not a
// multiple of 16, or a vector without AT_NULL, is an error.
func ParseAuxv(b []byte) ([]AuxEntry, error) {
	const pair = 16
	if len(b)%pair != 0 {
		return nil, parseErr("auxv", 0, nil, fmt.Errorf("%d bytes is not a whole number of %d-byte entries", len(b), pair))
	}
	if len(b) == 0 {
		return nil, nil
	}
	var out []AuxEntry
	for i := 0; i+pair <= len(b); i += pair {
		t := binary.LittleEndian.Uint64(b[i:])
		if t == 0 { // AT_NULL
			return out, nil
		}
		out = append(out, AuxEntry{Type: t, Value: binary.LittleEndian.Uint64(b[i+8:])})
	}
	return nil, parseErr("auxv", 0, nil, errors.New("no AT_NULL entry"))
}
