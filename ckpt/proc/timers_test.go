package proc

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestParseTimersReal(t *testing.T) {
	st, err := ParseStat(fixture(t, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ParseTimers(fixture(t, "timers"))
	if err != nil {
		t.Fatal(err)
	}
	// workload.c creates four timers; the newest comes first.
	const (
		clockRealtime, clockMonotonic, clockBoottime = 0, 1, 7
		clockProcessCPU                              = -6 // MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_SCHED)
		sigALRM, sigUSR2, sigRTMINplus1              = 14, 12, 35
	)
	pid := st.PID
	want := []Timer{
		{ID: 3, Signal: sigUSR2, SigevValue: 42, Notify: "signal", NotifyTID: pid, ClockID: clockProcessCPU},
		{ID: 2, Signal: sigRTMINplus1, SigevValue: 42, Notify: "signal", NotifyThreadID: true, NotifyTID: pid, ClockID: clockBoottime},
		{ID: 1, Signal: sigALRM, SigevValue: 0x1234abcd, Notify: "none", NotifyTID: pid, ClockID: clockMonotonic},
		{ID: 0, Signal: sigALRM, SigevValue: 0x1234abcd, Notify: "signal", NotifyTID: pid, ClockID: clockRealtime},
	}
	if !reflect.DeepEqual(ts, want) {
		t.Fatalf("got  %+v\nwant %+v", ts, want)
	}
}

func TestParseTimersUgly(t *testing.T) {
	in := "ID: 2147483647\n" +
		"signal: 64/ffffffffffffffff\n" +
		"notify: thread/tid.1\n" +
		"Future: field\n" +
		"ClockID: -2147483648\n" +
		"\n" +
		"ID:0\n" +
		"ClockID:\t3\n" +
		"notify: none/pid.0\n" +
		"signal: 0/0"
	ts, err := ParseTimers([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Timer{
		{ID: 2147483647, Signal: 64, SigevValue: 1<<64 - 1, Notify: "thread", NotifyThreadID: true, NotifyTID: 1, ClockID: -2147483648},
		{ID: 0, Notify: "none", ClockID: 3},
	}
	if !reflect.DeepEqual(ts, want) {
		t.Fatalf("got  %+v\nwant %+v", ts, want)
	}
	if ts, err := ParseTimers(nil); err != nil || ts != nil {
		t.Fatalf("no timers: %v, %v", ts, err)
	}
}

func TestParseTimersErrors(t *testing.T) {
	const good = "ID: 0\nsignal: 14/0\nnotify: signal/pid.1\nClockID: 0\n"
	for _, tc := range []struct {
		in     string
		line   int
		substr string
	}{
		{"signal: 14/0\n", 1, "before the first ID"},
		{good + "ID: 1\nsignal: 14/0\nClockID: 0\n", 5, "timer 1 has no notify line"},
		{good + "ID: 1\nsignal: 14/0\nnotify: signal/pid.1\n", 5, "timer 1 has no ClockID line"},
		{"ID: 1\nnotify: signal/pid.1\nClockID: 0\nID: 2\n", 1, "timer 1 has no signal line"},
		{good + "ID: x\n", 5, "bad ID"},
		{good + "garbage\n", 5, "no Key:"},
		{good + "ClockID: 1\n", 5, "repeated line"},
		{"ID: 0\nsignal: 14\n", 2, "bad signal"},
		{"ID: 0\nsignal: x/0\n", 2, "bad signal number"},
		{"ID: 0\nsignal: 14/0x5\n", 2, "bad sigev_value"},
		{"ID: 0\nnotify: signal/pgid.1\n", 2, "bad notify"},
		{"ID: 0\nnotify: signal/pid\n", 2, "bad notify"},
		{"ID: 0\nnotify: /pid.1\n", 2, "bad notify"},
		{"ID: 0\nnotify: signal/pid.x\n", 2, "bad notify target"},
		{"ID: 0\nClockID: 1.5\n", 2, "bad ClockID"},
	} {
		_, err := ParseTimers([]byte(tc.in))
		wantParseError(t, err, "timers", tc.line, tc.substr)
	}
}

const (
	atNull   = 0
	atPhdr   = 3
	atPagesz = 6
	atEntry  = 9
	atUID    = 11
	atRandom = 25
	atExecfn = 31
)

func TestParseAuxvReal(t *testing.T) {
	b := fixture(t, "auxv")
	aux, err := ParseAuxv(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(aux) != len(b)/16-1 {
		t.Fatalf("%d entries from %d bytes", len(aux), len(b))
	}
	got := map[uint64]uint64{}
	for _, e := range aux {
		got[e.Type] = e.Value
	}
	if got[atPagesz] != 4096 || got[atPhdr] == 0 || got[atEntry] == 0 || got[atRandom] == 0 || got[atExecfn] == 0 {
		t.Fatalf("auxv %v", got)
	}
	if _, ok := got[atUID]; !ok {
		t.Fatal("no AT_UID")
	}
}

func auxBytes(words ...uint64) []byte {
	b := make([]byte, 8*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b
}

func TestParseAuxvSynthetic(t *testing.T) {
	aux, err := ParseAuxv(auxBytes(atPagesz, 4096, atEntry, 1<<64-1, atNull, 0, 99, 99))
	if err != nil || !reflect.DeepEqual(aux, []AuxEntry{{atPagesz, 4096}, {atEntry, 1<<64 - 1}}) {
		t.Fatalf("got %v, %v", aux, err)
	}
	aux, err = ParseAuxv(auxBytes(atNull, 5))
	if err != nil || len(aux) != 0 {
		t.Fatalf("only AT_NULL: %v, %v", aux, err)
	}
	aux, err = ParseAuxv(nil)
	if err != nil || aux != nil {
		t.Fatalf("empty: %v, %v", aux, err)
	}
	for _, tc := range []struct {
		in     []byte
		substr string
	}{
		{auxBytes(atPagesz, 4096, atNull, 0)[:31], "31 bytes is not a whole number of 16-byte entries"},
		{auxBytes(atPagesz), "8 bytes"},
		{auxBytes(atPagesz, 4096), "no AT_NULL"},
	} {
		_, err := ParseAuxv(tc.in)
		wantParseError(t, err, "auxv", 0, tc.substr)
	}
}

func TestParseLimitsReal(t *testing.T) {
	ls, err := ParseLimits(fixture(t, "limits"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 16 { // RLIM_NLIMITS
		t.Fatalf("%d limits: %+v", len(ls), ls)
	}
	by := map[string]Limit{}
	for _, l := range ls {
		by[l.Name] = l
		if l.Soft > l.Hard {
			t.Errorf("%+v", l)
		}
	}
	for name, units := range map[string]string{
		"Max cpu time": "seconds", "Max open files": "files", "Max locked memory": "bytes",
		"Max nice priority": "", "Max realtime priority": "", "Max realtime timeout": "us",
		"Max pending signals": "signals", "Max processes": "processes",
	} {
		if l, ok := by[name]; !ok || l.Units != units {
			t.Errorf("%q: %+v, %v", name, l, ok)
		}
	}
	if by["Max cpu time"].Soft != RLimInfinity || by["Max open files"].Soft == RLimInfinity {
		t.Errorf("limits %+v", by)
	}
}

func TestParseLimitsSynthetic(t *testing.T) {
	in := "Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max open files            1024                 4096                 files     \n" +
		"Max nice priority         0                    0                    \n" +
		"Max  odd   name           unlimited            18446744073709551615\n" +
		"\n"
	ls, err := ParseLimits([]byte(in))
	want := []Limit{
		{Name: "Max open files", Soft: 1024, Hard: 4096, Units: "files"},
		{Name: "Max nice priority"},
		{Name: "Max  odd   name", Soft: RLimInfinity, Hard: RLimInfinity},
	}
	if err != nil || !reflect.DeepEqual(ls, want) {
		t.Fatalf("got %+v, %v", ls, err)
	}
	for _, tc := range []struct{ in, substr string }{
		{"Max open files\n", "no soft limit"},
		{"1024 4096 files\n", "no name"},
		{"Max open files 1024\n", `bad hard limit ""`},
		{"Max open files 1024 x files\n", "bad hard limit"},
		{"Max open files 1024 4096 files extra\n", "trailing words"},
		{"Max open files 1024 18446744073709551616 files\n", "bad hard limit"},
	} {
		_, err := ParseLimits([]byte(tc.in))
		wantParseError(t, err, "limits", 1, tc.substr)
		if strings.Contains(tc.in, "\n\n") {
			t.Fatal("bad case")
		}
	}
}
