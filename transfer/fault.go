package transfer

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Fault injection for the fault tests (testscripts/testdata/commit_*.txtar):
// RELOCATE_FAULT=STEP:ACTION on the source, RELOCATE_FAULT_TARGET=STEP:ACTION
// for the target (carried in the hello). Not a user feature.
//
// Source steps: before-stream (frozen, nothing sent), stream10,
// stream50, stream90 (that share of the memory sent), ready (READY
// received), commit (COMMIT sent), before-kill (RUNNING received),
// after-kill. Target steps: restore (the hello checked, before the
// image), ready (READY sent), commit (COMMIT received), resumed (copy
// resumed, RUNNING not sent).
// Actions: kill (SIGKILL itself), term (SIGTERM itself), wait (create
// $RELOCATE_FAULT_DIR/STEP.reached and wait up to 120 s for STEP.go: the
// test cuts the link meanwhile).
type fault struct{ step, action string }

func parseFault(s string) fault {
	step, action, _ := strings.Cut(s, ":")
	return fault{step: step, action: action}
}

// at injects the fault if step is its step.
func (f fault) at(step string) {
	if f.step == "" || f.step != step {
		return
	}
	switch f.action {
	case "kill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	case "term":
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(100 * time.Millisecond) // let the handler see it
	case "wait":
		dir := os.Getenv("RELOCATE_FAULT_DIR")
		if dir == "" {
			dir = os.TempDir()
		}
		_ = os.WriteFile(filepath.Join(dir, step+".reached"), nil, 0o644)
		for i := 0; i < 1200; i++ {
			if _, err := os.Stat(filepath.Join(dir, step+".go")); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
