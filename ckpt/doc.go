// Package ckpt is the checkpoint/restore engine: it freezes a process,
// writes its state as an image stream (package image) and rebuilds a process
// from such a stream by driving a stopped stub with injected syscalls.
//
// ckpt never prints and never exits; it must never import cmd or transfer.
package ckpt
