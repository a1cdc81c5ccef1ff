package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// startProfile writes a CPU profile of this run into the directory named by
// RELOCATE_PPROF, when set, as cpu-<pid>.pprof; the returned function ends
// it. For benchmarks (testscripts/bench): a target started over SSH sees
// the variable only if its sshd sets it (the simulated hosts' sshd passes
// the one testscripts/simhosts.sh was started with).
func startProfile() func() {
	dir := os.Getenv("RELOCATE_PPROF")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", os.Getpid())))
	if err != nil {
		fmt.Fprintf(os.Stderr, "relocate: warning: RELOCATE_PPROF: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "relocate: warning: RELOCATE_PPROF: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
