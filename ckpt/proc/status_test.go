package proc

import (
	"reflect"
	"strings"
	"testing"
)

// sigbit is the bit of signal sig in a status mask.
func sigbit(sig int) uint64 { return 1 << (sig - 1) }

func TestParseStatusReal(t *testing.T) {
	st, err := ParseStat(fixture(t, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseStatus(fixture(t, "status"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != st.Comm || s.State != 'S' || s.Umask != 0o027 || s.Threads != 3 || s.Kthread {
		t.Errorf("name %q state %c umask %o threads %d kthread %v", s.Name, s.State, s.Umask, s.Threads, s.Kthread)
	}
	if s.PID != st.PID || s.Tgid != st.PID || s.PPID != st.PPID || s.TracerPID != 0 {
		t.Errorf("ids %+v", s)
	}
	if !reflect.DeepEqual(s.NSpid, []int{st.PID}) || !reflect.DeepEqual(s.NStgid, []int{st.PID}) ||
		!reflect.DeepEqual(s.NSpgid, []int{st.PGRP}) || !reflect.DeepEqual(s.NSsid, []int{st.Session}) {
		t.Errorf("namespaced ids %v %v %v %v", s.NStgid, s.NSpid, s.NSpgid, s.NSsid)
	}
	if s.UID != [4]int{0, 0, 0, 0} || s.GID != [4]int{0, 0, 0, 0} || len(s.Groups) != 0 {
		t.Errorf("creds %v %v %v", s.UID, s.GID, s.Groups)
	}
	const sigHUP, sigUSR1, sigPIPE, sigALRM, sigRTMIN = 1, 10, 13, 14, 32
	// glibc keeps two real-time signals, so its SIGRTMIN+3 is the kernel's 37.
	if s.SigPnd != sigbit(sigUSR1) || s.SigBlk != sigbit(sigUSR1)|sigbit(sigRTMIN+5) ||
		s.SigIgn&(sigbit(sigHUP)|sigbit(sigPIPE)) != sigbit(sigHUP)|sigbit(sigPIPE) || s.SigCgt&sigbit(sigALRM) == 0 || s.ShdPnd != 0 {
		t.Errorf("signals pnd %x blk %x ign %x cgt %x", s.SigPnd, s.SigBlk, s.SigIgn, s.SigCgt)
	}
	if s.CapEff == 0 || s.CapEff != s.CapPrm || s.CapBnd == 0 || s.CapInh != 0 || s.CapAmb != 0 || s.NoNewPrivs || s.Seccomp != 0 || s.SeccompFilters != 0 {
		t.Errorf("caps %+v", s)
	}
	for key, want := range map[string]string{"Groups": "", "VmLck": "4 kB", "untag_mask": "0xffffffffffffffff", "Speculation_Store_Bypass": "vulnerable", "Name": s.Name} {
		if got, ok := s.Fields[key]; !ok || got != want {
			t.Errorf("Fields[%q] = %q, %v; want %q", key, got, ok, want)
		}
	}

	task, err := ParseStatus(fixture(t, "task_status"))
	if err != nil {
		t.Fatal(err)
	}
	if task.Name != uglyThreadName || task.Tgid != st.PID || task.PID == st.PID {
		t.Errorf("thread name %q tgid %d pid %d", task.Name, task.Tgid, task.PID)
	}
	if want := `a	b\nc\\d"e f`; task.Fields["Name"] != want {
		t.Errorf("thread Fields[Name] = %q, want the escaped and trimmed %q", task.Fields["Name"], want)
	}

	z, err := ParseStatus(fixture(t, "zombie_status"))
	if err != nil {
		t.Fatal(err)
	}
	if z.State != 'Z' || z.PPID != st.PID || z.Threads != 1 {
		t.Errorf("zombie %+v", z)
	}

	k, err := ParseStatus(fixture(t, "kthread_status"))
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "kthreadd" || !k.Kthread || k.PID != 2 || k.PPID != 0 {
		t.Errorf("kthreadd %+v", k)
	}
}

func TestParseStatusUgly(t *testing.T) {
	in := "Name:\t\\\\ ((ugly )pr()cess(\\n \n" +
		"Umask:\t0777\n" +
		"State:\tt (tracing stop)\n" +
		"Uid:\t1000\t1001\t1002\t1003\n" +
		"Gid:\t4294967295\t0\t0\t0\n" +
		"Groups:\t4 24 27 \n" +
		"NStgid:\t900\t12\t1\n" +
		"NSpid:\t901\t13\t2\n" +
		"SigBlk:\tfffffffe7ffbfeff\n" +
		"CapBnd:\t000001ffffffffff\n" +
		"NoNewPrivs:\t1\n" +
		"Seccomp:\t2\n" +
		"Seccomp_filters:\t3\n" +
		"\n" +
		"Odd key with spaces:   value  with  spaces  \n" +
		"Empty:\n" +
		"TracerPid:\t77"
	s, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Status{
		Name: "\\ ((ugly )pr()cess(\n ", Umask: 0o777, State: 't', TracerPID: 77,
		UID: [4]int{1000, 1001, 1002, 1003}, GID: [4]int{4294967295, 0, 0, 0},
		Groups: []int{4, 24, 27}, NStgid: []int{900, 12, 1}, NSpid: []int{901, 13, 2},
		SigBlk: 0xfffffffe7ffbfeff, CapBnd: 0x1ffffffffff, NoNewPrivs: true, Seccomp: 2, SeccompFilters: 3,
	}
	fields := s.Fields
	s.Fields = nil
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got  %+v\nwant %+v", s, want)
	}
	if len(fields) != 16 || fields["Odd key with spaces"] != "value  with  spaces" || fields["Empty"] != "" || fields["Name"] != `\\ ((ugly )pr()cess(\n` {
		t.Fatalf("fields %q", fields)
	}
	empty, err := ParseStatus(nil)
	if err != nil || empty.Fields == nil || len(empty.Fields) != 0 {
		t.Fatalf("empty status: %+v, %v", empty, err)
	}
}

func TestUnescapeName(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:     "plain",
		`a\nb`:      "a\nb",
		`a\\nb`:     `a\nb`,
		`\t\e\"\a`:  "\t\x1b\"\a",
		`trailing\`: `trailing\`,
		`\q`:        `\q`,
		`\\\\`:      `\\`,
	} {
		if got := unescapeName([]byte(in)); got != want {
			t.Errorf("unescapeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseStatusErrors(t *testing.T) {
	head := "Name:\tx\n"
	for _, tc := range []struct{ in, substr string }{
		{head + "no colon\n", "no Key:"},
		{head + ":\t1\n", "no Key:"},
		{head + "Umask:\t0089\n", "bad umask"},
		{head + "State:\t\n", "bad state"},
		{head + "Pid:\tx\n", "bad Pid"},
		{head + "Uid:\t1\t2\t3\n", "Uid has 3 ids, want 4"},
		{head + "Gid:\t1\t2\t3\t4\t5\n", "Gid has 5 ids, want 4"},
		{head + "Gid:\t1\t2\t3\tx\n", "bad Gid"},
		{head + "Groups:\t1 -\n", "bad Groups"},
		{head + "SigCgt:\t1ffffffffffffffff\n", "bad SigCgt"},
		{head + "CapEff:\t0x1\n", "bad CapEff"},
		{head + "NoNewPrivs:\tyes\n", "bad NoNewPrivs"},
		{head + "Kthread:\t2\n", "bad Kthread"},
		{head + "Threads:\t\n", "bad Threads"},
	} {
		_, err := ParseStatus([]byte(tc.in))
		wantParseError(t, err, "status", 2, tc.substr)
		if strings.Count(tc.in, "\n") != 2 {
			t.Fatalf("bad case %q", tc.in)
		}
	}
}
