package ckpt

import (
	"encoding/binary"
)

// proxyFill fills the vDSO proxy between its jumps: int3.
const proxyFill = 0xcc

// vdsoJumpLen is the size of vdsoJump's code.
const vdsoJumpLen = 13

// vdsoJump is `movabs $to, %r11; jmp *%r11` (r11 is a scratch register
// at a function's entry; syscall clobbers it anyway).
func vdsoJump(to uint64) []byte {
	b := []byte{0x49, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0xff, 0xe3}
	binary.LittleEndian.PutUint64(b[2:], to)
	return b
}
