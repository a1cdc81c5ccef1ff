package ckpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// validRegSets is what a dump on this architecture produces at the least.
func validRegSets() []RegSet {
	var r ptrace.Regs
	sets := []RegSet{{Note: unix.NT_PRSTATUS, Data: r.Marshal()}}
	for _, k := range archRegSets {
		if k.Note != unix.NT_PRSTATUS && !k.Optional {
			sets = append(sets, RegSet{Note: k.Note, Data: make([]byte, k.Min)})
		}
	}
	return sets
}

// TestCheckRegSets: the register sets of an image are untrusted; only
// this architecture's note types, once each, within their sizes, pass.
func TestCheckRegSets(t *testing.T) {
	if err := checkRegSets(7, validRegSets()); err != nil {
		t.Fatalf("a dump's own register sets: %v", err)
	}
	long := validRegSets()
	long[0].Data = append(long[0].Data, 0, 0, 0, 0)
	for _, c := range []struct {
		name string
		sets []RegSet
		want string
	}{
		{"none", nil, "no general registers"},
		{"other architecture", append(validRegSets(), RegSet{Note: otherArchNote, Data: make([]byte, 8)}), "is not one of " + archName},
		{"twice", append(validRegSets(), validRegSets()[0]), "appears twice"},
		{"too long", long, fmt.Sprintf("of %d bytes", ptrace.PrstatusSize+4)},
		{"too short", []RegSet{{Note: unix.NT_PRSTATUS, Data: make([]byte, 8)}}, "of 8 bytes"},
	} {
		err := checkRegSets(7, c.sets)
		if err == nil || !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "thread 7") {
			t.Errorf("%s: %v, want %q (corrupt)", c.name, err, c.want)
		}
	}
}

// TestEpollEventLayout: the encoded struct epoll_event has the size of
// this architecture's (x/sys's EpollEvent) and puts data where the kernel
// reads it.
func TestEpollEventLayout(t *testing.T) {
	ev := epollEvent(0x11, 0x0102030405060708)
	if len(ev) != binary.Size(unix.EpollEvent{}) {
		t.Fatalf("epoll_event of %d bytes, this architecture's has %d", len(ev), binary.Size(unix.EpollEvent{}))
	}
	if binary.LittleEndian.Uint32(ev) != 0x11 || binary.LittleEndian.Uint64(ev[len(ev)-8:]) != 0x0102030405060708 {
		t.Fatalf("epoll_event % x", ev)
	}
}

// TestCheckHeaderArch: an image of another architecture, or of none, is
// refused in one line.
func TestCheckHeaderArch(t *testing.T) {
	for _, arch := range []string{"", otherArch} {
		err := checkHeader(image.Header{Arch: arch, PageSize: 4096})
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("arch %q: %v", arch, err)
		}
	}
	if err := checkHeader(image.Header{Arch: otherArch}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "image is for "+otherArch+", this machine is "+archName) {
		t.Errorf("other architecture: %v", err)
	}
	s := Survey{Arch: otherArch}
	if p, _ := s.Check(false); len(p) != 1 || p[0] != "the process is "+otherArch+", this machine is "+archName {
		t.Errorf("survey of another architecture: %q", p)
	}
}
