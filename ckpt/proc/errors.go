package proc

import (
	"fmt"
	"strconv"
)

// ParseError reports input a parser cannot accept.
type ParseError struct {
	File string // "maps", "stat", "fdinfo", ...; a path when FS read the file
	Line int    // 1-based; 0 when the error concerns the whole input
	Text string // the offending line, cut to maxErrText bytes
	Err  error
}

// maxErrText bounds ParseError.Text so that an error about a huge line does
// not keep the line alive.
const maxErrText = 256

func (e *ParseError) Error() string {
	where := e.File
	if e.Line > 0 {
		where += " line " + strconv.Itoa(e.Line)
	}
	if e.Text == "" {
		return fmt.Sprintf("proc: %s: %v", where, e.Err)
	}
	return fmt.Sprintf("proc: %s: %v: %q", where, e.Err, e.Text)
}

func (e *ParseError) Unwrap() error { return e.Err }

func parseErr(file string, line int, text []byte, err error) *ParseError {
	t := string(text)
	if len(text) > maxErrText {
		t = string(text[:maxErrText]) + "..."
	}
	return &ParseError{File: file, Line: line, Text: t, Err: err}
}
