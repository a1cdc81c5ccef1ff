package proc

import (
	"bytes"
	"errors"
	"fmt"
)

// Timer is one POSIX timer of /proc/PID/timers, as show_timer
// (fs/proc/base.c) prints it:
//
//	ID: 0
//	signal: 14/000000001234abcd
//	notify: signal/pid.1234
//	ClockID: 1
type Timer struct {
	ID         int
	Signal     int
	SigevValue uint64 // sigev_value.sival_ptr
	Notify     string // "signal", "thread" or "none"
	// NotifyThreadID says the target is "tid.N", a thread chosen with
	// SIGEV_THREAD_ID, rather than "pid.N", the thread group.
	NotifyThreadID bool
	NotifyTID      int // the target, in the PID namespace of the reader
	ClockID        int // negative for the CPU clocks of a process or thread
}

const (
	timerSignal = 1 << iota
	timerNotify
	timerClock
	timerAll = timerSignal | timerNotify | timerClock
)

// ParseTimers parses /proc/PID/timers. Every timer must have its four lines;
// unknown lines are skipped. The kernel lists the newest timer first.
func ParseTimers(b []byte) ([]Timer, error) {
	var out []Timer
	seen, idLine := 0, 0
	complete := func() error {
		if len(out) == 0 || seen == timerAll {
			return nil
		}
		for _, k := range []struct {
			bit  int
			name string
		}{{timerSignal, "signal"}, {timerNotify, "notify"}, {timerClock, "ClockID"}} {
			if seen&k.bit == 0 {
				return fmt.Errorf("timer %d has no %s line", out[len(out)-1].ID, k.name)
			}
		}
		return nil
	}
	for n, line := range lines(b) {
		if len(line) == 0 {
			continue
		}
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, parseErr("timers", n, line, errors.New("no Key:"))
		}
		v := trimSpace(val)
		var p numParser
		if string(key) == "ID" {
			if err := complete(); err != nil {
				return nil, parseErr("timers", idLine, nil, err)
			}
			out = append(out, Timer{ID: p.int("ID", v)})
			seen, idLine = 0, n
			if p.err != nil {
				return nil, parseErr("timers", n, line, p.err)
			}
			continue
		}
		if len(out) == 0 {
			return nil, parseErr("timers", n, line, errors.New("line before the first ID"))
		}
		t := &out[len(out)-1]
		bit := 0
		switch string(key) {
		case "signal":
			bit = timerSignal
			sig, val, ok := bytes.Cut(v, []byte("/"))
			if !ok {
				p.fail("signal", v)
			}
			t.Signal = p.int("signal number", sig)
			t.SigevValue = p.hex64("sigev_value", val)
		case "notify":
			bit = timerNotify
			how, who, ok := bytes.Cut(v, []byte("/"))
			kind, id, ok2 := bytes.Cut(who, []byte("."))
			if !ok || !ok2 || len(how) == 0 || string(kind) != "pid" && string(kind) != "tid" {
				p.fail("notify", v)
				break
			}
			t.Notify = string(how)
			t.NotifyThreadID = string(kind) == "tid"
			t.NotifyTID = p.int("notify target", id)
		case "ClockID":
			bit = timerClock
			t.ClockID = p.int("ClockID", v)
		default:
			continue
		}
		if seen&bit != 0 {
			p.err = errors.New("repeated line")
		}
		seen |= bit
		if p.err != nil {
			return nil, parseErr("timers", n, line, p.err)
		}
	}
	if err := complete(); err != nil {
		return nil, parseErr("timers", idLine, nil, err)
	}
	return out, nil
}
