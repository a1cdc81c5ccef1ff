package proc

import (
	"bytes"
	"errors"
	"fmt"
)

// Stat is /proc/PID/stat or /proc/PID/task/TID/stat. The fields are numbered
// as in proc_pid_stat(5); times are in clock ticks.
type Stat struct {
	PID        int    // (1)
	Comm       string // (2) raw, without the parentheses; may hold any byte but NUL
	State      byte   // (3)
	PPID       int    // (4)
	PGRP       int    // (5)
	Session    int    // (6)
	TTYNr      int    // (7)
	TPGID      int    // (8)
	Flags      uint64 // (9) PF_* flags
	MinFlt     uint64 // (10)
	MajFlt     uint64 // (12)
	UTime      uint64 // (14)
	STime      uint64 // (15)
	Priority   int    // (18)
	Nice       int    // (19)
	NumThreads int    // (20)
	StartTime  uint64 // (22) since boot; with PID it identifies the process
	VSize      uint64 // (23) bytes
	RSS        uint64 // (24) pages
	StartCode  uint64 // (26)
	EndCode    uint64 // (27)
	StartStack uint64 // (28)
	ExitSignal int    // (38)
	Processor  int    // (39)
	RTPriority int    // (40)
	Policy     int    // (41)
	StartData  uint64 // (45)
	EndData    uint64 // (46)
	StartBrk   uint64 // (47)
	ArgStart   uint64 // (48)
	ArgEnd     uint64 // (49)
	EnvStart   uint64 // (50)
	EnvEnd     uint64 // (51)
	ExitCode   int    // (52) in the format of waitpid(2)
}

// statFields is the number of fields Linux has printed since 3.5.
const statFields = 52

// ParseStat parses /proc/PID/stat. The command name is what lies between
// the first "(" and the last ")", so a comm of "((ugly )pr()cess(" or one
// with a newline parses. Fewer than 52 fields is an error; more are
// ignored, for kernels to come.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	fail := func(err error) (Stat, error) {
		return Stat{}, parseErr("stat", 1, b, err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if lp < 0 || rp < lp {
		return fail(errors.New("no (comm)"))
	}
	pid, ok := bytes.CutSuffix(b[:lp], []byte(" "))
	if !ok {
		return fail(errors.New("no space between pid and (comm)"))
	}
	var f [statFields + 1][]byte // f[i] is field (i); f[0] unused
	n := 2
	for fld, rest := nextField(b[rp+1:]); len(fld) > 0 && n < statFields; fld, rest = nextField(rest) {
		n++
		f[n] = fld
	}
	if n < statFields {
		return fail(fmt.Errorf("%d fields, want %d", n, statFields))
	}
	if len(f[3]) != 1 {
		return fail(errors.New("bad state " + quote(f[3])))
	}
	var p numParser
	s.PID = p.int("pid", pid)
	s.Comm = string(b[lp+1 : rp])
	s.State = f[3][0]
	s.PPID = p.int("ppid", f[4])
	s.PGRP = p.int("pgrp", f[5])
	s.Session = p.int("session", f[6])
	s.TTYNr = p.int("tty_nr", f[7])
	s.TPGID = p.int("tpgid", f[8])
	s.Flags = p.u64("flags", f[9])
	s.MinFlt = p.u64("minflt", f[10])
	s.MajFlt = p.u64("majflt", f[12])
	s.UTime = p.u64("utime", f[14])
	s.STime = p.u64("stime", f[15])
	s.Priority = p.int("priority", f[18])
	s.Nice = p.int("nice", f[19])
	s.NumThreads = p.int("num_threads", f[20])
	s.StartTime = p.u64("starttime", f[22])
	s.VSize = p.u64("vsize", f[23])
	s.RSS = p.u64("rss", f[24])
	s.StartCode = p.u64("startcode", f[26])
	s.EndCode = p.u64("endcode", f[27])
	s.StartStack = p.u64("startstack", f[28])
	s.ExitSignal = p.int("exit_signal", f[38])
	s.Processor = p.int("processor", f[39])
	s.RTPriority = p.int("rt_priority", f[40])
	s.Policy = p.int("policy", f[41])
	s.StartData = p.u64("start_data", f[45])
	s.EndData = p.u64("end_data", f[46])
	s.StartBrk = p.u64("start_brk", f[47])
	s.ArgStart = p.u64("arg_start", f[48])
	s.ArgEnd = p.u64("arg_end", f[49])
	s.EnvStart = p.u64("env_start", f[50])
	s.EnvEnd = p.u64("env_end", f[51])
	s.ExitCode = p.int("exit_code", f[52])
	if p.err != nil {
		return fail(p.err)
	}
	return s, nil
}
