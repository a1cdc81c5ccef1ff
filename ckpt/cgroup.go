package ckpt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Cgroup is a process's cgroup v2 membership: the path under the cgroup2
// mount, the controllers enabled there, and the limits that were set.
// Restore puts the process back into the same path (created if missing,
// under RestoreOptions.CgroupRoot if given), instead of leaving it in
// relocate's own cgroup (on a migration target, root's SSH session, whose
// end would kill it).
type Cgroup struct {
	Path        string            `json:"path"`
	Controllers []string          `json:"controllers,omitempty"`
	Limits      map[string]string `json:"limits,omitempty"`
}

// cgroupLimits are the interface files whose values are carried.
var cgroupLimits = []string{"memory.max", "memory.high", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight", "io.weight"}

// cgroup2Mount is where the cgroup v2 hierarchy is mounted here ("" if
// nowhere): /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 && fields[3] == "/" {
				return fields[4]
			}
		}
	}
	return ""
}

// readCgroup returns the cgroup v2 membership in a /proc/PID/cgroup file,
// with the controllers and limits of that cgroup under mnt.
func readCgroup(b []byte, mnt string) *Cgroup {
	for _, line := range strings.Split(string(b), "\n") {
		path, ok := strings.CutPrefix(line, "0::")
		if !ok || !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
			continue
		}
		cg := &Cgroup{Path: path}
		if mnt == "" {
			return cg
		}
		dir := filepath.Join(mnt, path)
		if c, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers")); err == nil {
			cg.Controllers = strings.Fields(string(c))
		}
		for _, name := range cgroupLimits {
			if v, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				if cg.Limits == nil {
					cg.Limits = map[string]string{}
				}
				cg.Limits[name] = strings.TrimSpace(string(v))
			}
		}
		return cg
	}
	return nil
}

// cgroupRel checks a cgroup path from an image: absolute, clean, no ".."
// and no component that is a cgroup interface file name.
func cgroupRel(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || len(p) > 4096 {
		return nil, fmt.Errorf("cgroup path %q is not a clean absolute path", p)
	}
	var parts []string
	for _, c := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if c == "" {
			continue
		}
		if c == "." || c == ".." || strings.HasPrefix(c, "cgroup.") {
			return nil, fmt.Errorf("cgroup path %q has a component %q", p, c)
		}
		parts = append(parts, c)
	}
	return parts, nil
}

// cgroupJoin moves the restored processes into their cgroups on another
// goroutine: a move waits for an RCU grace period (10-15 ms here), which
// then passes while their memory and files are restored instead of
// adding to the freeze.
type cgroupJoin struct {
	done     chan struct{}
	warnings []string
	err      error
}

// startCgroupJoin starts moving the processes of sh.order (created, not
// yet resumed) into their cgroups, in order.
func (sh *shared) startCgroupJoin() *cgroupJoin {
	j := &cgroupJoin{done: make(chan struct{})}
	procs := slices.Clone(sh.order)
	go func() {
		defer close(j.done)
		for _, rs := range procs {
			w, err := rs.joinCgroup()
			j.warnings = append(j.warnings, w...)
			if err != nil {
				j.err = err
				return
			}
		}
	}()
	return j
}

// wait waits for the moves and returns the first error.
func (j *cgroupJoin) wait() error {
	<-j.done
	return j.err
}

// joinCgroup moves the restored process into its cgroup, creating the
// path if missing (with the controllers it had enabled, and its limits);
// what cannot be applied is returned as warnings, not failures.
func (rs *restorer) joinCgroup() (warnings []string, err error) {
	cg := rs.p.Cgroup
	if cg == nil {
		return nil, nil
	}
	mnt := cgroup2Mount()
	if mnt == "" {
		return []string{fmt.Sprintf("pid %d: no cgroup v2 hierarchy here; it stays in relocate's cgroup instead of %s", rs.p.PID, cg.Path)}, nil
	}
	var root []string
	if rs.opts.CgroupRoot != "" && rs.opts.CgroupRoot != "/" {
		if root, err = cgroupRel(rs.opts.CgroupRoot); err != nil {
			return nil, err
		}
	}
	rel, err := cgroupRel(cg.Path)
	if err != nil {
		return nil, &ProcessError{PID: rs.p.PID, Err: err}
	}
	parts := append(root, rel...)
	dir, err := unix.Open(mnt, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup2 mount %s: %w", mnt, err)
	}
	created := false
	for _, name := range parts {
		if err := unix.Mkdirat(dir, name, 0o755); err == nil {
			created = true
			// A new cgroup gets the controllers its parent offers; ask
			// the parent for those the process had.
			warnings = append(warnings, enableControllers(dir, cg.Controllers)...)
		} else if !errors.Is(err, unix.EEXIST) {
			unix.Close(dir)
			return nil, fmt.Errorf("cgroup %s: create %s: %w", cg.Path, name, err)
		}
		next, err := unix.Openat2(dir, name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS})
		unix.Close(dir)
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: open %s: %w", cg.Path, name, err)
		}
		dir = next
	}
	defer unix.Close(dir)
	where := "/" + strings.Join(parts, "/")
	if created {
		for _, name := range sortedKeys(cg.Limits) {
			if err := writeCgroupFile(dir, name, cg.Limits[name]); err != nil {
				warnings = append(warnings, fmt.Sprintf("pid %d: cgroup %s: %s %s not applied: %v", rs.p.PID, where, name, cg.Limits[name], err))
			}
		}
	}
	if err := writeCgroupFile(dir, "cgroup.procs", strconv.Itoa(rs.host)); err != nil {
		return warnings, &ProcessError{PID: rs.p.PID, Err: fmt.Errorf("join cgroup %s: %w", where, err)}
	}
	return warnings, nil
}

// enableControllers asks the cgroup at dir to offer its children the
// controllers in want; each one it cannot is a warning.
func enableControllers(dir int, want []string) []string {
	if len(want) == 0 {
		return nil
	}
	var warnings []string
	have, _ := readCgroupFile(dir, "cgroup.subtree_control")
	for _, c := range want {
		if bytes.Contains([]byte(" "+have+" "), []byte(" "+c+" ")) {
			continue
		}
		if err := writeCgroupFile(dir, "cgroup.subtree_control", "+"+c); err != nil {
			warnings = append(warnings, fmt.Sprintf("cgroup controller %s not enabled: %v", c, err))
		}
	}
	return warnings
}

func writeCgroupFile(dir int, name, value string) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(value))
	return err
}

func readCgroupFile(dir int, name string) (string, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	b := make([]byte, 4096)
	n, err := unix.Read(fd, b)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b[:n])), nil
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for _, k := range cgroupLimits {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}
