package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/relocate/relocate/ckpt"
)

type dumpOptions struct {
	output         string
	leaveRunning   bool
	shellJob       bool
	unixDisconnect bool
	json           bool
	preCopy        bool
	maxFreeze      time.Duration
}

func (o *dumpOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVarP(&o.output, "output", "o", "", "write the image to `FILE` (- for stdout)")
	c.Flags().BoolVar(&o.leaveRunning, "leave-running", false, "resume the process after the dump instead of killing it")
	c.Flags().BoolVar(&o.shellJob, "shell-job", false, "accept terminal descriptors (a job started from a shell); restore attaches them to its own terminal")
	c.Flags().BoolVar(&o.unixDisconnect, "unix-disconnect", false, "accept unix connections to sockets outside the tree (journald, D-Bus): they come back closed (queued bytes, then EOF) and the program may reconnect")
	c.Flags().BoolVar(&o.json, "json", false, "print a JSON summary (on stderr when the image goes to stdout)")
	c.Flags().BoolVar(&o.preCopy, "pre-copy", false, "copy the memory while the process runs, in rounds, and freeze it only for what it wrote meanwhile")
	c.Flags().DurationVar(&o.maxFreeze, "max-freeze", 150*time.Millisecond, "with --pre-copy: go on with rounds until the rest can be copied in `DURATION`")
	_ = c.MarkFlagRequired("output")
}

func newDumpCmd(g *globals) *cobra.Command {
	var o dumpOptions
	c := &cobra.Command{
		Use:   "dump PID -o FILE|-",
		Short: "checkpoint a process to a file or stdout",
		Long: `dump freezes every thread of PID, writes its state as an image, and kills it
once the image is completely written (or resumes it with --leave-running).
If anything fails the process is resumed untouched.

The image holds the process's memory, secrets included; files are created
with mode 0600.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return runDump(c, g, &o, args[0]) },
	}
	o.AddFlags(c)
	return c
}

func parsePID(s string) (int, error) {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, usageError{fmt.Errorf("%q is not a process ID", s)}
	}
	return pid, nil
}

func runDump(c *cobra.Command, g *globals, o *dumpOptions, pidArg string) (err error) {
	pid, err := parsePID(pidArg)
	if err != nil {
		return err
	}
	if err := needRoot("dump"); err != nil {
		return err
	}
	var out io.Writer = os.Stdout
	if o.output == "-" {
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return usageError{errors.New("refusing to write an image to a terminal; redirect stdout or use -o FILE")}
		}
	} else {
		f, finish, cerr := createAtomic(o.output)
		if cerr != nil {
			return cerr
		}
		defer func() { err = errors.Join(err, finish(err == nil)) }()
		out = f
	}
	p := &ckpt.Progress{}
	stop := showProgress(p, g.quiet)
	dopts := ckpt.DumpOptions{
		LeaveRunning: o.leaveRunning, ShellJob: o.shellJob, UnixDisconnect: o.unixDisconnect, Progress: p,
		Producer: "relocate " + version()}
	if o.preCopy {
		dopts.PreCopy = &ckpt.PreCopyOptions{MaxFreeze: o.maxFreeze, Required: true}
	}
	res, err := ckpt.Dump(c.Context(), pid, out, dopts)
	stop()
	if err != nil {
		return err
	}
	if o.json {
		w := c.OutOrStdout()
		if o.output == "-" {
			w = c.ErrOrStderr()
		}
		return json.NewEncoder(w).Encode(res)
	}
	if !g.quiet {
		fate := "killed"
		if !res.Killed {
			fate = "left running"
		}
		rate := ""
		if s := res.Frozen.Seconds(); s > 0 {
			rate = fmt.Sprintf(", %s/s", bytesIEC(int64(float64(res.BytesRaw)/s)))
		}
		fmt.Fprintf(c.ErrOrStderr(), "relocate: dumped pid %d (%s): %s of memory, %s stored, frozen %d ms%s; process %s\n",
			res.PID, plural(res.Threads, "thread"), bytesIEC(res.BytesRaw), bytesIEC(res.BytesStored), res.FrozenMS, rate, fate)
		if pc := res.PreCopy; pc != nil {
			fmt.Fprintf(c.ErrOrStderr(), "relocate: pre-copy: %s; %s copied while it ran, %s frozen\n",
				preCopyRounds(pc), bytesIEC(preCopyBytes(pc)), bytesIEC(pc.FinalBytes))
		}
		if res.NetLocked {
			fmt.Fprintf(c.ErrOrStderr(), "relocate: note: its TCP connections stay locked (nftables table inet relocate_%d) until 'relocate restore' lifts the lock\n", res.PID)
		}
	}
	return nil
}

// createAtomic creates a temporary file next to path (mode 0600); finish
// renames it into place on success and removes it otherwise, so a failed
// dump never leaves a partial image nor destroys an older one.
//
// A path that exists and is not a regular file (a FIFO, /dev/null) is
// written directly.
func createAtomic(path string) (*os.File, func(ok bool) error, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, nil, expectedError{fmt.Errorf("%s is a directory", path)}
	} else if err == nil && !fi.Mode().IsRegular() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("open image: %w", err)
		}
		return f, func(bool) error { return f.Close() }, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-")
	if err != nil {
		return nil, nil, fmt.Errorf("create image: %w", err)
	}
	finish := func(ok bool) error {
		if !ok {
			f.Close()
			os.Remove(f.Name())
			return nil
		}
		if err := f.Close(); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("write image: %w", err)
		}
		if err := os.Rename(f.Name(), path); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("write image: %w", err)
		}
		return nil
	}
	return f, finish, nil
}

func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// preCopyRounds says how the rounds of a pre-copy went, for a human.
func preCopyRounds(pc *ckpt.PreCopyResult) string {
	s := fmt.Sprintf("%s with %s (%s)", plural(len(pc.Rounds), "round"), pc.Tracking, pc.Stop)
	if pc.Throttle > 0 {
		s += fmt.Sprintf(", throttled: stopped %.0f%% of the time at most", pc.Throttle*100)
	}
	return s
}

func preCopyBytes(pc *ckpt.PreCopyResult) int64 {
	var n int64
	for _, r := range pc.Rounds {
		n += r.Bytes
	}
	return n
}
