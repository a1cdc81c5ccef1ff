// Package ptrace owns every ptrace call relocate makes.
//
// All ptrace requests for a tracee must come from the one OS thread that
// attached it, so a Tracer runs one goroutine locked to its OS thread and
// executes closures on it (Do). Functions in this package that take a tid
// have the precondition "called on the tracer thread", i.e. from inside Do.
//
// The package imports nothing of ours.
package ptrace
