// Package transfer owns everything between two hosts: the SSH client, the
// self-upload of the binary, the control protocol and stream plumbing.
// It may import ckpt; it must never import cmd.
//
// Nothing is implemented yet (see the live-migration issue).
package transfer
