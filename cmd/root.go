// Package cmd holds relocate's cobra commands: flags, output and exit codes.
// No engine logic lives here; only this package talks to the user.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/sock"
	"github.com/relocate/relocate/transfer"
)

// Exit codes (documented in the README).
const (
	ExitOK          = 0
	ExitError       = 1   // the operation failed; nothing was changed
	ExitUsage       = 2   // bad command line
	ExitInterrupted = 130 // SIGINT or SIGTERM; everything was rolled back
)

// Version and Commit are stamped at build time with -ldflags "-X .../cmd.Version=...".
var (
	Version = ""
	Commit  = ""
)

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// cleanupGrace is how long cleanup may take after ^C before relocate
// exits anyway. A migration's rollback talks to the target and runs the
// rollback hook: it gets longer.
var cleanupGrace atomic.Int64

func init() { cleanupGrace.Store(int64(5 * time.Second)) }

// globals are the flags every command has.
type globals struct {
	quiet   bool
	json    bool
	verbose int
	logFile string

	log      *slog.Logger
	closeLog func() error
	phase    *phaseTracker
	jsonOut  io.Writer // where --json goes: stdout, or stderr when the image has stdout
}

type usageError struct{ err error }

// expectedError is a failure that is an answer, not a bug (relocate check
// finding a machine unusable).
type expectedError struct{ error }

func (e usageError) Error() string { return e.err.Error() }

// Main runs relocate with os.Args and returns the process exit code.
func Main() int {
	if sock.GuardMain() {
		return ExitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var g globals
	var mo migrateOptions
	root := &cobra.Command{
		Use:   "relocate PID [user@]host",
		Short: "move a running Linux process to another host, or checkpoint it to a file",
		Long:  migrateLong,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 0 && len(args) != 2 {
				return usageError{fmt.Errorf("want PID and [user@]host, or a command (got %d arguments)", len(args))}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			return runMigrate(c, &g, &mo, args)
		},
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := g.openLog(c.ErrOrStderr()); err != nil {
				return err
			}
			c.SetContext(transfer.WithLog(c.Context(), g.log))
			return nil
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version(),
	}
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "no progress output")
	root.PersistentFlags().CountVarP(&g.verbose, "verbose", "v", "say what happens: phases and timings, refusals and why (-vv: the target's log too)")
	root.PersistentFlags().StringVar(&g.logFile, "log-file", "", "append a time-stamped log of everything (as -vv) to `FILE`")
	root.Flags().BoolP("version", "V", false, "print the version")
	root.SetVersionTemplate(versionLine() + "\n")
	mo.AddFlags(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDumpCmd(&g), newRestoreCmd(&g), newInspectCmd(&g), newCheckCmd(), newVersionCmd(), newReceiveCmd(), newManCmd(), newUnlockCmd(), newResolveCmd())
	addCompletions(root)
	addExamples(root)
	root.SetContext(ctx)
	g.phase = &phaseTracker{}
	// Last resort when cleanup itself is stuck (a read from a stalled
	// stream cannot be interrupted): exit anyway. A half-restored process
	// dies with us (PTRACE_O_EXITKILL); a process being dumped is detached
	// by the kernel and runs on.
	go func() {
		<-ctx.Done()
		time.Sleep(time.Duration(cleanupGrace.Load()))
		fmt.Fprintln(os.Stderr, "relocate: error: interrupted; cleanup did not finish in time, exiting")
		os.Exit(ExitInterrupted)
	}()
	stopProfile := startProfile()
	ran, err := root.ExecuteC()
	stopProfile()
	defer func() {
		if g.closeLog != nil {
			_ = g.closeLog()
		}
	}()
	if err == nil {
		g.logger().Debug("done", "exit", ExitOK)
		return ExitOK
	}
	code := report(os.Stderr, err, ctx.Err() != nil)
	g.logger().Info("failed", "exit", code, "expected", expected(err), "error", oneLine(err))
	if wantsJSON(ran) && !errors.As(err, new(jsonDone)) {
		w := g.jsonOut
		if w == nil {
			w = os.Stdout
		}
		_ = writeJSON(w, errorJSONOf(commandName(ran.CommandPath()), code, g.phase.last(), err))
	}
	return code
}

// report prints err in relocate's voice and returns the exit code.
func report(w io.Writer, err error, interrupted bool) int {
	var ue usageError
	switch {
	case errors.As(err, &ue) || isCobraUsage(err):
		fmt.Fprintf(w, "relocate: error: %s (see 'relocate --help')\n", oneLine(err))
		return ExitUsage
	case errors.As(err, new(*transfer.InDoubtError)):
		// Even after ^C: the one line that settles it matters most.
		fmt.Fprintf(w, "relocate: error: %s\n", oneLine(err))
		return ExitInDoubt
	case interrupted || errors.Is(err, context.Canceled):
		var rolled *transfer.RolledBackError
		if errors.As(err, &rolled) {
			fmt.Fprintf(w, "relocate: error: interrupted; rolled back: pid %d runs on here as before\n", rolled.PID)
		} else {
			fmt.Fprintln(w, "relocate: error: interrupted; nothing was changed")
		}
		return ExitInterrupted
	}
	if se := (silentError{}); errors.As(err, &se) {
		return ExitError
	}
	fmt.Fprintf(w, "relocate: error: %s\n", oneLine(err))
	if h := hint(err); h != "" {
		fmt.Fprintf(w, "relocate: hint: %s\n", h)
	} else if !expected(err) {
		fmt.Fprintf(w, "relocate: hint: this looks like a bug in relocate %s; please report it with the line above\n", version())
	}
	if code, ok := migrationExit(err); ok {
		return code
	}
	return ExitError
}

// expected reports whether err is an answer about the input or the
// world (one line for the user) rather than a bug: the error says so
// itself, where it was made (ckpt.ExpectedError).
func expected(err error) bool { return ckpt.Expected(err) || isCobraUsage(err) }

// Expected: a usage error or an answer of cmd's is not a bug.
func (e usageError) Expected() bool    { return true }
func (e expectedError) Expected() bool { return true }

func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument", "required flag", "flag needs an argument", "bad flag syntax"} {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

// oneLine keeps an error on one line (joined errors are separated by "; ").
func oneLine(err error) string {
	b := []byte(err.Error())
	for i, c := range b {
		if c == '\n' {
			b[i] = ';'
		}
	}
	return string(b)
}

func hint(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM) && os.Geteuid() != 0:
		return "relocate needs root (ptrace, pidfd_getfd, clone3 with set_tid): run it with sudo"
	case errors.Is(err, ckpt.ErrPIDTaken):
		return "end the process that holds it, or wait for the PID to be free"
	case errors.Is(err, image.ErrTruncated):
		return "the image is incomplete: was the dump interrupted or the copy cut short?"
	}
	return ""
}

// needRoot refuses early, in one line, what cannot work without root.
func needRoot(what string) error {
	if os.Geteuid() != 0 {
		return expectedError{fmt.Errorf("%s needs root (ptrace, pidfd_getfd, clone3 with set_tid, PR_SET_MM); run it with sudo", what)}
	}
	return nil
}

// versionLine is what both `relocate version` and `relocate -V` print.
func versionLine() string {
	commit := Commit
	if bi, ok := debug.ReadBuildInfo(); ok && commit == "" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("relocate %s (commit %s, %s, %s/%s)", version(), commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newVersionCmd() *cobra.Command {
	var id bool
	c := &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if id {
				// What a migration compares to decide whether the target's
				// relocate is this very binary.
				s, err := transfer.SelfID()
				if err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), s)
				return nil
			}
			fmt.Fprintln(c.OutOrStdout(), versionLine())
			return nil
		},
	}
	c.Flags().BoolVar(&id, "id", false, "print the SHA-256 of this binary instead")
	return c
}
