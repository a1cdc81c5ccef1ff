package ckpt

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/ckpt/ptrace"
)

// throttlePeriod is the duty cycle of a throttled process: stopped for its
// share of each period, running for the rest.
const throttlePeriod = 50 * time.Millisecond

// throttler slows a process down while a pre-copy runs by stopping every
// thread of it for a share of each period. The stops are ptrace stops
// (seize, interrupt, detach: what a dump does), which neither the process
// nor its parent sees, unlike SIGSTOP; a syscall in progress restarts.
type throttler struct {
	pid   int
	fs    proc.FS
	opts  DumpOptions
	share atomic.Uint64 // math.Float64bits of the share stopped
	// mu is held while the throttle has the process stopped: a look at
	// its soft-dirty bits, which stops it too, takes it meanwhile (a
	// process has one tracer at a time).
	mu   sync.Mutex
	stop chan struct{}
	done chan struct{}
	err  error // why it gave up (the process exited); read after done
}

func startThrottle(pid int, fs proc.FS, opts DumpOptions) *throttler {
	t := &throttler{pid: pid, fs: fs, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t
}

// set changes the share of the time the process is stopped for (0 to 1).
func (t *throttler) set(share float64) { t.share.Store(math.Float64bits(share)) }

// end stops throttling and returns once the process runs freely again.
func (t *throttler) end() error {
	close(t.stop)
	<-t.done
	return t.err
}

func (t *throttler) run() {
	defer close(t.done)
	tr := ptrace.NewTracer()
	defer tr.Close()
	wait := func(d time.Duration) bool {
		select {
		case <-t.stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		share := math.Float64frombits(t.share.Load())
		if share <= 0 {
			if !wait(throttlePeriod) {
				return
			}
			continue
		}
		t.mu.Lock()
		err := tr.Do(func() (err error) {
			d := &dumper{pid: t.pid, fs: t.fs, opts: t.opts, tasks: map[int]*frozenTask{}}
			defer func() { err = errors.Join(err, d.release()) }()
			if err := d.freeze(); err != nil {
				return err
			}
			select {
			case <-t.stop:
			case <-time.After(time.Duration(share * float64(throttlePeriod))):
			}
			return nil
		})
		t.mu.Unlock()
		if err != nil {
			t.err = err
			return
		}
		if !wait(time.Duration((1 - share) * float64(throttlePeriod))) {
			return
		}
	}
}
