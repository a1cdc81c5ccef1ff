package ptrace

import (
	"errors"
	"runtime"
)

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("ptrace: tracer closed")

// Tracer runs closures on a single locked OS thread.
type Tracer struct {
	reqs chan func()
	done chan struct{}
}

// NewTracer starts the tracer goroutine. The OS thread is never unlocked, so
// when Close ends the goroutine the thread dies with it and no other
// goroutine ever runs on a thread that was a tracer.
func NewTracer() *Tracer {
	t := &Tracer{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		for {
			select {
			case f := <-t.reqs:
				f()
			case <-t.done:
				return
			}
		}
	}()
	return t
}

// Do runs f on the tracer thread and returns its error.
func (t *Tracer) Do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case t.reqs <- func() { errc <- f() }:
	case <-t.done:
		return ErrClosed
	}
	return <-errc
}

// Close stops the tracer goroutine; its OS thread exits.
func (t *Tracer) Close() {
	select {
	case <-t.done:
	default:
		close(t.done)
	}
}
