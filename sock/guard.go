package sock

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
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

// guardSend tells the guard to keep ("+name") or forget ("-name") a table;
// the guard is started on first use. Best effort: without it, a table of a
// killed relocate stays (as it always did), to be deleted by hand.
func guardSend(line string) {
	guard.mu.Lock()
	defer guard.mu.Unlock()
	if guard.w == nil && !guard.failed && strings.HasPrefix(line, "+") {
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
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		name := strings.TrimLeft(line, "+-")
		switch {
		case strings.HasPrefix(line, "+"):
			kept[name] = true
		case strings.HasPrefix(line, "-"):
			delete(kept, name)
		}
	}
	for name := range kept {
		if err := UnlockTable(name); err != nil {
			fmt.Fprintf(os.Stderr, "relocate: warning: %v\n", err)
		}
	}
	return true
}

// Persist makes the lock outlive this process: it stays until
// UnlockTable. Safe on nil.
func (l *Lock) Persist() {
	if l != nil && l.name != "" {
		guardSend("-" + l.name)
	}
}
