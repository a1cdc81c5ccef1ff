package ckpt

import (
	"bytes"
	"encoding/json"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/ptrace"
)

const otherArch = "arm64"

const otherArchNote = unix.NT_ARM_TLS

// TestUpgradeLegacyRegs reads a thread as format 1 wrote it (Go's
// user_regs_struct field names under "regs") into the same registers.
func TestUpgradeLegacyRegs(t *testing.T) {
	const v1 = `{"tid":42,"regs":{"R15":1,"R14":2,"R13":3,"R12":4,"Rbp":5,"Rbx":6,"R11":7,"R10":8,"R9":9,"R8":10,
		"Rax":11,"Rcx":12,"Rdx":13,"Rsi":14,"Rdi":15,"Orig_rax":18446744073709551615,"Rip":4198400,"Cs":51,
		"Eflags":514,"Rsp":140737488347136,"Ss":43,"Fs_base":139637976727360,"Gs_base":0,"Ds":0,"Es":0,"Fs":0,"Gs":0},
		"xstate":"AQID"}`
	var th Thread
	if err := json.Unmarshal([]byte(v1), &th); err != nil {
		t.Fatal(err)
	}
	if err := upgradeLegacyRegs(&th); err != nil {
		t.Fatal(err)
	}
	if err := checkRegSets(42, th.RegSets); err == nil {
		t.Error("a 3-byte XSAVE area passed the size check")
	}
	regs, err := ptrace.UnmarshalRegs(findRegSet(th.RegSets, unix.NT_PRSTATUS))
	if err != nil {
		t.Fatal(err)
	}
	if regs.PC() != 4198400 || regs.SP() != 140737488347136 || regs.Ret() != 11 {
		t.Errorf("pc %#x sp %#x rax %d", regs.PC(), regs.SP(), regs.Ret())
	}
	if x := findRegSet(th.RegSets, unix.NT_X86_XSTATE); !bytes.Equal(x, []byte{1, 2, 3}) {
		t.Errorf("xstate % x", x)
	}
	if th.LegacyRegs != nil {
		t.Error("legacy registers kept")
	}
	// Control: a field missing is an error, not a zero register.
	var bad Thread
	_ = json.Unmarshal([]byte(`{"tid":42,"regs":{"Rip":4198400}}`), &bad)
	if err := upgradeLegacyRegs(&bad); err == nil {
		t.Error("format 1 registers with one field accepted")
	}
}
