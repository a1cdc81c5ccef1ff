package transfer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// HostAliases lists the Host names of the ssh_config files (-F FILE, else
// the user's and the system's, with their Includes) that name one host:
// patterns with * or ? and negations are left out. For shell completion;
// unreadable files are skipped.
func HostAliases(configFile string) []string {
	me := currentAccount()
	seen := map[string]bool{}
	var names []string
	var read func(path string, user bool, depth int)
	read = func(path string, user bool, depth int) {
		data, err := os.ReadFile(path)
		if err != nil || depth > maxIncludeDepth {
			return
		}
		for _, text := range strings.Split(string(data), "\n") {
			line, err := splitConfigLine(text)
			if err != nil || len(line) < 2 {
				continue
			}
			switch strings.ToLower(line[0]) {
			case "host":
				for _, h := range line[1:] {
					if strings.ContainsAny(h, "*?!") || seen[h] {
						continue
					}
					seen[h] = true
					names = append(names, h)
				}
			case "include":
				for _, a := range line[1:] {
					p, err := expandTilde(a, me.home)
					if err != nil {
						continue
					}
					if !filepath.IsAbs(p) {
						dir := "/etc/ssh"
						if user {
							dir = filepath.Join(me.home, ".ssh")
						}
						p = filepath.Join(dir, p)
					}
					matches, _ := filepath.Glob(p)
					for _, m := range matches {
						read(m, user, depth+1)
					}
				}
			}
		}
	}
	for _, f := range sshConfigFiles(configFile, me.home, defaultSystemFiles()) {
		read(f.path, f.user, 0)
	}
	slices.Sort(names)
	return names
}
