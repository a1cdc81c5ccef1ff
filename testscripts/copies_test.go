package testscripts

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// The commands of the commit fault tests (testdata/commit_*.txtar):
//
//	copies PID                print where PID runs: "src=STATE dst=STATE", each
//	                          running, frozen (stopped or traced) or none
//	watch start PID           sample both hosts every 5 ms in the background
//	watch stop                stop; fail if PID ever ran on both hosts at once,
//	                          print "samples=N both=0"
func init() {
	commands["copies"] = cmdCopies
	commands["watch"] = cmdWatch
}

// hostState returns how process hpid stands on the host whose init is
// initPID: "running", "frozen" (stopped or traced) or "none", read through
// the host's own /proc (cheap enough to sample every 5 ms).
func hostState(initPID, hpid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/%d/stat", initPID, hpid))
	if err != nil {
		return "none"
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return "none"
	}
	f := strings.Fields(string(b[i+2:]))
	// A process being killed (PF_EXITING in flags, field 9) runs no code
	// of its own any more, though its state may read R.
	const pfExiting = 0x4
	if len(f) > 6 {
		if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
			return "none"
		}
	}
	switch b[i+2] {
	case 'Z', 'X':
		return "none"
	case 'T', 't':
		return "frozen"
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/%d/status", initPID, hpid))
	if err != nil {
		return "none"
	}
	field := func(name string) string {
		if j := bytes.Index(st, []byte("\n"+name+":")); j >= 0 {
			if f := strings.Fields(string(st[j+len(name)+2:])); len(f) > 0 {
				return f[0]
			}
		}
		return ""
	}
	// A SIGKILLed process runs no code of its own any more, though it
	// reads R until it got a CPU to die on.
	const sigkill = 1 << (9 - 1)
	for _, k := range []string{"SigPnd", "ShdPnd"} {
		if m, err := strconv.ParseUint(field(k), 16, 64); err == nil && m&sigkill != 0 {
			return "none"
		}
	}
	// A traced process runs no code of its own either: relocate holds it
	// (a dump reading it, a restore building it) and runs only the
	// syscalls it injects, so its state may read R.
	if tp := field("TracerPid"); tp != "" && tp != "0" {
		return "frozen"
	}
	return "running"
}

func hostInits(ts *testscript.TestScript) (src, dst int) {
	return atoi(ts, ts.Getenv("src_pid")), atoi(ts, ts.Getenv("dst_pid"))
}

func cmdCopies(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 1, "copies PID")
	hpid := atoi(ts, args[0])
	src, dst := hostInits(ts)
	fmt.Fprintf(ts.Stdout(), "src=%s dst=%s\n", hostState(src, hpid), hostState(dst, hpid))
}

type watcher struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples int
	both    int
	when    []string
}

// watchers holds each script's watcher.
var watchers sync.Map // *testscript.TestScript -> *watcher

func cmdWatch(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) >= 1, "watch start PID | watch stop")
	switch args[0] {
	case "start":
		usage(ts, len(args) == 2, "watch start PID")
		if _, ok := watchers.Load(ts); ok {
			ts.Fatalf("watch: already watching")
		}
		hpid := atoi(ts, args[1])
		src, dst := hostInits(ts)
		w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
		watchers.Store(ts, w)
		go w.run(src, dst, hpid)
		ts.Defer(func() { w.end(); watchers.Delete(ts) })
	case "stop":
		v, ok := watchers.LoadAndDelete(ts)
		if !ok {
			ts.Fatalf("watch: not watching")
		}
		w := v.(*watcher)
		w.end()
		fmt.Fprintf(ts.Stdout(), "samples=%d both=%d\n", w.samples, w.both)
		if w.both > 0 {
			ts.Fatalf("two running copies in %d of %d samples, first at %s", w.both, w.samples, w.when[0])
		}
		if w.samples < 10 {
			ts.Fatalf("watch: only %d samples", w.samples)
		}
	default:
		ts.Fatalf("usage: watch start PID | watch stop")
	}
}

func (w *watcher) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *watcher) run(src, dst, hpid int) {
	defer close(w.done)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		// src, dst, src again: two reads of one host around the other's,
		// so that a hand-over between the reads (src killed after dst
		// resumed) cannot pass for an overlap.
		a, b, a2 := hostState(src, hpid), hostState(dst, hpid), hostState(src, hpid)
		w.mu.Lock()
		w.samples++
		if a == "running" && b == "running" && a2 == "running" {
			w.both++
			w.when = append(w.when, time.Now().Format("15:04:05.000"))
		}
		w.mu.Unlock()
	}
}
