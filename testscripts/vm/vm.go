// Package vm boots a Debian kernel under QEMU with this machine's root
// file system and runs one command in it: the kernel matrix of the tests.
//
// Usage from a shell (as root; the CLI is testscripts/vm/vmrun):
//
//	go run ./testscripts/vm/vmrun -arch x86_64 -kernel 6.1 -- uname -r
//	go run ./testscripts/vm/vmrun -arch aarch64 -kernel 6.12 -share /tmp/x -- /tmp/x/prog
//
// and from Go: dir, err := vm.Fetch(vm.X86_64, "6.1"); res, err :=
// vm.Run(ctx, vm.Config{Arch: vm.X86_64, Kernel: dir, Args: ...}).
//
// Fetch downloads the kernel package of a Debian release (6.1: bookworm,
// 6.12: trixie) with apt-get into /var/cache/relocate-vm (never
// installing it), unpacks it there with dpkg-deb and runs depmod on the
// unpacked tree. Run builds an initramfs holding a static init (vmrun
// itself, built for the guest's architecture) and the kernel's own 9p,
// virtio and overlay modules, and boots it: the host's / is shared read-only
// over virtio-9p and becomes the guest's root under an overlay whose upper
// layer is a tmpfs (so every path is writable and nothing reaches the
// host), with fresh tmpfs on /tmp and /run, the unpacked modules at
// /lib/modules/RELEASE (the kernel's modprobe finds nf_tables there), lo
// up, and Config.Share (a host directory) mounted read-write at the same
// path. The init runs the command as root, reaps orphans, writes the
// command's exit status to Share/.vm-status and reboots, which ends QEMU
// (-no-reboot). x86_64 tries KVM first and falls back to TCG when the
// guest's init does not speak within a few seconds (nested KVM can stall);
// aarch64 always runs TCG (-M virt -cpu max).
package vm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Arch is a guest architecture, named as QEMU names it.
type Arch string

const (
	X86_64  Arch = "x86_64"
	AArch64 Arch = "aarch64"
)

func (a Arch) debian() (string, error) {
	switch a {
	case X86_64:
		return "amd64", nil
	case AArch64:
		return "arm64", nil
	}
	return "", fmt.Errorf("vm: unknown architecture %q (x86_64, aarch64)", a)
}

func (a Arch) goarch() string {
	if a == AArch64 {
		return "arm64"
	}
	return "amd64"
}

// Releases maps the kernel series we test to the Debian release that ships it.
var Releases = map[string]string{"6.1": "bookworm", "6.12": "trixie"}

// CacheDir holds the downloaded and unpacked kernels, outside any checkout.
var CacheDir = "/var/cache/relocate-vm"

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Arch    Arch
	Series  string // "6.1"
	Release string // uname -r, "6.1.0-41-amd64"
	Image   string // vmlinuz
	Modules string // .../lib/modules/RELEASE, with modules.dep
}

var fetchMu sync.Mutex

// Fetch returns the Debian kernel of series (a key of Releases) for arch,
// downloading and unpacking it into CacheDir the first time.
func Fetch(arch Arch, series string) (*Kernel, error) {
	fetchMu.Lock()
	defer fetchMu.Unlock()
	deb, err := arch.debian()
	if err != nil {
		return nil, err
	}
	suite, ok := Releases[series]
	if !ok {
		return nil, fmt.Errorf("vm: no Debian release for kernel %q", series)
	}
	dir := filepath.Join(CacheDir, suite+"-"+deb)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Another process (a parallel test) may be fetching the same kernel.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("vm: lock %s: %w", dir, err)
	}
	root := filepath.Join(dir, "root")
	if k, err := unpacked(arch, series, root); err == nil {
		return k, nil
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("vm: %s is missing (apt-get install apt dpkg kmod)", tool)
		}
	}
	// A private apt configuration: the host's sources and state are left alone.
	for _, d := range []string{"lists/partial", "cache/archives/partial", "dl"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	sources := filepath.Join(dir, "sources.list")
	line := fmt.Sprintf("deb [arch=%s signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n", deb, suite)
	if err := os.WriteFile(sources, []byte(line), 0o644); err != nil {
		return nil, err
	}
	opts := []string{"-q",
		"-o", "Dir::Etc::SourceList=" + sources, "-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"), "-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "APT::Architecture=" + deb, "-o", "APT::Architectures=" + deb, "-o", "Debug::NoLocking=1",
		"-o", "APT::Sandbox::User=root"}
	if out, err := exec.Command("apt-get", append(opts, "update")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: apt-get update for %s: %v\n%s", suite, err, out)
	}
	// linux-image-amd64 depends on the current linux-image-VERSION-amd64.
	out, err := exec.Command("apt-cache", append(opts, "depends", "linux-image-"+deb)...).Output()
	if err != nil {
		return nil, fmt.Errorf("vm: apt-cache depends linux-image-%s (%s): %v", deb, suite, err)
	}
	pkg := ""
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		return nil, fmt.Errorf("vm: linux-image-%s in %s depends on no kernel package:\n%s", deb, suite, out)
	}
	dl := filepath.Join(dir, "dl")
	cmd := exec.Command("apt-get", append(opts, "download", pkg)...)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("vm: apt-get download %s left no .deb in %s", pkg, dl)
	}
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: dpkg-deb -x %s: %v\n%s", debs[len(debs)-1], err, out)
	}
	k, err := layout(arch, series, tmp)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(k.Modules, filepath.Join("lib", "modules", k.Release))
	if out, err := exec.Command("depmod", "-b", base, k.Release).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: depmod %s: %v\n%s", k.Release, err, out)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return nil, err
	}
	return unpacked(arch, series, root)
}

// unpacked finds a complete unpacked kernel under root.
func unpacked(arch Arch, series, root string) (*Kernel, error) {
	k, err := layout(arch, series, root)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(k.Modules, "modules.dep")); err != nil {
		return nil, err
	}
	return k, nil
}

// layout locates the kernel image and module tree of an unpacked package.
func layout(arch Arch, series, root string) (*Kernel, error) {
	imgs, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(imgs) != 1 {
		return nil, fmt.Errorf("vm: %d kernel images in %s/boot", len(imgs), root)
	}
	rel := strings.TrimPrefix(filepath.Base(imgs[0]), "vmlinuz-")
	mods := filepath.Join(root, "usr", "lib", "modules", rel)
	if _, err := os.Stat(mods); err != nil {
		mods = filepath.Join(root, "lib", "modules", rel)
	}
	if _, err := os.Stat(mods); err != nil {
		return nil, fmt.Errorf("vm: no modules for %s in %s", rel, root)
	}
	return &Kernel{Arch: arch, Series: series, Release: rel, Image: imgs[0], Modules: mods}, nil
}

// GuestConfig is what the init reads from /vm.json in the initramfs.
type GuestConfig struct {
	Release string   // uname -r: where the modules are bound
	Modules string   // the unpacked modules directory, a host path
	Share   string   // host directory mounted read-write at the same path
	Args    []string // the command
	Env     []string
	Dir     string
}

// Config describes one boot.
type Config struct {
	Kernel  *Kernel
	Args    []string // the command to run in the guest, as root
	Env     []string // its environment (PATH=/usr/sbin:/usr/bin:/sbin:/bin if empty)
	Dir     string   // its working directory (/ if empty)
	Share   string   // host directory shared read-write; required (the exit status lands there)
	Memory  string   // QEMU -m (default 1G)
	CPUs    int      // default 2
	Console io.Writer
	NoKVM   bool // TCG even where KVM works
}

// Result of one boot.
type Result struct {
	Status int    // the command's exit status (128+signal if killed)
	Accel  string // "kvm" or "tcg"
}

// ErrNoStatus: the guest ended without reporting the command's status
// (it crashed, did not boot, or the deadline passed).
var ErrNoStatus = errors.New("vm: the guest ended without an exit status")

const upLine = "vminit: up"

// kvmVerdict names the host kernel on which KVM failed to boot a guest.
var kvmVerdict = filepath.Join(CacheDir, "kvm-fails-on")

func hostRelease() string {
	var u syscall.Utsname
	syscall.Uname(&u)
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// Run boots cfg.Kernel, runs cfg.Args and returns its exit status. The
// context's deadline bounds the whole boot.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Share == "" {
		return Result{}, errors.New("vm: Config.Share is required")
	}
	work, err := os.MkdirTemp("", "relocate-vm-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "initrd")
	if err := buildInitramfs(cfg, initrd); err != nil {
		return Result{}, err
	}
	status := filepath.Join(cfg.Share, ".vm-status")
	os.Remove(status)
	accels := []string{"tcg"}
	if cfg.Kernel.Arch == X86_64 && runtime.GOARCH == "amd64" && !cfg.NoKVM && kvmUsable() {
		accels = []string{"kvm", "tcg"}
	}
	for i, accel := range accels {
		fallback := i < len(accels)-1
		up, err := boot(ctx, cfg, accel, initrd, fallback)
		if err != nil {
			return Result{Accel: accel}, err
		}
		if !up && fallback {
			// Remembered for this host kernel: the next boots go straight to TCG.
			os.WriteFile(kvmVerdict, []byte(hostRelease()+"\n"), 0o644)
			continue
		}
		b, err := os.ReadFile(status)
		if err != nil {
			return Result{Accel: accel}, ErrNoStatus
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return Result{Accel: accel}, fmt.Errorf("vm: bad status %q in %s", b, status)
		}
		return Result{Status: n, Accel: accel}, nil
	}
	return Result{}, ErrNoStatus
}

func kvmUsable() bool {
	if b, err := os.ReadFile(kvmVerdict); err == nil && strings.TrimSpace(string(b)) == hostRelease() {
		return false
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// kvmBootWait is how long a KVM guest's init has to speak before TCG is tried.
const kvmBootWait = 20 * time.Second

// boot runs QEMU once. up reports whether the init spoke; with probe set,
// a guest whose init does not speak within kvmBootWait is killed.
func boot(ctx context.Context, cfg Config, accel, initrd string, probe bool) (up bool, err error) {
	cpus := cfg.CPUs
	if cpus <= 0 {
		cpus = 2
	}
	args := []string{"-nodefaults", "-no-reboot", "-nographic", "-display", "none",
		"-m", or(cfg.Memory, "1G"), "-smp", strconv.Itoa(cpus),
		"-kernel", cfg.Kernel.Image, "-initrd", initrd,
		"-serial", "stdio",
		"-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
		"-fsdev", "local,id=share,path=" + cfg.Share + ",security_model=none",
		"-device", "virtio-9p-pci,fsdev=share,mount_tag=share",
		"-device", "virtio-rng-pci",
	}
	append2 := "panic=-1 oops=panic rdinit=/init loglevel=4"
	var bin string
	switch cfg.Kernel.Arch {
	case X86_64:
		bin = "qemu-system-x86_64"
		args = append(args, "-M", "q35", "-append", "console=ttyS0 "+append2)
		if accel == "kvm" {
			args = append(args, "-accel", "kvm", "-cpu", "host")
		} else {
			args = append(args, "-accel", "tcg", "-cpu", "max")
		}
	case AArch64:
		bin = "qemu-system-aarch64"
		args = append(args, "-M", "virt", "-cpu", "max", "-accel", "tcg", "-append", "console=ttyAMA0 "+append2)
	}
	if _, err := exec.LookPath(bin); err != nil {
		return false, fmt.Errorf("vm: %s is missing (apt-get install qemu-system-x86 qemu-system-arm)", bin)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("vm: %s: %w", bin, err)
	}
	upc := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			if cfg.Console != nil {
				fmt.Fprintln(cfg.Console, line)
			}
			if !seen && strings.Contains(line, upLine) {
				seen = true
				close(upc)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait(); pw.Close() }()
	var timer <-chan time.Time
	if probe {
		timer = time.After(kvmBootWait)
	}
	for {
		select {
		case <-upc:
			up, upc, timer = true, nil, nil
		case <-timer:
			cmd.Process.Kill()
			timer = nil
		case err := <-waited:
			<-done
			if ctx.Err() != nil {
				return up, fmt.Errorf("vm: %s (%s) did not finish: %w", cfg.Kernel.Release, accel, ctx.Err())
			}
			if err != nil && up {
				return up, fmt.Errorf("vm: %s: %w", bin, err)
			}
			return up, nil
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// bootModules are what the init needs before it can mount the root; their
// dependencies come from modules.dep.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_rng"}

// initBuilds holds the static vmrun built for each guest architecture,
// once per process (initBinary).
var initBuilds sync.Map // Arch -> *initBuild

type initBuild struct {
	once sync.Once
	path string
	err  error
}

func initBinary(arch Arch) (string, error) {
	v, _ := initBuilds.LoadOrStore(arch, &initBuild{})
	b := v.(*initBuild)
	b.once.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			b.err = errors.New("vm: cannot locate the vmrun source")
			return
		}
		dir, err := os.MkdirTemp("", "relocate-vminit-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "init")
		cmd := exec.Command("go", "build", "-o", b.path, "./vmrun")
		cmd.Dir = filepath.Dir(file)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.goarch())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("vm: go build vmrun for %s: %v\n%s", arch, err, out)
		}
	})
	return b.path, b.err
}

// buildInitramfs writes a newc cpio with /init, /vm.json, /dev/console and
// the boot modules (decompressed, numbered in load order).
func buildInitramfs(cfg Config, out string) error {
	initPath, err := initBinary(cfg.Kernel.Arch)
	if err != nil {
		return err
	}
	mods, err := moduleOrder(cfg.Kernel.Modules, bootModules)
	if err != nil {
		return err
	}
	gc := GuestConfig{Release: cfg.Kernel.Release, Modules: cfg.Kernel.Modules, Share: cfg.Share,
		Args: cfg.Args, Env: cfg.Env, Dir: cfg.Dir}
	js, err := json.Marshal(gc)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &cpio{w: bufio.NewWriter(f)}
	for _, d := range []string{"dev", "proc", "sys", "modules", "lower", "upper", "newroot"} {
		w.dir(d)
	}
	w.node("dev/console", syscall.S_IFCHR|0o600, 5, 1)
	bin, err := os.ReadFile(initPath)
	if err != nil {
		return err
	}
	w.file("init", 0o755, bin)
	w.file("vm.json", 0o644, js)
	for i, m := range mods {
		data, err := readModule(filepath.Join(cfg.Kernel.Modules, m))
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(m), ".xz"), ".zst")
		w.file(fmt.Sprintf("modules/%02d-%s", i, name), 0o644, data)
	}
	w.trailer()
	if w.err != nil {
		return w.err
	}
	if err := w.w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// moduleOrder resolves names (as modprobe names them) through modules.dep
// into relative paths, dependencies first, each once.
func moduleOrder(dir string, names []string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{} // path -> dependency paths
	byName := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		path, rest, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		deps[path] = strings.Fields(rest)
		base := filepath.Base(path)
		base = base[:strings.Index(base, ".ko")]
		byName[strings.ReplaceAll(base, "-", "_")] = path
	}
	builtin, _ := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var visit func(p string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		// modules.dep lists every dependency, transitively, nearest last.
		d := deps[p]
		for i := len(d) - 1; i >= 0; i-- {
			visit(d[i])
		}
		order = append(order, p)
	}
	for _, n := range names {
		p, ok := byName[n]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+n+".ko")) {
				continue
			}
			return nil, fmt.Errorf("vm: module %s is neither in %s/modules.dep nor built in", n, dir)
		}
		visit(p)
	}
	return order, nil
}

// readModule returns a module's bytes, decompressed (finit_module of a
// compressed file needs CONFIG_MODULE_DECOMPRESS, which older kernels lack).
func readModule(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	default:
		return os.ReadFile(path)
	}
	out, err := exec.Command(tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("vm: %s -dc %s: %v", tool, path, err)
	}
	return out, nil
}

// cpio writes the newc format the kernel unpacks into its initramfs.
type cpio struct {
	w   *bufio.Writer
	ino int
	err error
}

func (c *cpio) entry(name string, mode uint32, data []byte, rmaj, rmin int) {
	c.ino++
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad(len(hdr) + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

func (c *cpio) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpio) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpio) dir(name string)                         { c.entry(name, syscall.S_IFDIR|0o755, nil, 0, 0) }
func (c *cpio) file(name string, perm uint32, b []byte) { c.entry(name, syscall.S_IFREG|perm, b, 0, 0) }
func (c *cpio) node(name string, mode uint32, maj, min int) {
	c.entry(name, mode, nil, maj, min)
}
func (c *cpio) trailer() { c.entry("TRAILER!!!", 0, nil, 0, 0) }
