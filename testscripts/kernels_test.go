package testscripts

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/testscripts/vm"
)

// matrixAreas is the subset of the scripts the kernel matrix runs on each
// kernel: one per area of the engine.
var matrixAreas = []struct{ area, script string }{
	{"memory", "memory"},
	{"pre-copy to a file (soft-dirty where PAGEMAP_SCAN is missing)", "precopy_file"},
	{"threads", "threads"},
	{"signals, itimer, POSIX timer ids", "signals"},
	{"eventfd, epoll, timerfd, signalfd", "events"},
	{"files", "files"},
	{"pipes, process tree", "pipeline"},
	{"tree", "tree"},
	{"unix socketpairs", "unixpair"},
	{"UDP queue", "udp_queue"},
	{"TCP established, with its peer", "tcp_established"},
	{"python interpreter (a syslog client)", "syslog_client"},
}

// matrixRefusals: on a kernel series, a script that must fail because
// relocate refuses, with the refusal its `relocate: error:` line must match.
// Everything else must pass.
var matrixRefusals = map[string]map[string]*regexp.Regexp{}

// matrixKernels are the Debian kernel series of the matrix; RELOCATE_KERNELS
// ("6.1,6.12") picks some, as RELOCATE_MATRIX_SCRIPTS ("memory,tree") picks
// some of matrixAreas.
func matrixKernels() []string {
	if s := os.Getenv("RELOCATE_KERNELS"); s != "" {
		return strings.Split(s, ",")
	}
	return []string{"6.1", "6.12"}
}

// guestShare skips (fails under CI) where the guests cannot run, and
// returns a directory for the guest to share with the workloads built
// into it (share/workloads).
func guestShare(t *testing.T, what string) (share, wl string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if inCI() {
			t.Fatalf("CI must run as root: %s may not skip", what)
		}
		t.Skip("needs root (the scripts need it, and QEMU's 9p export of /)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if inCI() {
			t.Fatal("qemu-system-x86_64 is missing (ci.sh installs qemu-system-x86)")
		}
		t.Skip("qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
	}
	share = t.TempDir()
	// -L: the Python workloads are symbolic links into the checkout, which
	// the guest may not see (its /tmp is a fresh tmpfs).
	wl = filepath.Join(share, "workloads")
	if out, err := exec.Command("cp", "-aL", buildWorkloads(t), wl).CombinedOutput(); err != nil {
		t.Fatalf("cp workloads: %v\n%s", err, out)
	}
	return share, wl
}

// TestKernelMatrix boots each kernel of the matrix in QEMU (testscripts/vm:
// Debian's package, this machine's root file system read-only under a
// tmpfs overlay) and runs matrixAreas there with this very test binary,
// then reports kernel x area. It is slow (TCG here: a few minutes per
// kernel), so ci.sh runs it beside the fuzzers. RELOCATE_MATRIX_OUT=FILE
// writes the matrix as a Markdown table.
func TestKernelMatrix(t *testing.T) {
	share, wl := guestShare(t, "the kernel matrix")
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
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// The guest mounts fresh tmpfs on /tmp and /run, which would hide a
	// checkout there (a CI clone in /tmp): it runs from a copy of this
	// package's directory in the share.
	pkgDir := filepath.Join(share, "pkg")
	if out, err := exec.Command("cp", "-a", here, pkgDir).CombinedOutput(); err != nil {
		t.Fatalf("cp package: %v\n%s", err, out)
	}
	areas := matrixAreas
	if only := os.Getenv("RELOCATE_MATRIX_SCRIPTS"); only != "" {
		areas = nil
		for _, a := range matrixAreas {
			if strings.Contains(","+only+",", ","+a.script+",") {
				areas = append(areas, a)
			}
		}
		if len(areas) == 0 {
			t.Fatalf("RELOCATE_MATRIX_SCRIPTS=%s names none of the matrix's scripts", only)
		}
	}
	var scripts []string
	for _, a := range areas {
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
		guest := fmt.Sprintf("%s check >%s/check.txt 2>&1; %s -test.run '%s' -test.v -test.count=1 -test.timeout 12m >%s/test.txt 2>&1",
			relocate, out, testBin, run, out)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
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
		for _, a := range areas {
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
	for _, a := range areas {
		md.WriteString(" " + a.area + " |")
	}
	md.WriteString("\n|---|" + strings.Repeat("---|", len(areas)) + "\n")
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

// imagesGuest is the shell the guests of TestKernelImages run: ask asks
// the workload in DIR for its verdict (the self-check protocol), and every
// restored process gets a PID above the guest's own (pid_max raised,
// ns_last_pid moved on), so the next guest has it free.
const imagesGuest = `set -u
echo 4194304 >/proc/sys/kernel/pid_max
ask() { rm -f $1/verdict; : >$1/check; i=0; while [ ! -e $1/verdict ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; cat $1/verdict 2>/dev/null || echo "FAIL no verdict"; }
cd "$SHARE"
`

// TestKernelImages carries a Go program (goticker: its runtime calls
// clock_gettime through the vDSO all the time, from pointers it looked up
// at start) across kernels in image files: started and dumped in a 6.1
// guest, restored, checked and dumped again in a 6.12 guest, restored and
// checked in a 6.1 guest. The two kernels' vDSOs differ, so both restores
// go through the vDSO proxy. The first guest also restores an image dumped
// on this host: it must either come back intact or be refused in one line
// because the guest's CPU (TCG, unless KVM works) lacks features of this one.
func TestKernelImages(t *testing.T) {
	share, wl := guestShare(t, "the kernel images test")
	relocate := filepath.Join(share, "relocate")
	build := exec.Command("go", "build", "-o", relocate, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build relocate: %v\n%s", err, out)
	}
	// Descriptors this test inherited must not leak into the counter (as
	// in TestScripts).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	// On this host: a counter, dumped.
	if err := os.Mkdir(filepath.Join(share, "hst"), 0o755); err != nil {
		t.Fatal(err)
	}
	counter := exec.Command(filepath.Join(wl, "counter"), filepath.Join(share, "hst"))
	counter.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := counter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counter.Process.Kill() })
	if !waitFor(defaultWait, func() bool { return len(readOrNil(filepath.Join(share, "hst", "ready"))) > 0 }) {
		t.Fatal("counter did not get ready")
	}
	go counter.Wait() // relocate dump kills it; reap it
	if out, err := exec.Command(relocate, "dump", strconv.Itoa(counter.Process.Pid), "-o", filepath.Join(share, "host.img"), "--quiet").CombinedOutput(); err != nil {
		t.Fatalf("dump on this host: %v\n%s", err, out)
	}
	// goticker is restored with --timens: each guest boots afresh, and in
	// the guest's own clocks CLOCK_MONOTONIC may be behind the image's, which
	// stalls the Go runtime's timers until it catches up (seen: "ticker
	// goroutine stopped" when a later guest had booted faster).
	boots := []struct{ series, script string }{
		{"6.1", `
out=$(` + relocate + ` restore --quiet host.img 2>&1); echo "$out" >host-restore.txt
case "$out" in *"relocate: error"*) ;; *) ask hst >host-verdict.txt ;; esac
mkdir st; echo 300000 >/proc/sys/kernel/ns_last_pid
setsid ` + wl + `/goticker st >st/log 2>&1 </dev/null &
i=0; while [ ! -s st/ready ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
ask st >verdict-0.txt
` + relocate + ` dump --quiet $(sed -n 's/^pid=//p' st/ready) -o a.img
`},
		{"6.12", `
` + relocate + ` restore --quiet --timens a.img
ask st >verdict-1.txt
` + relocate + ` dump --quiet $(sed -n 's/^pid=//p' st/ready) -o b.img
`},
		{"6.1", `
` + relocate + ` restore --quiet --timens b.img
ask st >verdict-2.txt
`},
	}
	for i, b := range boots {
		k, err := vm.Fetch(vm.X86_64, b.series)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		var console strings.Builder
		res, err := vm.Run(ctx, vm.Config{Kernel: k, Share: share, Console: &console,
			Args: []string{"/bin/sh", "-c", imagesGuest + b.script},
			Env:  []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SHARE=" + share}})
		cancel()
		if err != nil || res.Status != 0 {
			t.Fatalf("guest %d (%s): status %d, %v\n%s", i, k.Release, res.Status, err, tail([]byte(console.String()), 40))
		}
		verdict := strings.TrimSpace(string(readOrNil(filepath.Join(share, fmt.Sprintf("verdict-%d.txt", i)))))
		if !strings.HasPrefix(verdict, "OK") {
			t.Fatalf("goticker in guest %d (%s): %q\n%s", i, k.Release, verdict, tail([]byte(console.String()), 40))
		}
		t.Logf("guest %d (%s, %s): goticker %s", i, k.Release, res.Accel, verdict)
		if i == 0 {
			hostOut := strings.TrimSpace(string(readOrNil(filepath.Join(share, "host-restore.txt"))))
			hostVerdict := strings.TrimSpace(string(readOrNil(filepath.Join(share, "host-verdict.txt"))))
			switch {
			case strings.HasPrefix(hostVerdict, "OK"):
				t.Logf("an image from this host restored on %s: %s", k.Release, hostVerdict)
			case strings.Count(hostOut, "relocate: error:") == 1 && strings.Contains(hostOut, "this CPU lacks features"):
				t.Logf("an image from this host on %s (%s): refused: %s", k.Release, res.Accel, hostOut)
			default:
				t.Errorf("an image from this host on %s: restore said %q, verdict %q", k.Release, hostOut, hostVerdict)
			}
		}
	}
}
