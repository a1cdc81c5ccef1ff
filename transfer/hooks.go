package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/relocate/relocate/ckpt"
)

// Hook names, as given to --hook NAME=CMD.
const (
	HookPostDump    = "post-dump"    // source, once the tree is frozen
	HookPreRestore  = "pre-restore"  // target, before sockets are rebuilt
	HookPostRestore = "post-restore" // target, once the tree runs (after the commit: can only warn)
	// HookPreRestoreUndo runs on the target when a copy whose pre-restore
	// hook ran is given up (the rollback's counterpart there).
	HookPreRestoreUndo = "pre-restore-undo"
	HookRollback       = "rollback" // source, when a migration is called off after the freeze
)

// HookNames are the hooks there are, in the order they run.
var HookNames = []string{HookPostDump, HookPreRestore, HookPreRestoreUndo, HookPostRestore, HookRollback}

// hookTimeout bounds a hook: a hung hook must not keep a tree frozen
// forever.
const hookTimeout = 2 * time.Minute

// hookEnv describes the tree to a hook.
func hookEnv(name string, cp *ckpt.Checkpoint, source, target string) []string {
	var pids []string
	for _, p := range cp.PIDs() {
		pids = append(pids, strconv.Itoa(p))
	}
	addrs := cp.Addresses()
	var ips []string
	seen := map[string]bool{}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		ip := net.ParseIP(host)
		if err != nil || ip == nil || ip.IsUnspecified() || ip.IsLoopback() || seen[host] {
			continue
		}
		seen[host] = true
		ips = append(ips, host)
	}
	return []string{
		"RELOCATE_HOOK=" + name,
		"RELOCATE_PID=" + strconv.Itoa(cp.Root),
		"RELOCATE_PIDS=" + strings.Join(pids, " "),
		"RELOCATE_ADDRS=" + strings.Join(addrs, " "),
		"RELOCATE_IPS=" + strings.Join(ips, " "),
		"RELOCATE_SOURCE=" + source,
		"RELOCATE_TARGET=" + target,
	}
}

// runHook runs command with sh -c; its output goes to out. A failure says
// which hook, how it ended and the last thing it printed.
func runHook(ctx context.Context, name, command string, env []string, out io.Writer) error {
	if command == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	c.Env = append(os.Environ(), env...)
	var tail bytes.Buffer
	w := io.MultiWriter(out, &tail)
	c.Stdout, c.Stderr = w, w
	c.WaitDelay = time.Second
	err := c.Run()
	if err == nil {
		return nil
	}
	last := lastLine(tail.String())
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		err = fmt.Errorf("timed out after %s", hookTimeout)
	case errors.As(err, &ee):
		err = fmt.Errorf("%s", ee.ProcessState)
	}
	if last != "" {
		return &HookError{Name: name, Err: fmt.Errorf("%v: %s", err, last)}
	}
	return &HookError{Name: name, Err: err}
}

// HookError is a hook that failed.
type HookError struct {
	Name string
	Err  error
}

func (e *HookError) Error() string { return fmt.Sprintf("%s hook failed: %v", e.Name, e.Err) }
func (e *HookError) Unwrap() error { return e.Err }

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return truncate(s, 300)
}
