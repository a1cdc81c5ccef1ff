package ckpt

import "golang.org/x/sys/unix"

const otherArch = "amd64"

const otherArchNote = unix.NT_X86_XSTATE
