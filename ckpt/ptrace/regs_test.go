package ptrace

import "testing"

func TestRegsMarshal(t *testing.T) {
	r := sampleRegs()
	b := r.Marshal()
	if len(b) != PrstatusSize || b[0] != 1 || b[len(b)-8] != 9 {
		t.Fatalf("NT_PRSTATUS of %d bytes: % x", len(b), b)
	}
	back, err := UnmarshalRegs(b)
	if err != nil || back != r {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := UnmarshalRegs(b[:len(b)-1]); err == nil {
		t.Fatal("a short regset decoded")
	}
}
