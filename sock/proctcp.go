package sock

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
)

// tcpEntry is one line of /proc/net/tcp or tcp6.
type tcpEntry struct {
	local, remote netip.AddrPort
	state         uint8
	inode         uint64
}

// parseProcTCP reads the lines of /proc/net/tcp or /proc/net/tcp6. An
// address is hex: each 32-bit word of it as the kernel holds it in memory
// (network order) printed as a host-order (little-endian) number.
func parseProcTCP(b []byte) ([]tcpEntry, error) {
	var out []tcpEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for line := 0; sc.Scan(); line++ {
		f := bytes.Fields(sc.Bytes())
		if line == 0 || len(f) == 0 {
			continue // the header
		}
		if len(f) < 10 {
			return nil, fmt.Errorf("/proc/net/tcp line %d: %d fields", line+1, len(f))
		}
		local, err1 := parseProcAddr(f[1])
		remote, err2 := parseProcAddr(f[2])
		state, err3 := strconv.ParseUint(string(f[3]), 16, 8)
		inode, err4 := strconv.ParseUint(string(f[9]), 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("/proc/net/tcp line %d: %w", line+1, err)
		}
		out = append(out, tcpEntry{local: local, remote: remote, state: uint8(state), inode: inode})
	}
	return out, sc.Err()
}

func parseProcAddr(b []byte) (netip.AddrPort, error) {
	ip, port, ok := bytes.Cut(b, []byte(":"))
	if !ok || (len(ip) != 8 && len(ip) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q", b)
	}
	raw := make([]byte, len(ip)/2)
	if _, err := hex.Decode(raw, ip); err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", b, err)
	}
	for i := 0; i < len(raw); i += 4 { // each word back to memory order
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	p, err := strconv.ParseUint(string(port), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", port, err)
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// tcpPeerByInode finds the remote address of the TCP socket with inode
// ino in relocate's network namespace (the process's: dump refuses
// another), for a socket that getpeername does not answer for (SYN_SENT).
func tcpPeerByInode(ino uint64) (netip.AddrPort, error) {
	for _, name := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		entries, err := parseProcTCP(b)
		if err != nil {
			return netip.AddrPort{}, err
		}
		for _, e := range entries {
			if e.inode == ino {
				return e.remote, nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("socket inode %d is not in /proc/net/tcp", ino)
}
