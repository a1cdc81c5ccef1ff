package cmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/sock"
)

type unlockOptions struct {
	dryRun bool
	json   bool
}

func (o *unlockOptions) AddFlags(c *cobra.Command) {
	c.Flags().BoolVarP(&o.dryRun, "dry-run", "n", false, "only say which tables would go")
	c.Flags().BoolVar(&o.json, "json", false, "print what was found and removed as JSON")
}

func newUnlockCmd() *cobra.Command {
	var o unlockOptions
	c := &cobra.Command{
		Use:   "unlock [PID]",
		Short: "remove network lock tables a killed relocate left behind",
		Long: `unlock finds relocate's nftables tables in this network namespace
(inet relocate_PID, inet relocate_listen_PID) and removes the stale ones:
those of a process that runs again although no relocate is at work (a
relocate killed with SIGKILL mid-dump leaves its process running and its
connections' packets dropped), and listener tables with no relocate at
work. A table whose process is gone is the lock of a checkpoint waiting
for its restore: it is kept, unless its PID is given.

With PID, it removes relocate_PID and relocate_listen_PID whatever their
state: the connections of that checkpoint are given up.`,
		Example: `  relocate unlock            # remove what a killed relocate left
  relocate unlock -n         # only show it
  relocate unlock 4242       # give up the checkpoint of pid 4242`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return runUnlock(c, &o, args) },
	}
	o.AddFlags(c)
	return c
}

// lockTable is one relocate table and what unlock makes of it.
type lockTable struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Removed bool   `json:"removed"`
	Reason  string `json:"reason"`
}

type unlockJSON struct {
	jsonHead
	Tables   []lockTable `json:"tables"`
	Problems []string    `json:"problems"`
	Error    *jsonError  `json:"error,omitempty"`
}

func runUnlock(c *cobra.Command, o *unlockOptions, args []string) error {
	want := 0
	if len(args) == 1 {
		pid, err := parsePID(args[0])
		if err != nil {
			return err
		}
		want = pid
	}
	if err := needRoot("unlock"); err != nil {
		return err
	}
	names, err := sock.LockTables()
	if err != nil {
		return expectedError{err}
	}
	busy := relocatesAtWork()
	var tables []lockTable
	for _, name := range names {
		t := judgeTable(name, want, busy)
		if t.PID == 0 || (want != 0 && t.PID != want) {
			continue
		}
		tables = append(tables, t)
	}
	var problems []string
	for i := range tables {
		t := &tables[i]
		if !t.Removed || o.dryRun {
			if o.dryRun && t.Removed {
				t.Reason = "would go: " + t.Reason
				t.Removed = false
			}
			continue
		}
		if err := sock.UnlockTable(t.Name); err != nil {
			t.Removed = false
			problems = append(problems, err.Error())
		}
	}
	if want != 0 && len(tables) == 0 {
		problems = append(problems, fmt.Sprintf("no lock table of pid %d here", want))
	}
	out := c.OutOrStdout()
	failure := expectedError{errors.New(strings.Join(problems, "; "))}
	if o.json {
		if problems == nil {
			problems = []string{}
		}
		if tables == nil {
			tables = []lockTable{}
		}
		j := unlockJSON{jsonHead: head("unlock", len(problems) == 0), Tables: tables, Problems: problems}
		if len(problems) > 0 {
			e := errorJSONOf("unlock", ExitError, "", problemsError{failure, problems}).Error
			j.Error = &e
		}
		if err := writeJSON(out, j); err != nil {
			return err
		}
	} else {
		for _, t := range tables {
			state := "kept"
			if t.Removed {
				state = "removed"
			}
			fmt.Fprintf(out, "inet %s: %s: %s\n", t.Name, state, t.Reason)
		}
		if len(tables) == 0 && want == 0 {
			fmt.Fprintln(out, "no relocate lock tables here")
		}
	}
	if len(problems) > 0 {
		if o.json {
			return jsonDone{failure}
		}
		return failure
	}
	return nil
}

// judgeTable decides about one table. busy is the relocate processes at
// work in this network namespace: while one runs, only an explicit PID
// removes anything.
func judgeTable(name string, want int, busy []int) lockTable {
	t := lockTable{Name: name}
	rest := strings.TrimPrefix(name, "relocate_")
	listen := strings.HasPrefix(rest, "listen_")
	pid, err := strconv.Atoi(strings.TrimPrefix(rest, "listen_"))
	if err != nil || pid <= 0 {
		return lockTable{} // not one of ours
	}
	t.PID = pid
	_, statErr := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	alive := statErr == nil
	switch {
	case want != 0:
		t.Removed, t.Reason = true, fmt.Sprintf("pid %d given", pid)
	case len(busy) > 0:
		t.Reason = fmt.Sprintf("relocate (pid %s) is at work here and may own it", joinInts(busy))
	case listen:
		t.Removed, t.Reason = true, "a listener lock, and no relocate is at work"
	case alive:
		t.Removed, t.Reason = true, fmt.Sprintf("pid %d runs, and no relocate is at work: its connections were held for nothing", pid)
	default:
		t.Reason = fmt.Sprintf("pid %d is gone: the lock of its checkpoint, until it is restored ('relocate unlock %d' gives it up)", pid, pid)
	}
	return t
}

// relocatesAtWork lists the other relocate processes of this network
// namespace (nftables tables are per namespace).
func relocatesAtWork() []int {
	self := os.Getpid()
	myNet, _ := os.Readlink("/proc/self/ns/net")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "relocate" {
			continue
		}
		if ns, _ := os.Readlink(filepath.Join("/proc", e.Name(), "ns/net")); ns != myNet {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
