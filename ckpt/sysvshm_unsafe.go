package ckpt

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore reports which pages of b (page-aligned, a whole number of
// pages) are in memory: bit 0 of vec[i] for page i. x/sys has no
// wrapper on Linux.
func mincore(b, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
