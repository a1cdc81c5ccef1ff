package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCmd writes relocate's man pages, generated from the command tree
// so they never drift from --help (the release build runs it), with the
// EXIT STATUS, EXAMPLES and FILES sections cobra does not make.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "write the man pages (relocate.1, relocate-dump.1, ...) into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := c.Root()
			root.DisableAutoGenTag = true
			h := &doc.GenManHeader{Title: "RELOCATE", Section: "1", Source: "relocate " + version(), Manual: "relocate manual"}
			if err := doc.GenManTree(root, h, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			for _, sub := range append([]*cobra.Command{root}, root.Commands()...) {
				if !sub.IsAvailableCommand() && sub != root {
					continue
				}
				name := strings.ReplaceAll(sub.CommandPath(), " ", "-") + ".1"
				if err := addManSections(filepath.Join(args[0], name), sub); err != nil {
					return fmt.Errorf("man pages: %w", err)
				}
			}
			return nil
		},
	}
}

// addManSections renames cobra's EXAMPLE to EXAMPLES and puts EXIT STATUS
// and FILES before SEE ALSO.
func addManSections(path string, c *cobra.Command) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	page := strings.Replace(string(data), ".SH EXAMPLE\n", ".SH EXAMPLES\n", 1)
	var extra strings.Builder
	extra.WriteString(".SH EXIT STATUS\n")
	for _, e := range exitStatus(c) {
		fmt.Fprintf(&extra, ".TP\n\\fB%d\\fP\n%s\n", e.code, e.what)
	}
	if files := manFiles[c.Name()]; len(files) > 0 {
		extra.WriteString(".SH FILES\n")
		for _, f := range files {
			fmt.Fprintf(&extra, ".TP\n\\fI%s\\fP\n%s\n", f[0], f[1])
		}
	}
	if i := strings.Index(page, ".SH SEE ALSO"); i >= 0 {
		page = page[:i] + extra.String() + page[i:]
	} else {
		page += extra.String()
	}
	return os.WriteFile(path, []byte(page), 0o644)
}

type exitCode struct {
	code int
	what string
}

// exitStatus documents the exit codes of c (README "Exit status" too).
func exitStatus(c *cobra.Command) []exitCode {
	codes := []exitCode{{ExitOK, "success"}}
	switch {
	case !c.HasParent(): // relocate PID HOST
		codes = append(codes,
			exitCode{ExitError, "failed before anything was frozen, for another reason than a refusal"},
			exitCode{ExitUsage, "bad command line"},
			exitCode{ExitRefused, "refused before the freeze: the process never stopped"},
			exitCode{ExitRolledBack, "failed after the freeze and rolled back: the process runs on here"},
		)
	case c.Name() == "check":
		codes = append(codes, exitCode{ExitError, "relocate cannot work here (or there): see the missing lines"},
			exitCode{ExitUsage, "bad command line"})
	default:
		codes = append(codes, exitCode{ExitError, "failed; nothing was changed (the process runs on, nothing is left half-restored)"},
			exitCode{ExitUsage, "bad command line"})
	}
	return append(codes, exitCode{ExitInterrupted, "interrupted by SIGINT or SIGTERM; everything was rolled back"})
}

// manFiles are the FILES sections, by command name.
var manFiles = map[string][][2]string{
	"relocate": {
		{"~/.ssh/config, /etc/ssh/ssh_config", "ssh_config, read as ssh does (or -F FILE alone)"},
		{"~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts", "the host keys (and @cert-authority lines) the target's key is checked against"},
		{"~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa", "keys offered when no IdentityFile is set; KEY-cert.pub beside a key is its certificate"},
		{"$TMPDIR/relocate.*/ on the target", "where relocate uploads itself when the target lacks it; removed as soon as it runs"},
	},
	"dump": {
		{"FILE", "the image (mode 0600; written under a temporary name and renamed when complete): it holds the process's memory, secrets included"},
	},
	"restore": {
		{"FILE", "an image written by relocate dump"},
	},
	"unlock": {
		{"nftables: inet relocate_PID, inet relocate_listen_PID", "the lock tables relocate makes while a process is frozen"},
	},
}

// addExamples sets the EXAMPLES of --help and the man pages.
func addExamples(root *cobra.Command) {
	root.Example = `  relocate 4242 db2.example.org          # move pid 4242 and its children
  relocate 4242 -J bastion db2            # through a jump host
  relocate 4242 db2 --hook post-restore='ip addr add 10.0.0.5/24 dev eth0'
  relocate check db2 --pid 4242           # would it work? nothing is frozen
  relocate 4242 db2 -v --log-file /var/log/relocate.log`
	examples := map[string]string{
		"dump": `  relocate dump 4242 -o job.img              # checkpoint and kill
  relocate dump 4242 -o job.img --leave-running
  relocate dump 4242 -o - | ssh db2 relocate restore -`,
		"restore": `  relocate restore job.img
  relocate restore --pidns job.img           # when its PIDs are taken here`,
		"inspect": `  relocate inspect job.img
  relocate inspect job.img --json | jq '.processes[].mappings | length'`,
		"check": `  relocate check                             # this machine
  relocate check db2 --pid 4242              # a target, for this tree`,
	}
	for _, c := range root.Commands() {
		if e, ok := examples[c.Name()]; ok && c.Example == "" {
			c.Example = e
		}
	}
}
