package cmd

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/transfer"
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
	out, err := openImageOutput(o.output)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.finish(err == nil)) }()
	if o.output == "-" {
		g.jsonOut = c.ErrOrStderr() // the image has stdout
	}
	for _, w := range out.warns {
		fmt.Fprintf(c.ErrOrStderr(), "relocate: warning: %s\n", w)
	}
	p := &ckpt.Progress{}
	stop := showProgress(p, g.quiet)
	done := transfer.Phase(c.Context(), "dump")
	dopts := ckpt.DumpOptions{
		LeaveRunning: o.leaveRunning, ShellJob: o.shellJob, UnixDisconnect: o.unixDisconnect, Progress: p,
		Log:      transfer.LogFrom(c.Context()),
		Producer: "relocate " + version()}
	if o.preCopy {
		dopts.PreCopy = &ckpt.PreCopyOptions{MaxFreeze: o.maxFreeze, Required: true}
	}
	frozen, err := ckpt.DumpTx(c.Context(), pid, out.w, dopts)
	stop()
	done(&err)
	if err != nil {
		return err
	}
	// The image is in place (synced, renamed) before anything irreversible:
	// a failed rename resumes the tree.
	if err := out.commit(); err != nil {
		return errors.Join(err, frozen.Rollback())
	}
	if o.leaveRunning {
		err = frozen.Rollback()
	} else {
		err = frozen.Commit()
	}
	res := frozen.Result
	if err != nil {
		return err
	}
	if o.json {
		w := c.OutOrStdout()
		if o.output == "-" {
			w = c.ErrOrStderr()
		}
		return writeJSON(w, dumpJSONOf(res))
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
		for _, e := range res.Externals {
			fmt.Fprintf(c.ErrOrStderr(), "relocate: note: pid %d fd %d: %s leads to a process outside the checkpoint: restore connects it to /dev/null, or to what --external %d=FILE|stdout|... names\n",
				e.PID, e.FD, e.What, e.FD)
		}
	}
	return nil
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
