package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
)

type checkOptions struct {
	json bool
}

func (o *checkOptions) AddFlags(c *cobra.Command) {
	c.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
}

func newCheckCmd() *cobra.Command {
	var o checkOptions
	c := &cobra.Command{
		Use:   "check",
		Short: "show which features work on this machine",
		Long: `check probes the kernel and relocate's privileges without touching any other
process: one line per capability, ok or missing, why, and what it disables.
It exits 1 when dump or restore cannot work here at all.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runCheck(c, &o) },
	}
	o.AddFlags(c)
	return c
}

func runCheck(c *cobra.Command, o *checkOptions) error {
	caps := ckpt.Check()
	usable := true
	for _, cp := range caps {
		if cp.Required && !cp.OK {
			usable = false
		}
	}
	out := c.OutOrStdout()
	if o.json {
		if err := json.NewEncoder(out).Encode(struct {
			Usable bool              `json:"usable"`
			Checks []ckpt.Capability `json:"checks"`
		}{usable, caps}); err != nil {
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
		return expectedError{errors.New("dump and restore cannot work here: see the missing lines above")}
	}
	return nil
}
