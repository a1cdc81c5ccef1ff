package ckpt

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/sock"
)

// Expected failures, for errors.Is. They describe the input, not a bug.
var (
	ErrNoProcess   = errors.New("no such process")
	ErrUnsupported = errors.New("not supported yet")
	ErrPIDTaken    = errors.New("is taken")
	ErrTerminal    = errors.New("not supported without --shell-job (which reattaches it to the restoring terminal)")
	// ErrExternal marks a --external rule that cannot be followed.
	ErrExternal = errors.New("bad --external")
)

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

// Expected reports whether err describes bad input or an unsupported
// situation (one clean line for the user) rather than a bug in relocate.
func Expected(err error) bool {
	var pe *ProcessError
	var fe *FDError
	var me *MappingError
	var pathErr *fs.PathError
	var fmtErr *image.FormatError
	var verErr *image.VersionError
	return errors.As(err, &pe) || errors.As(err, &fe) || errors.As(err, &me) ||
		errors.As(err, &pathErr) || errors.As(err, &fmtErr) || errors.As(err, &verErr) ||
		errors.Is(err, ErrNoProcess) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrPIDTaken) ||
		errors.Is(err, ErrTerminal) || errors.Is(err, ErrExternal) || errors.Is(err, image.ErrNotImage) || errors.Is(err, image.ErrCorrupt) ||
		errors.Is(err, image.ErrTruncated) || errors.Is(err, image.ErrTrailingData) ||
		errors.Is(err, sock.ErrUnsupported)
}
