package cmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/transfer"
)

const resolveLong = `relocate resolve ID settles a migration left in doubt (exit status 5 of
relocate PID host): the commit was sent but its answer never came, so the
process is frozen on the source and may or may not run on the target. Run
on the source, it asks the target (as the migration reached it) what its
copy did and follows it: kills the frozen copy here if the target's runs,
resumes it if the target has none. Run on the target, it settles the copy
there: one still waiting past its deadline is removed (the source then
resumes its own).

When the other host cannot be reached, say what you know: --commit (the
process runs on the target: remove the copy here) or --abort (it does
not: resume the copy here). Exit status 0 settled, 1 not settled.`

func newResolveCmd() *cobra.Command {
	var commit, abort bool
	c := &cobra.Command{
		Use:   "resolve ID",
		Short: "settle a migration left in doubt",
		Long:  resolveLong,
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if commit && abort {
				return usageError{fmt.Errorf("--commit and --abort exclude each other")}
			}
			if err := needRoot("resolve"); err != nil {
				return err
			}
			decision := ""
			switch {
			case commit:
				decision = "commit"
			case abort:
				decision = "abort"
			}
			out, err := transfer.Resolve(c.Context(), args[0], decision, c.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), out)
			return nil
		},
	}
	c.Flags().BoolVar(&commit, "commit", false, "the process runs on the target: remove the frozen copy here")
	c.Flags().BoolVar(&abort, "abort", false, "the process does not run on the target: resume the copy here")
	return c
}
