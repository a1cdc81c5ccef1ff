package transfer

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// receivePipeSize is the pipe buffer asked for on the target's stdin: sshd
// writes the decrypted stream into that pipe, and with the default 64 KiB
// it and the restore take turns at every few packets.
const receivePipeSize = 1 << 20

// growPipe enlarges the pipe buffer of r when r is a pipe; best effort (an
// unprivileged user is capped by /proc/sys/fs/pipe-max-size).
func growPipe(r io.Reader) {
	f, ok := r.(*os.File)
	if !ok {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, receivePipeSize)
}
