package cmd

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/transfer"
)

// Shell completion: PIDs with their command names, and the Host aliases
// of ssh_config.

// completePIDs offers the processes of this PID namespace but relocate's
// own, each with its command name ("4242<TAB>nginx").
func completePIDs(toComplete string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !strings.HasPrefix(e.Name(), toComplete) {
			continue
		}
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	var out []string
	for _, pid := range pids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue // gone meanwhile
		}
		out = append(out, fmt.Sprintf("%d\t%s", pid, strings.TrimSpace(string(comm))))
	}
	return out
}

func completeHosts(c *cobra.Command, toComplete string) []string {
	cfg, _ := c.Flags().GetString("ssh-config")
	var out []string
	for _, h := range transfer.HostAliases(cfg) {
		if strings.HasPrefix(h, toComplete) {
			out = append(out, h)
		}
	}
	return out
}

// pidThenHost completes "relocate PID HOST".
func pidThenHost(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		return completePIDs(toComplete), cobra.ShellCompDirectiveNoFileComp
	case 1:
		return completeHosts(c, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

func onlyPID(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completePIDs(toComplete), cobra.ShellCompDirectiveNoFileComp
}

func onlyHost(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeHosts(c, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// addCompletions wires the completions into the command tree.
func addCompletions(root *cobra.Command) {
	root.ValidArgsFunction = pidThenHost
	for _, c := range root.Commands() {
		switch c.Name() {
		case "dump":
			c.ValidArgsFunction = onlyPID
		case "check":
			c.ValidArgsFunction = onlyHost
			_ = c.RegisterFlagCompletionFunc("pid", func(_ *cobra.Command, _ []string, s string) ([]string, cobra.ShellCompDirective) {
				return completePIDs(s), cobra.ShellCompDirectiveNoFileComp
			})
		case "unlock":
			c.ValidArgsFunction = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
		}
	}
}
