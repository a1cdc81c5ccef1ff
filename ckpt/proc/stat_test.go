package proc

import (
	"strings"
	"testing"
)

// uglyThreadName is what workload.c's threads call themselves.
const uglyThreadName = "a\tb\nc\\d\"e f "

func TestParseStatReal(t *testing.T) {
	s, err := ParseStat(fixture(t, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// PR_SET_NAME keeps 15 bytes of "((ugly )pr()cess(".
	if s.Comm != "((ugly )pr()ces" || s.State != 'S' || s.NumThreads != 3 {
		t.Errorf("comm %q state %c threads %d", s.Comm, s.State, s.NumThreads)
	}
	if s.PID <= 0 || s.PPID <= 0 || s.PGRP <= 0 || s.Session <= 0 || s.StartTime == 0 {
		t.Errorf("ids: %+v", s)
	}
	if s.StartCode == 0 || s.StartCode >= s.EndCode || s.StartData >= s.EndData || s.EndData > s.StartBrk ||
		s.ArgStart >= s.ArgEnd || s.ArgEnd > s.EnvStart || s.EnvStart >= s.EnvEnd || s.StartStack == 0 {
		t.Errorf("layout: %+v", s)
	}
	if s.Priority != 20 || s.Nice != 0 || s.ExitSignal != 17 || s.Policy != 0 || s.ExitCode != 0 || s.VSize == 0 || s.RSS == 0 {
		t.Errorf("scheduling: %+v", s)
	}

	task, err := ParseStat(fixture(t, "task_stat"))
	if err != nil {
		t.Fatal(err)
	}
	if task.Comm != uglyThreadName || task.PID == s.PID || task.StartCode != s.StartCode || task.ExitSignal != -1 {
		t.Errorf("thread: %+v", task)
	}

	z, err := ParseStat(fixture(t, "zombie_stat"))
	if err != nil {
		t.Fatal(err)
	}
	if z.State != 'Z' || z.PPID != s.PID || z.ExitCode != 3<<8 || z.StartCode != 0 || z.ArgStart != 0 {
		t.Errorf("zombie: %+v", z)
	}

	k, err := ParseStat(fixture(t, "kthread_stat"))
	if err != nil {
		t.Fatal(err)
	}
	const pfKthread = 0x00200000 // include/linux/sched.h
	if k.PID != 2 || k.Comm != "kthreadd" || k.PPID != 0 || k.Flags&pfKthread == 0 || k.VSize != 0 {
		t.Errorf("kthreadd: %+v", k)
	}
}

// statLine is a stat line in which field (n) holds the number n, so that a
// test can see which field went where.
func statLine(pid, comm string) string {
	f := []string{pid, "(" + comm + ")", "R"}
	for i := 4; i <= 52; i++ {
		f = append(f, itoa(i))
	}
	return strings.Join(f, " ")
}

func itoa(i int) string {
	if i < 0 {
		return "-" + itoa(-i)
	}
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func TestParseStatFieldNumbers(t *testing.T) {
	s, err := ParseStat([]byte(statLine("42", "x") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{
		PID: 42, Comm: "x", State: 'R', PPID: 4, PGRP: 5, Session: 6, TTYNr: 7, TPGID: 8, Flags: 9,
		MinFlt: 10, MajFlt: 12, UTime: 14, STime: 15, Priority: 18, Nice: 19, NumThreads: 20,
		StartTime: 22, VSize: 23, RSS: 24, StartCode: 26, EndCode: 27, StartStack: 28,
		ExitSignal: 38, Processor: 39, RTPriority: 40, Policy: 41, StartData: 45, EndData: 46,
		StartBrk: 47, ArgStart: 48, ArgEnd: 49, EnvStart: 50, EnvEnd: 51, ExitCode: 52,
	}
	if s != want {
		t.Fatalf("got  %+v\nwant %+v", s, want)
	}
}

func TestParseStatUgly(t *testing.T) {
	for _, comm := range []string{
		"((ugly )pr()cess(",
		"",
		")",
		"(",
		") S 1 2 3",
		"a\nb",
		"sp ace ",
		" ",
		"\x00\xff",
		"((((((((((((((((",
		strings.Repeat(")", 64),
	} {
		s, err := ParseStat([]byte(statLine("7", comm)))
		if err != nil {
			t.Errorf("comm %q: %v", comm, err)
			continue
		}
		if s.Comm != comm || s.PID != 7 || s.State != 'R' || s.ExitCode != 52 {
			t.Errorf("comm %q: got %+v", comm, s)
		}
	}
	// More fields than 52, from a kernel to come, and negative numbers.
	in := strings.Replace(statLine("1", "init"), " 19 ", " -20 ", 1) + " 53 54\n"
	s, err := ParseStat([]byte(in))
	if err != nil || s.Nice != -20 || s.ExitCode != 52 {
		t.Errorf("got %+v, %v", s, err)
	}
}

func TestParseStatErrors(t *testing.T) {
	full := statLine("7", "x")
	for _, tc := range []struct{ in, substr string }{
		{"", "no (comm)"},
		{"7 x R 1", "no (comm)"},
		{"7 )x( R", "no (comm)"},
		{"7(x) R", "no space between pid"},
		{"7 (x)", "2 fields, want 52"},
		{full[:len(full)-3], "51 fields, want 52"},
		{strings.Replace(full, " R ", " RS ", 1), "bad state"},
		{strings.Replace(full, "7 (", "x (", 1), "bad pid"},
		{strings.Replace(full, " 22 ", " -22 ", 1), `bad starttime "-22"`},
		{strings.Replace(full, " 45 ", " 4x5 ", 1), "bad start_data"},
		{strings.Replace(full, " 4 ", " 99999999999999999999 ", 1), "bad ppid"},
	} {
		_, err := ParseStat([]byte(tc.in))
		wantParseError(t, err, "stat", 1, tc.substr)
	}
}
