// Package ptrace owns every ptrace call relocate makes.
//
// All ptrace requests for a tracee must come from the one OS thread that
// attached it, so a Tracer runs one goroutine locked to its OS thread and
// executes closures on it (Do). Functions in this package that take a tid
// have the precondition "called on the tracer thread", i.e. from inside Do.
//
// Registers are Regs, defined once per architecture (regs_amd64.go,
// regs_arm64.go) with the same methods; nothing outside those files names
// a register (see regs.go).
//
// The package imports nothing of ours.
package ptrace
