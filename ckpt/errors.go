package ckpt

import (
	"errors"
	"fmt"
	"io/fs"
)

// Expected failures, for errors.Is. They describe the input, not a bug.
var (
	ErrNoProcess   error = ExpectedError("no such process")
	ErrUnsupported error = ExpectedError("not supported yet")
	ErrPIDTaken    error = ExpectedError("is taken")
	ErrTerminal    error = ExpectedError("not supported without --shell-job (which reattaches it to the restoring terminal)")
	// ErrExternal marks a --external rule that cannot be followed.
	ErrExternal error = ExpectedError("bad --external")
	// ErrTTYQueue: bytes were on their way through a pseudo-terminal
	// inside the tree when it was frozen (a multiplexer had not read its
	// shells' output yet); a dump lets the tree run a moment and tries
	// again.
	ErrTTYQueue error = ExpectedError("the tree did not read them")
)

// Errors are classified where they are made: a failure that is an answer
// about the input or the world (a refusal, a bad image, a missing process)
// has a method Expected() bool returning true, and the command line prints
// it as one line; any other failure is a bug and gets the bug hint.
// ExpectedError, ProcessError, FDError and MappingError here, image's and
// sock's sentinels and error types, mem.ErrGone, and transfer's DialError,
// RefusedError and the like carry it (image, sock and mem implement it
// without importing anything of ours).

// ExpectedError is a plain expected failure.
type ExpectedError string

func (e ExpectedError) Error() string  { return string(e) }
func (e ExpectedError) Expected() bool { return true }

// Expected says a failure about one process is a refusal, not a bug.
func (e *ProcessError) Expected() bool { return true }

// Expected says a failure about one descriptor is a refusal, not a bug.
func (e *FDError) Expected() bool { return true }

// Expected says a failure about one mapping is a refusal, not a bug.
func (e *MappingError) Expected() bool { return true }

// ProcessError is a failure that concerns a whole process.
type ProcessError struct {
	PID int
	Err error
}

func (e *ProcessError) Error() string { return fmt.Sprintf("pid %d: %v", e.PID, e.Err) }
func (e *ProcessError) Unwrap() error { return e.Err }

// FDError is a failure that concerns one descriptor.
type FDError struct {
	PID  int
	FD   int
	What string // the /proc/PID/fd link and kind, e.g. "socket:[81723] (tcp)"
	Err  error
}

func (e *FDError) Error() string {
	return fmt.Sprintf("pid %d fd %d: %s: %v", e.PID, e.FD, e.What, e.Err)
}
func (e *FDError) Unwrap() error { return e.Err }

// MappingError is a failure that concerns one memory mapping.
type MappingError struct {
	PID        int
	Start, End uint64
	Path       string
	Op         string
	Err        error
}

func (e *MappingError) Error() string {
	p := e.Path
	if p == "" {
		p = "anonymous"
	}
	return fmt.Sprintf("pid %d mapping %#x-%#x (%s): %s: %v", e.PID, e.Start, e.End, p, e.Op, e.Err)
}
func (e *MappingError) Unwrap() error { return e.Err }

// Expected reports whether err is an expected failure: some error in its
// chain says so (see ExpectedError), or it is an *fs.PathError, a file the
// user named that cannot be opened.
func Expected(err error) bool {
	var e interface{ Expected() bool }
	var pathErr *fs.PathError
	return (errors.As(err, &e) && e.Expected()) || errors.As(err, &pathErr)
}
