package testscripts

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The import rules of DESIGN.md ("Layout"), checked over what the Go tool
// says the packages depend on, tests included: arrows point one way,
// main -> cmd -> transfer -> ckpt -> {sock, image, proc, ptrace, mem}, and
// those five import nothing of ours. testscripts drives the binary from
// outside and may use anything; nothing may import it.

const module = "github.com/relocate/relocate"

// layer ranks our packages: a package may depend only on packages of a
// higher rank.
var layer = map[string]int{
	"":            0, // main
	"cmd":         1,
	"transfer":    2,
	"ckpt":        3,
	"sock":        4,
	"ckpt/image":  4,
	"ckpt/proc":   4,
	"ckpt/ptrace": 4,
	"ckpt/mem":    4,
}

// free are packages outside the layering.
var free = map[string]bool{"testscripts": true, "testscripts/workloads/goticker": true, "testscripts/release": true, "testscripts/vm": true, "testscripts/vm/vmrun": true}

// layerViolations lists the dependencies in deps (package -> the packages
// it depends on, by path below the module) that break the rules.
func layerViolations(deps map[string][]string) []string {
	var bad []string
	for pkg, ds := range deps {
		if free[pkg] {
			continue
		}
		from, known := layer[pkg]
		if !known {
			bad = append(bad, "package "+show(pkg)+" has no place in DESIGN's layering (add it to layering_test.go and DESIGN)")
			continue
		}
		for _, d := range ds {
			if d == pkg {
				continue
			}
			to, known := layer[d]
			switch {
			case free[d]:
				bad = append(bad, show(pkg)+" depends on "+show(d)+", which nothing may import")
			case !known:
				bad = append(bad, show(pkg)+" depends on "+show(d)+", which has no place in the layering")
			case to <= from:
				bad = append(bad, show(pkg)+" depends on "+show(d)+": arrows point one way, main -> cmd -> transfer -> ckpt -> {sock, image, proc, ptrace, mem}, and those import nothing of ours")
			}
		}
	}
	slices.Sort(bad)
	return bad
}

func show(rel string) string {
	if rel == "" {
		return module
	}
	return rel
}

// goListDeps asks the Go tool (one go list -deps -test) for each package's
// dependencies among ours, its tests' included, by path below the module.
func goListDeps(t *testing.T) map[string][]string {
	t.Helper()
	list := exec.Command("go", "list", "-test", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}", "./...")
	list.Dir = ".." // the module's root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	ours := func(p string) (string, bool) {
		if p != module && !strings.HasPrefix(p, module+"/") {
			return "", false
		}
		return strings.TrimPrefix(strings.TrimPrefix(p, module), "/"), true
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, list, _ := strings.Cut(line, "|")
		// A test variant is "pkg [pkg.test]"; the test main "pkg.test"
		// imports the package's tests, which are listed themselves.
		name, _, _ = strings.Cut(name, " ")
		if strings.HasSuffix(name, ".test") {
			continue
		}
		rel, ok := ours(strings.TrimSuffix(name, "_test"))
		if !ok {
			continue
		}
		if _, seen := deps[rel]; !seen {
			deps[rel] = nil
		}
		for _, d := range strings.Fields(list) {
			d, _, _ = strings.Cut(d, " ")
			dr, ok := ours(d)
			if ok && dr != rel && !slices.Contains(deps[rel], dr) {
				deps[rel] = append(deps[rel], dr)
			}
		}
	}
	return deps
}

func TestImportLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go tool is not on PATH")
	}
	deps := goListDeps(t)
	for _, want := range []string{"cmd", "transfer", "ckpt", "sock", "ckpt/image"} {
		if _, ok := deps[want]; !ok {
			t.Fatalf("go list did not list %s: %v", want, deps)
		}
	}
	for _, v := range layerViolations(deps) {
		t.Error(v)
	}
}

// TestLayerViolationsSeesThem is the control: upward and sideways arrows,
// an unknown package and an import of the test harness are all reported.
func TestLayerViolationsSeesThem(t *testing.T) {
	got := layerViolations(map[string][]string{
		"ckpt":       {"transfer", "sock"},
		"ckpt/image": {"ckpt/proc"},
		"sock":       {"ckpt"},
		"transfer":   {"cmd", "ckpt"},
		"cmd":        {"testscripts", "ckpt/new"},
		"newpkg":     nil,
	})
	want := []string{
		"ckpt depends on transfer",
		"ckpt/image depends on ckpt/proc",
		"sock depends on ckpt",
		"transfer depends on cmd",
		"cmd depends on testscripts",
		"cmd depends on ckpt/new",
		"package newpkg has no place",
	}
	if len(got) != len(want) {
		t.Errorf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("not reported: %s", w)
		}
	}
	if v := layerViolations(map[string][]string{"cmd": {"transfer", "ckpt", "sock"}, "ckpt": {"sock", "ckpt/image"}}); len(v) != 0 {
		t.Errorf("downward arrows reported: %v", v)
	}
}
