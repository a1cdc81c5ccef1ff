package ptrace

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// The architecture layer of this package is Regs (regs_amd64.go,
// regs_arm64.go): a thread's general-purpose registers with the accessors
// the engine needs (PC, SP, the syscall return register), the syscall
// calling convention used by injection, the syscall-restart rules applied
// to a frozen thread (ForResume), and the machine code of SyscallInsn. No
// other file of relocate reads a register by name.

// marshalPrstatus encodes r as the kernel's NT_PRSTATUS regset (struct
// user_regs_struct on amd64, struct user_pt_regs on arm64: unsigned 64-bit
// words, no padding).
func marshalPrstatus(r *unix.PtraceRegs) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, r) // a fixed-size struct into memory cannot fail
	return b.Bytes()
}

// unmarshalPrstatus decodes an NT_PRSTATUS regset of exactly the size of
// this architecture's.
func unmarshalPrstatus(b []byte) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	if len(b) != binary.Size(r) {
		return r, fmt.Errorf("general registers of %d bytes, want %d", len(b), binary.Size(r))
	}
	err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &r)
	return r, err
}

// PrstatusSize is the size of this architecture's NT_PRSTATUS regset.
var PrstatusSize = binary.Size(unix.PtraceRegs{})
