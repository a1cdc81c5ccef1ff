package release

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestReleaseArchive builds a release archive with testscripts/release/release.sh (what
// .goreleaser.yaml does) and checks what a user unpacks: a static binary
// stamped with the version, which -V and version print alike; man pages
// with EXIT STATUS, EXAMPLES and FILES; completions for three shells; the
// README. It also checks .goreleaser.yaml builds the same way.
func TestReleaseArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("builds relocate with -trimpath (a full build)")
	}
	out := t.TempDir()
	const version = "9.8.7-test"
	cmd := exec.Command("bash", "release.sh", "archives", version, out, "amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	name := "relocate_" + version + "_linux_amd64"
	files := untar(t, filepath.Join(out, name+".tar.gz"), t.TempDir())
	sums, err := os.ReadFile(filepath.Join(out, "checksums.txt"))
	if err != nil || !strings.Contains(string(sums), name+".tar.gz") {
		t.Errorf("checksums.txt does not list the archive: %v %q", err, sums)
	}
	for _, want := range []string{"relocate", "README.md", "man/relocate.1", "man/relocate-dump.1",
		"man/relocate-unlock.1", "completions/relocate.bash", "completions/_relocate", "completions/relocate.fish"} {
		if _, ok := files[name+"/"+want]; !ok {
			t.Errorf("the archive lacks %s", want)
		}
	}
	root := filepath.Dir(files[name+"/relocate"])
	bin := filepath.Join(root, "relocate")

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked (it has an ELF interpreter)")
		}
	}
	f.Close()

	v1, err := exec.Command(bin, "-V").Output()
	if err != nil {
		t.Fatal(err)
	}
	v2, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(v1) != string(v2) || !strings.HasPrefix(string(v1), "relocate "+version+" (commit ") {
		t.Errorf("-V says %q, version %q; want both \"relocate %s (commit ...\"", v1, v2, version)
	}

	for _, page := range []string{"relocate.1", "relocate-dump.1", "relocate-restore.1", "relocate-unlock.1"} {
		text, err := os.ReadFile(filepath.Join(root, "man", page))
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range []string{".SH EXIT STATUS", ".SH EXAMPLES", ".SH FILES", ".SH SEE ALSO"} {
			if !strings.Contains(string(text), sec+"\n") {
				t.Errorf("%s has no %s section", page, sec)
			}
		}
		if !strings.Contains(string(text), `"relocate `+version+`"`) {
			t.Errorf("%s does not carry the version %s", page, version)
		}
	}
	bash, _ := os.ReadFile(filepath.Join(root, "completions", "relocate.bash"))
	if !strings.Contains(string(bash), "__start_relocate") {
		t.Error("the bash completion is not cobra's")
	}

	// .goreleaser.yaml: the same ldflags, both architectures, the same
	// archive contents.
	var cfg struct {
		Before struct{ Hooks []string }
		Builds []struct {
			Env     []string
			Goarch  []string
			Ldflags []string
		}
		Archives []struct {
			Files []any
		}
	}
	y, err := os.ReadFile("../../.goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(y, &cfg); err != nil {
		t.Fatal(err)
	}
	script, _ := os.ReadFile("release.sh")
	flags := regexp.MustCompile(`-s -w -X [^"]*cmd\.Version=\S+ -X [^"]*cmd\.Commit=\S+`)
	if len(cfg.Builds) != 1 || len(cfg.Builds[0].Ldflags) != 1 || !flags.MatchString(cfg.Builds[0].Ldflags[0]) || !flags.Match(script) {
		t.Errorf(".goreleaser.yaml and release.sh do not stamp the same way: %v", cfg.Builds)
	} else {
		sub := func(s string) string { return regexp.MustCompile(`=\S+`).ReplaceAllString(s, "=") }
		if a, b := sub(cfg.Builds[0].Ldflags[0]), sub(flags.FindString(string(script))); a != b {
			t.Errorf("ldflags differ:\n  .goreleaser.yaml %s\n  release.sh       %s", a, b)
		}
	}
	if b := cfg.Builds; len(b) == 1 && (strings.Join(b[0].Goarch, ",") != "amd64,arm64" || !strings.Contains(strings.Join(b[0].Env, " "), "CGO_ENABLED=0")) {
		t.Errorf(".goreleaser.yaml builds %v with %v; want amd64,arm64 with CGO_ENABLED=0", b[0].Goarch, b[0].Env)
	}
	if !strings.Contains(strings.Join(cfg.Before.Hooks, "\n"), "testscripts/release/release.sh extras") {
		t.Error(".goreleaser.yaml does not make the extras with release.sh")
	}
	if len(cfg.Archives) != 1 || len(cfg.Archives[0].Files) != 3 {
		t.Errorf(".goreleaser.yaml archives %v; want README.md, man and completions", cfg.Archives)
	}
	if g, err := exec.LookPath("goreleaser"); err == nil {
		c := exec.Command(g, "check")
		c.Dir = "../.."
		if b, err := c.CombinedOutput(); err != nil {
			t.Errorf("goreleaser check: %v\n%s", err, b)
		}
	}
}

// untar unpacks a .tar.gz into dir and returns its regular files by name
// (path on disk as value).
func untar(t *testing.T, archive, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "..") {
			continue
		}
		p := filepath.Join(dir, h.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode)&0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		w.Close()
		files[h.Name] = p
	}
}
