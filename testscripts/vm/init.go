package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Init is the guest's /init (pid 1 in the initramfs): it mounts the root
// (see the package doc), runs the command, records its status and reboots.
// It never returns.
func Init() {
	fmt.Println(upLine)
	status, err := guest()
	if err != nil {
		fmt.Printf("vminit: error: %v\n", err)
	} else {
		fmt.Printf("vminit: exit status %d\n", status)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour)
	}
}

func guest() (int, error) {
	for _, m := range []struct{ src, dst, fs string }{
		{"dev", "/dev", "devtmpfs"}, {"proc", "/proc", "proc"}, {"sys", "/sys", "sysfs"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return 0, fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	b, err := os.ReadFile("/vm.json")
	if err != nil {
		return 0, err
	}
	var cfg GuestConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 0, fmt.Errorf("/vm.json: %w", err)
	}
	mods, _ := filepath.Glob("/modules/*")
	for _, m := range mods {
		if err := loadModule(m); err != nil {
			return 0, err
		}
	}
	opts9p := "trans=virtio,version=9p2000.L,msize=262144"
	if err := unix.Mount("hostroot", "/lower", "9p", unix.MS_RDONLY, opts9p+",cache=loose"); err != nil {
		return 0, fmt.Errorf("mount the host's root over 9p: %w", err)
	}
	if err := unix.Mount("upper", "/upper", "tmpfs", 0, "mode=0755"); err != nil {
		return 0, err
	}
	for _, d := range []string{"/upper/u", "/upper/w"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return 0, err
		}
	}
	if err := unix.Mount("root", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w"); err != nil {
		return 0, fmt.Errorf("mount the overlay root: %w", err)
	}
	r := func(p string) string { return filepath.Join("/newroot", p) }
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"proc", "/proc", "proc", 0, ""},
		{"sys", "/sys", "sysfs", 0, ""},
		{"dev", "/dev", "devtmpfs", 0, ""},
		{"devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666,mode=0620"},
		{"shm", "/dev/shm", "tmpfs", 0, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""},
		{"tmp", "/tmp", "tmpfs", 0, "mode=1777"},
		{"run", "/run", "tmpfs", 0, "mode=0755"},
	} {
		if err := os.MkdirAll(r(m.dst), 0o755); err != nil {
			return 0, err
		}
		if err := unix.Mount(m.src, r(m.dst), m.fs, m.flags, m.data); err != nil {
			return 0, fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err)
		}
	}
	modDir := r(filepath.Join("/lib/modules", cfg.Release))
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return 0, err
	}
	if err := unix.Mount(r(cfg.Modules), modDir, "", unix.MS_BIND, ""); err != nil {
		return 0, fmt.Errorf("bind the modules: %w", err)
	}
	if err := os.MkdirAll(r(cfg.Share), 0o755); err != nil {
		return 0, err
	}
	if err := unix.Mount("share", r(cfg.Share), "9p", 0, opts9p); err != nil {
		return 0, fmt.Errorf("mount the share %s: %w", cfg.Share, err)
	}
	if err := os.Chdir("/newroot"); err != nil {
		return 0, err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return 0, fmt.Errorf("move the new root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return 0, err
	}
	if err := os.Chdir("/"); err != nil {
		return 0, err
	}
	unix.Sethostname([]byte("vm"))
	if err := loUp(); err != nil {
		return 0, err
	}
	status, err := run(cfg)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Share, ".vm-status"), []byte(strconv.Itoa(status)+"\n"), 0o644); err != nil {
		return 0, err
	}
	return status, nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// run starts the command and reaps every process until it exits (pid 1
// inherits the orphans), then kills what is left.
func run(cfg GuestConfig) (int, error) {
	if len(cfg.Args) == 0 {
		return 0, errors.New("no command")
	}
	env := cfg.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "PATH" {
			os.Setenv("PATH", v) // exec.Command looks the command up in our own PATH
		}
	}
	cmd := exec.Command(cfg.Args[0], cfg.Args[1:]...)
	cmd.Env = env
	cmd.Dir = cfg.Dir
	if _, err := os.Stat(cmd.Dir); cmd.Dir == "" || err != nil {
		// No directory asked for, or one the guest's fresh /tmp or /run
		// hides (a checkout under /tmp): the share, else /.
		cmd.Dir = "/"
		if cfg.Share != "" {
			cmd.Dir = cfg.Share
		}
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	status := -1
	for status < 0 {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait: %w", err)
		}
		if pid == cmd.Process.Pid && (ws.Exited() || ws.Signaled()) {
			status = ws.ExitStatus()
			if ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
		}
	}
	unix.Kill(-1, unix.SIGKILL)
	for {
		if _, err := unix.Wait4(-1, nil, 0, nil); err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return status, nil
}
