package cmd

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/transfer"
)

type restoreOptions struct {
	json     bool
	tcpClose bool
	timeNS   bool
	pidns    bool
	external []string
	cgroup   string
}

func (o *restoreOptions) AddFlags(c *cobra.Command) {
	c.Flags().BoolVar(&o.json, "json", false, "print a JSON summary instead of the PID")
	c.Flags().BoolVar(&o.tcpClose, "tcp-close", false, "reset established TCP connections instead of resuming them (the peer gets a reset, the process ECONNRESET); listeners come back")
	c.Flags().BoolVar(&o.pidns, "pidns", false, "restore in a new PID namespace where the processes keep their PIDs even if those are taken here; prints the root's PID as seen from here")
	c.Flags().StringArrayVar(&o.external, "external", nil, "where a descriptor that led outside the checkpoint goes (a pipe to logger, say): [PID:]FD=TARGET or all=TARGET, TARGET /dev/null (the default), a file (appended to), stdin, stdout, stderr or journal (a new stdout stream to this host's journald, the default for one that went to journald); repeatable")
	c.Flags().StringVar(&o.cgroup, "cgroup-root", "", "put each process's cgroup (v2) path under this `CGROUP` instead of the hierarchy's root")
	c.Flags().BoolVar(&o.timeNS, "timens", false, "restore in a new time namespace whose monotonic and boot clocks continue from the checkpoint")
}

func newRestoreCmd(g *globals) *cobra.Command {
	var o restoreOptions
	c := &cobra.Command{
		Use:   "restore FILE|-",
		Short: "restart a process from an image, with its original PID",
		Long: `restore reads an image (from FILE, or stdin with -), rebuilds the process with
its original PID and thread IDs, and lets it run detached from relocate. It
prints the PID. The whole image is verified before the process runs: a
truncated or corrupted image leaves nothing behind.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return runRestore(c, g, &o, args[0]) },
	}
	o.AddFlags(c)
	return c
}

// openImage opens FILE or stdin for reading.
func openImage(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, expectedError{fmt.Errorf("%s is a directory, not an image", name)}
	}
	return os.Open(name)
}

func runRestore(c *cobra.Command, g *globals, o *restoreOptions, name string) error {
	var external []ckpt.ExternalRule
	for _, s := range o.external {
		r, err := ckpt.ParseExternalRule(s)
		if err != nil {
			return usageError{err}
		}
		external = append(external, r)
	}
	if err := needRoot("restore"); err != nil {
		return err
	}
	f, err := openImage(name)
	if err != nil {
		return err
	}
	defer f.Close()
	p := &ckpt.Progress{}
	stop := showProgress(p, g.quiet)
	done := transfer.Phase(c.Context(), "restore")
	res, err := ckpt.Restore(c.Context(), bufio.NewReaderSize(f, 1<<20), ckpt.RestoreOptions{Progress: p, Log: transfer.LogFrom(c.Context()), TCPClose: o.tcpClose, TimeNS: o.timeNS, PIDNS: o.pidns, External: external, CgroupRoot: o.cgroup})
	stop()
	done(&err)
	if err != nil {
		return err
	}
	if !g.quiet {
		for _, e := range res.Externals {
			fmt.Fprintf(c.ErrOrStderr(), "relocate: pid %d fd %d: %s led outside the checkpoint: now connected to %s\n", e.PID, e.FD, e.What, e.Target)
		}
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(c.ErrOrStderr(), "relocate: warning: %s\n", w)
	}
	if o.json {
		return writeJSON(c.OutOrStdout(), restoreJSONOf(res))
	}
	fmt.Fprintln(c.OutOrStdout(), res.PID)
	if !g.quiet {
		fmt.Fprintf(c.ErrOrStderr(), "relocate: restored pid %d (%s), %s of memory in %d ms\n",
			res.PID, plural(res.Threads, "thread"), bytesIEC(res.Pages*4096), res.Duration.Milliseconds())
	}
	return nil
}
