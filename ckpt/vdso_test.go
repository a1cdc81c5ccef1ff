package ckpt

import "testing"

func TestLocalVDSO(t *testing.T) {
	info, err := localVDSO()
	if err != nil {
		t.Fatal(err)
	}
	if info == nil {
		t.Skip("this process has no vDSO")
	}
	if len(info.SHA256) != 64 {
		t.Errorf("sha256 %q", info.SHA256)
	}
	off, ok := info.Symbols["__vdso_clock_gettime"]
	if !ok {
		off, ok = info.Symbols["__kernel_clock_gettime"] // arm64's name
	}
	if !ok || off == 0 {
		t.Errorf("no clock_gettime among %v", info.Symbols)
	}
}

func TestParseVDSORejectsGarbage(t *testing.T) {
	if _, err := parseVDSO([]byte("\x7fELF not really")); err == nil {
		t.Error("garbage parsed as a vDSO")
	}
}
