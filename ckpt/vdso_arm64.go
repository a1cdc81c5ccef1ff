package ckpt

import (
	"encoding/binary"
)

// proxyFill fills the vDSO proxy between its jumps: the first byte of each
// word of zeros is an undefined instruction (udf #0) on arm64.
const proxyFill = 0x00

// vdsoJumpLen is the size of vdsoJump's code.
const vdsoJumpLen = 16

// vdsoJump is `ldr x16, 8; br x16; .quad to` (x16 is the intra-procedure
// scratch register).
func vdsoJump(to uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, 0x58000050)
	binary.LittleEndian.PutUint32(b[4:], 0xd61f0200)
	binary.LittleEndian.PutUint64(b[8:], to)
	return b
}
