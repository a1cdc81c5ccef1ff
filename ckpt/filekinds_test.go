package ckpt

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/sock"
)

func TestFileKindsRegistry(t *testing.T) {
	for kind, k := range fileKinds {
		if _, ok := k.(unknownKind); ok {
			t.Errorf("kind %q is registered with the refusing driver", kind)
		}
	}
	// Every kind a dump can produce can be restored.
	for _, k := range dumpOrder {
		found := false
		for _, r := range fileKinds {
			found = found || r == k
		}
		if !found {
			t.Errorf("%T dumps a kind no driver restores", k)
		}
	}
	f := &File{Kind: "hologram"}
	if _, err := kindOf(f).open(nil, f); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown kind: open = %v, want ErrUnsupported", err)
	}
}

func TestDescribeAndAddresses(t *testing.T) {
	cp := &Checkpoint{Files: []File{
		{Kind: FileRegular, Path: "/var/log/x"},
		{Kind: FilePipe, Pipe: 42},
		{Kind: FileTCP, TCP: &sock.TCPConn{Local: "10.0.0.1:80", Peer: "10.0.0.2:5000"}},
		{Kind: FileSocket, Socket: &sock.State{Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, Addr: "10.0.0.1:80", Listening: true}},
		{Kind: FileSocket, Socket: &sock.State{Family: unix.AF_UNIX, Type: unix.SOCK_STREAM, Addr: "/run/x.sock", Listening: true}},
		{Kind: FileTCP}, // corrupt: no state
		{Kind: FileEventfd},
		{Kind: FileMQueue, MQueue: &MQueue{Name: "/jobs", MaxMsg: 10, MsgSize: 64, Msgs: []MQMsg{{Prio: 1}}}},
		{Kind: FileMQueue, MQueue: &MQueue{Name: "/tmp q", Unlinked: true, MaxMsg: 4, MsgSize: 32}},
		{Kind: FileMQueue}, // corrupt: no state
	}}
	want := []string{"/var/log/x", "pipe:[42]", "tcp 10.0.0.1:80 -> 10.0.0.2:5000", "tcp listening on 10.0.0.1:80",
		"unix listening on /run/x.sock", "tcp", "eventfd",
		"POSIX message queue /jobs (1 message queued, room for 10 of 64 bytes)",
		"POSIX message queue /tmp q (deleted) (room for 4 messages of 32 bytes)", "mqueue"}
	for i, w := range want {
		if got := cp.Files[i].Describe(); got != w {
			t.Errorf("file %d: Describe = %q, want %q", i, got, w)
		}
	}
	if got := cp.Addresses(); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Errorf("Addresses = %q, want one 10.0.0.1:80", got)
	}
}
