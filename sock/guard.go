package sock

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A lock table must not outlive a relocate killed in the middle of its
// work (SIGKILL, OOM): the connections it holds would stay dead. The
// kernel's own answer, a table owned by its netlink socket
// (NFT_TABLE_F_OWNER), is out of reach of the nftables library we use
// (v0.3.0 always sends table flags 0). So the first lock starts a guard:
// this same binary, re-executed, reading table names from a pipe. When the
// pipe ends (relocate exited, however) it deletes every table still
// guarded, and exits. A lock that must outlive relocate (a dumped process
// whose connections wait for a restore; a frozen copy in doubt) is
// persisted: the guard forgets it. The guard lives exactly as long as the
// relocate that started it, and ignores the signals a terminal sends.

// guardEnv marks the re-executed guard.
const guardEnv = "RELOCATE_NFT_GUARD"

var guard struct {
	mu     sync.Mutex
	w      *os.File
	failed bool
}

// guardSend tells the guard to delete ("+name") or forget ("-name") a
// table, or to run ("!json") or forget ("~id") a hook, if relocate dies;
// the guard is started on first use. Best effort: without it, a table of a
// killed relocate stays (as it always did), to be deleted by hand.
func guardSend(line string) {
	guard.mu.Lock()
	defer guard.mu.Unlock()
	if guard.w == nil && !guard.failed && (strings.HasPrefix(line, "+") || strings.HasPrefix(line, "!")) {
		guard.w, guard.failed = startGuard(), true
	}
	if guard.w != nil {
		if _, err := guard.w.WriteString(line + "\n"); err != nil {
			guard.w.Close()
			guard.w = nil
		}
	}
}

func startGuard() *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	defer r.Close()
	c := exec.Command("/proc/self/exe")
	c.Args = []string{"relocate"} // a testscript binary dispatches on it
	c.Env = append(os.Environ(), guardEnv+"=1")
	c.Stdin = r
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // not in ^C's process group
	if err := c.Start(); err != nil {
		w.Close()
		return nil
	}
	go func() { _ = c.Wait() }()
	return w
}

// GuardMain runs the guard if this process is one, and reports whether it
// was. Called first thing by the program's main.
func GuardMain() bool {
	if os.Getenv(guardEnv) == "" {
		return false
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	kept := map[string]bool{}
	hooks := map[string]guardedHook{}
	var order []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		arg := line[1:]
		switch line[0] {
		case '+':
			kept[arg] = true
		case '-':
			delete(kept, arg)
		case '!':
			var h guardedHook
			if json.Unmarshal([]byte(arg), &h) == nil {
				hooks[h.ID] = h
				order = append(order, h.ID)
			}
		case '~':
			delete(hooks, arg)
		}
	}
	// The hooks first (a service address taken down again), newest first,
	// while the locks still hold the peers off; then the locks.
	for i := len(order) - 1; i >= 0; i-- {
		if h, ok := hooks[order[i]]; ok {
			delete(hooks, order[i])
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			c := exec.CommandContext(ctx, "/bin/sh", "-c", h.Command)
			c.Env = append(os.Environ(), h.Env...)
			_ = c.Run()
			cancel()
		}
	}
	for name := range kept {
		if err := UnlockTable(name); err != nil {
			fmt.Fprintf(os.Stderr, "relocate: warning: %v\n", err)
		}
	}
	return true
}

// guardedHook is a command the guard runs if relocate dies first.
type guardedHook struct {
	ID      string   `json:"id"`
	Command string   `json:"command"`
	Env     []string `json:"env"`
}

// GuardHook has the guard run command (sh -c, with env added) if this
// process dies before GuardForget(id): the undo of a hook that changed
// the world (a service address moved) for a migration that a SIGKILL cut
// short.
func GuardHook(id, command string, env []string) {
	b, err := json.Marshal(guardedHook{ID: id, Command: command, Env: env})
	if err == nil && !strings.ContainsAny(string(b), "\n") {
		guardSend("!" + string(b))
	}
}

// GuardForget cancels GuardHook(id).
func GuardForget(id string) { guardSend("~" + id) }

// Persist makes the lock outlive this process: it stays until
// UnlockTable. Safe on nil.
func (l *Lock) Persist() {
	if l != nil && l.name != "" {
		guardSend("-" + l.name)
	}
}
