package cmd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/transfer"
)

// Exit codes of a migration, beside ExitOK and ExitUsage.
const (
	ExitRefused    = 3 // refused before the freeze: the process never stopped
	ExitRolledBack = 4 // failed after the freeze: the process runs on at the source
	// ExitInDoubt: the commit was sent and its outcome is unknown; the
	// copy here is frozen until `relocate resolve ID` settles it.
	ExitInDoubt = 5
)

// sshOptions are the ssh(1)-like flags of the commands that reach a host.
type sshOptions struct {
	config   string
	identity []string
	port     int
	jump     string
	settings []string
}

func (o *sshOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVarP(&o.config, "ssh-config", "F", "", "read this ssh_config `FILE` instead of ~/.ssh/config")
	c.Flags().StringArrayVarP(&o.identity, "identity", "i", nil, "authenticate with this private key `FILE` (repeatable)")
	c.Flags().IntVarP(&o.port, "port", "p", 0, "SSH port of the target (default: from ssh_config, else 22)")
	c.Flags().StringVarP(&o.jump, "jump", "J", "", "reach the target through these jump `HOSTS` ([user@]host[:port],..., as ssh -J)")
	c.Flags().StringArrayVarP(&o.settings, "option", "o", nil, "an ssh_config setting, `KEY=VALUE`, before the files (repeatable, as ssh -o)")
}

func (o *sshOptions) options(w io.Writer) transfer.SSHOptions {
	return transfer.SSHOptions{ConfigFile: o.config, Identity: o.identity, Port: o.port, Jump: o.jump, Options: o.settings,
		Passphrase: askPassphrase, Warn: func(msg string) { fmt.Fprintf(w, "relocate: warning: %s\n", msg) }}
}

type migrateOptions struct {
	ssh            sshOptions
	hooks          []string
	noTimeNS       bool
	pidns          bool
	unixDisconnect bool
	json           bool
	commitWait     time.Duration
	preCopy        string
	maxFreeze      time.Duration
}

func (o *migrateOptions) AddFlags(c *cobra.Command) {
	o.ssh.AddFlags(c)
	c.Flags().StringArrayVar(&o.hooks, "hook", nil, "run `NAME=CMD` at a step of the migration: post-dump (source), pre-restore, pre-restore-undo, post-restore (target), rollback (source); repeatable")
	c.Flags().BoolVar(&o.noTimeNS, "no-timens", false, "let the restored processes see the target's monotonic clock instead of continuing their own")
	c.Flags().BoolVar(&o.unixDisconnect, "unix-disconnect", false, "accept unix connections to sockets outside the tree (journald, D-Bus): they arrive closed (queued bytes, then EOF)")
	c.Flags().BoolVar(&o.pidns, "pidns", false, "restore on the target in a new PID namespace, where the processes keep their PIDs even if those are taken there")
	c.Flags().BoolVar(&o.json, "json", false, "print a JSON summary on stdout")
	c.Flags().DurationVar(&o.commitWait, "commit-timeout", 0, "how long the target's frozen copy waits for the commit (default 30s); the source tries twice as long to learn the outcome before it gives up in doubt")
	c.Flags().StringVar(&o.preCopy, "precopy", "auto", "`auto`: copy the memory while the process runs, then freeze it for what it wrote meanwhile (where the kernel can track writes); off: copy everything frozen")
	c.Flags().DurationVar(&o.maxFreeze, "max-freeze", 150*time.Millisecond, "pre-copy rounds go on until the rest can be copied in `DURATION`")
}

// hookMap parses --hook NAME=CMD flags.
func (o *migrateOptions) hookMap() (map[string]string, error) {
	m := map[string]string{}
	for _, h := range o.hooks {
		name, cmd, ok := strings.Cut(h, "=")
		if !ok || cmd == "" {
			return nil, usageError{fmt.Errorf("--hook %q: want NAME=CMD", h)}
		}
		if !slices.Contains(transfer.HookNames, name) {
			return nil, usageError{fmt.Errorf("--hook %s: unknown hook (there are %s)", name, strings.Join(transfer.HookNames, ", "))}
		}
		if _, dup := m[name]; dup {
			return nil, usageError{fmt.Errorf("--hook %s given twice", name)}
		}
		m[name] = cmd
	}
	return m, nil
}

const migrateLong = `relocate PID [user@]host moves a running process and its descendants to
another machine: it checks that the target can take them, freezes them,
streams their state over SSH (compressed, while it is read) to the same
relocate binary on the target, which restores them with their PIDs and TCP
connections and keeps them frozen until this side commits; only once the
target reports them running are they killed here. If anything fails after the freeze, they resume here as if nothing
had happened, and the target is cleaned up. Nothing stays installed or
running on either side: relocate uploads itself if the target lacks it.

DEST is [user@]host[:port] or a Host alias of ~/.ssh/config; the host key
must be in known_hosts. Exit status: 0 migrated, 3 refused before the
freeze, 4 rolled back (the process runs on here), 5 in doubt (the commit
was sent but not confirmed: the process is frozen here; the line printed
names the relocate resolve command that settles it), 130 interrupted
(rolled back), 2 usage, 1 other errors.

Hooks run with sh -c and get RELOCATE_HOOK, RELOCATE_PID, RELOCATE_PIDS,
RELOCATE_ADDRS (local ip:port of its sockets), RELOCATE_IPS, RELOCATE_SOURCE
and RELOCATE_TARGET. A failing post-dump or pre-restore hook rolls the
migration back (rollback runs here, pre-restore-undo there); post-restore
runs after the commit and can only warn.`

func runMigrate(c *cobra.Command, g *globals, o *migrateOptions, args []string) error {
	pid, err := parsePID(args[0])
	if err != nil {
		return err
	}
	hooks, err := o.hookMap()
	if err != nil {
		return err
	}
	if err := transfer.CheckOptions(o.ssh.options(nil)); err != nil {
		return usageError{err}
	}
	var pre *ckpt.PreCopyOptions
	switch o.preCopy {
	case "auto":
		pre = &ckpt.PreCopyOptions{MaxFreeze: o.maxFreeze}
	case "off":
	default:
		return usageError{fmt.Errorf("--precopy %q: want auto or off", o.preCopy)}
	}
	if err := needRoot("migration"); err != nil {
		return err
	}
	cleanupGrace.Store(int64(3 * time.Minute)) // a rollback hook may take its two minutes
	p := &ckpt.Progress{}
	stop := showProgress(p, g.quiet)
	res, err := transfer.Migrate(c.Context(), pid, args[1], transfer.MigrateOptions{
		SSH: o.ssh.options(c.ErrOrStderr()), Hooks: hooks, NoTimeNS: o.noTimeNS, PIDNS: o.pidns, UnixDisconnect: o.unixDisconnect, Progress: p,
		Producer: "relocate " + version(), Stderr: c.ErrOrStderr(), CommitWait: o.commitWait, PreCopy: pre})
	stop()
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(c.OutOrStdout(), migrateJSONOf(res))
	}
	if res.Unconfirmed {
		fmt.Fprintf(c.ErrOrStderr(), "relocate: warning: %s did not confirm the end of the migration; check that pid %d runs there\n", res.Dest, res.PID)
	}
	if !g.quiet {
		rate := ""
		if res.FrozenMS > 0 {
			rate = fmt.Sprintf(" (%s/s while frozen)", bytesIEC(res.BytesRaw*1000/res.FrozenMS))
		}
		there := ""
		if res.TargetPID != res.PID {
			there = fmt.Sprintf(", pid %d there", res.TargetPID)
		}
		fmt.Fprintf(c.ErrOrStderr(), "relocate: migrated pid %d (%s, %s) to %s%s: frozen %s, total %s; %s of memory, %s sent%s\n",
			res.PID, plural(res.Processes, "process"), plural(res.Threads, "thread"), res.Dest, there,
			seconds(res.FrozenMS), seconds(res.TotalMS), bytesIEC(res.BytesRaw), bytesIEC(res.BytesSent), rate)
		if pc := res.PreCopy; pc != nil {
			fmt.Fprintf(c.ErrOrStderr(), "relocate: pre-copy: %s; %s copied while it ran, %s frozen\n",
				preCopyRounds(pc), bytesIEC(preCopyBytes(pc)), bytesIEC(pc.FinalBytes))
		}
	}
	return nil
}

func seconds(ms int64) string { return fmt.Sprintf("%.2f s", float64(ms)/1000) }

// migrationExit maps the errors of a migration to their exit codes.
func migrationExit(err error) (int, bool) {
	var refused *transfer.RefusedError
	var rolled *transfer.RolledBackError
	var doubt *transfer.InDoubtError
	switch {
	case errors.As(err, &doubt):
		return ExitInDoubt, true
	case errors.As(err, &rolled):
		return ExitRolledBack, true
	case errors.As(err, &refused):
		return ExitRefused, true
	}
	return 0, false
}

func newReceiveCmd() *cobra.Command {
	var removeSelf bool
	c := &cobra.Command{
		Use:    "receive",
		Short:  "the target side of a migration (started by relocate over SSH)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			// The SSH channel is our stdin/stdout: when it breaks, a write
			// must fail (and the restored tree be cleaned up), not kill us
			// with SIGPIPE half-way.
			signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP)
			if removeSelf {
				removeOwnUpload()
			}
			// A pollable stdin, so that reads from the source can have a
			// deadline (a dead link sends nothing, and no EOF either).
			in := os.Stdin
			if err := syscall.SetNonblock(0, true); err == nil {
				in = os.NewFile(0, "/dev/stdin")
			}
			// Its log goes back to the source on stderr, marked as such.
			ctx := transfer.WithLog(c.Context(), slog.New(transfer.TargetLogHandler(os.Stderr)))
			err := transfer.Receive(ctx, in, os.Stdout, os.Stderr)
			if err != nil {
				return silentError{err}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&removeSelf, strings.TrimPrefix(transfer.RemoveSelfFlag, "--"), false, "delete this binary and its private directory first (an upload)")
	return c
}

// removeOwnUpload deletes the uploaded binary we run from, and its
// directory: /proc/self/exe keeps working for the restore stub.
func removeOwnUpload() {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	os.Remove(exe)
	dir := exe[:strings.LastIndexByte(exe, '/')+1]
	if strings.Contains(dir, "/relocate.") {
		os.Remove(dir)
	}
}

// silentError fails without a word: the other side has been told.
type silentError struct{ error }

func checkRemote(c *cobra.Command, o *checkOptions, dest string) error {
	ctx := c.Context()
	if err := transfer.CheckOptions(o.ssh.options(nil)); err != nil {
		return usageError{err}
	}
	problems, err := transfer.Check(ctx, o.pid, dest, transfer.MigrateOptions{SSH: o.ssh.options(c.ErrOrStderr()), PIDNS: o.pidns,
		Producer: "relocate " + version(), Stderr: c.ErrOrStderr()})
	if err != nil {
		return err
	}
	out := c.OutOrStdout()
	failure := expectedError{fmt.Errorf("%s cannot take it: %d problem(s) above", dest, len(problems))}
	if o.json {
		if problems == nil {
			problems = []string{}
		}
		j := checkJSON{jsonHead: head("check", len(problems) == 0), Dest: dest, PID: o.pid, Problems: problems}
		if len(problems) > 0 {
			j = j.failed(failure)
		}
		if err := writeJSON(out, j); err != nil {
			return err
		}
	} else {
		for _, p := range problems {
			fmt.Fprintf(out, "%s: %s\n", dest, p)
		}
		if len(problems) == 0 {
			what := "relocate works there"
			if o.pid > 0 {
				what = fmt.Sprintf("it can take pid %d", o.pid)
			}
			fmt.Fprintf(out, "%s: ok: %s\n", dest, what)
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
