// Package ckpt is the checkpoint/restore engine: it freezes a process,
// writes its state as an image stream (package image) and rebuilds a process
// from such a stream by driving a stopped stub with injected syscalls.
//
// It runs on amd64 and arm64: what differs lives in *_amd64.go and
// *_arm64.go files (the list is in regsets.go) and in ptrace.Regs.
//
// ckpt never prints and never exits; it must never import cmd or transfer.
package ckpt
