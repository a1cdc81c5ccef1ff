package cmd

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
)

type checkOptions struct {
	json  bool
	pid   int
	pidns bool
	ssh   sshOptions
}

func (o *checkOptions) AddFlags(c *cobra.Command) {
	c.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
	c.Flags().IntVar(&o.pid, "pid", 0, "with a host: check that it can take this `PID`'s tree (free PIDs, same files...)")
	c.Flags().BoolVar(&o.pidns, "pidns", false, "with a host and --pid: as a migration with --pidns would (taken PIDs do not matter)")
	o.ssh.AddFlags(c)
}

func newCheckCmd() *cobra.Command {
	var o checkOptions
	c := &cobra.Command{
		Use:   "check [[user@]host] [--pid PID]",
		Short: "show which features work on this machine, or on a migration target",
		Long: `check probes the kernel and relocate's privileges without touching any other
process: one line per capability, ok or missing, why, and what it disables.
It exits 1 when dump or restore cannot work here at all.

With a host, it runs a migration's handshake there instead (over SSH,
uploading relocate for the moment if needed) and prints what would make
a migration fail; with --pid, for that process's tree. Nothing is frozen.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				return checkRemote(c, &o, args[0])
			}
			if o.pid != 0 {
				return usageError{errors.New("--pid needs a host to check against")}
			}
			return runCheck(c, &o)
		},
	}
	o.AddFlags(c)
	return c
}

func runCheck(c *cobra.Command, o *checkOptions) error {
	caps := ckpt.Check()
	usable := true
	problems := []string{}
	for _, cp := range caps {
		if cp.Required && !cp.OK {
			usable = false
			problems = append(problems, cp.Name+": "+cp.Detail)
		}
	}
	out := c.OutOrStdout()
	failure := expectedError{errors.New("dump and restore cannot work here: see the missing lines above")}
	if o.json {
		j := checkJSON{jsonHead: head("check", usable), Problems: problems, Checks: caps}
		if !usable {
			j = j.failed(failure)
		}
		if err := writeJSON(out, j); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, cp := range caps {
			state := "ok"
			if !cp.OK {
				state = "missing"
			}
			extra := ""
			if !cp.OK && cp.Disables != "" {
				extra = "; disables " + cp.Disables
			}
			fmt.Fprintf(tw, "%s\t%s\t%s%s\n", cp.Name, state, cp.Detail, extra)
		}
		tw.Flush()
	}
	if !usable {
		if o.json {
			return jsonDone{failure}
		}
		return failure
	}
	return nil
}
