package ckpt

import (
	"encoding/binary"
	"testing"
)

func TestCgroupRel(t *testing.T) {
	for _, ok := range []string{"/", "/a", "/system.slice/x.service"} {
		if _, err := cgroupRel(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a", "/..", "/a/../b", "/a/", "//a", "/a/./b", "/a/cgroup.procs", "/a/cgroup.subtree_control/x"} {
		if _, err := cgroupRel(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestUsesUserNotif(t *testing.T) {
	insn := func(code uint16, k uint32) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint16(b, code)
		binary.LittleEndian.PutUint32(b[4:], k)
		return b
	}
	allow := insn(bpfRetK, 0x7fff0000)
	notif := insn(bpfRetK, seccompRetUserNotif)
	errno := insn(bpfRetK, 0x00050001)
	if usesUserNotif(append(allow, errno...)) {
		t.Error("allow/errno filter taken for user notification")
	}
	if !usesUserNotif(append(allow, notif...)) {
		t.Error("user notification filter not found")
	}
}

func TestCapUser(t *testing.T) {
	b := capUser(1<<40|1, 1<<33|2, 4)
	le := binary.LittleEndian
	if le.Uint32(b) != linuxCapV3 || le.Uint32(b[8:]) != 1 || le.Uint32(b[12:]) != 2 || le.Uint32(b[16:]) != 4 ||
		le.Uint32(b[20:]) != 1<<8 || le.Uint32(b[24:]) != 1<<1 || le.Uint32(b[28:]) != 0 {
		t.Fatalf("capset data %x", b)
	}
}
