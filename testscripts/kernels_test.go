package testscripts

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relocate/relocate/testscripts/vm"
)

// matrixAreas is the subset of the scripts the kernel matrix runs on each
// kernel: one per area of the engine.
var matrixAreas = []struct{ area, script string }{
	{"memory", "memory"},
	{"threads", "threads"},
	{"signals, itimer, POSIX timer ids", "signals"},
	{"eventfd, epoll, timerfd, signalfd", "events"},
	{"files", "files"},
	{"pipes, process tree", "pipeline"},
	{"tree", "tree"},
	{"unix socketpairs", "unixpair"},
	{"UDP queue", "udp_queue"},
	{"TCP established, with its peer", "tcp_established"},
	{"python interpreter", "python"},
}

// matrixRefusals: on a kernel series, a script that must fail because
// relocate refuses, with the refusal its `relocate: error:` line must match.
// Everything else must pass.
var matrixRefusals = map[string]map[string]*regexp.Regexp{}

// matrixKernels are the Debian kernel series of the matrix; RELOCATE_KERNELS
// ("6.1,6.12") picks some.
func matrixKernels() []string {
	if s := os.Getenv("RELOCATE_KERNELS"); s != "" {
		return strings.Split(s, ",")
	}
	return []string{"6.1", "6.12"}
}

// TestKernelMatrix boots each kernel of the matrix in QEMU (testscripts/vm:
// Debian's package, this machine's root file system read-only under a
// tmpfs overlay) and runs matrixAreas there with this very test binary,
// then reports kernel x area. It is slow (TCG here: a few minutes per
// kernel), so ci.sh runs it beside the fuzzers. RELOCATE_MATRIX_OUT=FILE
// writes the matrix as a Markdown table.
func TestKernelMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		if inCI() {
			t.Fatal("CI must run as root: the kernel matrix may not skip")
		}
		t.Skip("needs root (the scripts need it, and QEMU's 9p export of /)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if inCI() {
			t.Fatal("qemu-system-x86_64 is missing (ci.sh installs qemu-system-x86)")
		}
		t.Skip("qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
	}
	share := t.TempDir()
	wl := filepath.Join(share, "workloads")
	if out, err := exec.Command("cp", "-a", buildWorkloads(t), wl).CombinedOutput(); err != nil {
		t.Fatalf("cp workloads: %v\n%s", err, out)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testBin := filepath.Join(share, "testscripts.test")
	if out, err := exec.Command("cp", exe, testBin).CombinedOutput(); err != nil {
		t.Fatalf("cp test binary: %v\n%s", err, out)
	}
	relocate := filepath.Join(share, "relocate")
	build := exec.Command("go", "build", "-o", relocate, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build relocate: %v\n%s", err, out)
	}
	pkgDir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var scripts []string
	for _, a := range matrixAreas {
		scripts = append(scripts, a.script)
	}
	run := "^TestScripts$/^(" + strings.Join(scripts, "|") + ")$"

	table := [][]string{}
	for _, series := range matrixKernels() {
		k, err := vm.Fetch(vm.X86_64, series)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(share, series)
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		guest := fmt.Sprintf("%s check >%s/check.txt 2>&1; %s -test.run '%s' -test.v -test.count=1 -test.timeout 20m >%s/test.txt 2>&1",
			relocate, out, testBin, run, out)
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		console, err := os.Create(filepath.Join(out, "console.txt"))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := vm.Run(ctx, vm.Config{
			Kernel: k, Share: share, Dir: pkgDir, Console: console,
			Args: []string{"/bin/sh", "-c", guest},
			// The system's directories first: a version manager's shims
			// (pyenv's python3 is a bash script) take seconds per start
			// under TCG.
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + os.Getenv("PATH"),
				"HOME=" + os.Getenv("HOME"), "CI=true", "RELOCATE_WAIT_SCALE=10",
				"TMPDIR=/tmp", "RELOCATE_WORKLOADS=" + wl},
		})
		cancel()
		console.Close()
		took := time.Since(start).Round(time.Second)
		if err != nil {
			con, _ := os.ReadFile(filepath.Join(out, "console.txt"))
			t.Fatalf("%s: %v\nconsole:\n%s", k.Release, err, tail(con, 40))
		}
		t.Logf("%s (%s): tests exit %d after %s", k.Release, res.Accel, res.Status, took)
		check, _ := os.ReadFile(filepath.Join(out, "check.txt"))
		t.Logf("relocate check on %s:\n%s", k.Release, check)
		results := parseSubtests(filepath.Join(out, "test.txt"))
		row := []string{series + " (" + k.Release + ")"}
		for _, a := range matrixAreas {
			r, ok := results[a.script]
			refusal := matrixRefusals[series][a.script]
			cell := "pass"
			switch {
			case !ok:
				cell = "no result"
				t.Errorf("%s on %s: no result (test binary exit %d)\n%s", a.script, k.Release, res.Status, tail(readOrNil(filepath.Join(out, "test.txt")), 30))
			case r.verdict == "PASS" && refusal != nil:
				t.Errorf("%s on %s passed; the matrix expects a refusal matching %q", a.script, k.Release, refusal)
			case r.verdict == "PASS":
			case refusal != nil && refusal.MatchString(r.refusal):
				cell = "refused: " + strings.TrimPrefix(r.refusal, "relocate: error: ")
			default:
				cell = strings.ToLower(r.verdict)
				if r.refusal != "" {
					cell += ": " + strings.TrimPrefix(r.refusal, "relocate: error: ")
				}
				t.Errorf("%s on %s: %s\n%s", a.script, k.Release, r.verdict, strings.Join(r.log, "\n"))
			}
			row = append(row, cell)
		}
		table = append(table, row)
	}
	var md strings.Builder
	md.WriteString("| kernel |")
	for _, a := range matrixAreas {
		md.WriteString(" " + a.area + " |")
	}
	md.WriteString("\n|---|" + strings.Repeat("---|", len(matrixAreas)) + "\n")
	for _, row := range table {
		md.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	t.Logf("kernel matrix:\n%s", md.String())
	if f := os.Getenv("RELOCATE_MATRIX_OUT"); f != "" {
		if err := os.WriteFile(f, []byte(md.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

type subtest struct {
	verdict string   // PASS, FAIL, SKIP
	refusal string   // the first relocate: error: line of its log
	log     []string // its log lines
}

// parseSubtests reads `-test.v` output, where a subtest's log lines follow
// "=== RUN/CONT/NAME  TestScripts/NAME" headers and its verdict is
// "--- PASS: TestScripts/NAME (..)".
func parseSubtests(path string) map[string]*subtest {
	out := map[string]*subtest{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	get := func(name string) *subtest {
		if out[name] == nil {
			out[name] = &subtest{}
		}
		return out[name]
	}
	header := regexp.MustCompile(`^=== (?:RUN|CONT|NAME|PAUSE)\s+TestScripts/(\S+)`)
	verdict := regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): TestScripts/(\S+)`)
	var cur *subtest
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := header.FindStringSubmatch(line); m != nil {
			cur = get(m[1])
			continue
		}
		if m := verdict.FindStringSubmatch(line); m != nil {
			cur = get(m[2])
			cur.verdict = m[1]
			continue
		}
		if cur == nil || strings.HasPrefix(line, "===") {
			cur = nil
			continue
		}
		cur.log = append(cur.log, line)
		if i := strings.Index(line, "relocate: error: "); i >= 0 && cur.refusal == "" {
			cur.refusal = strings.TrimSpace(line[i:])
		}
	}
	for name, st := range out {
		if st.verdict == "" {
			delete(out, name)
		}
	}
	return out
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
