// Command vmrun boots a Debian kernel under QEMU with this machine's root
// file system and runs one command in it (see package vm), as root:
//
//	go run ./testscripts/vm/vmrun [-arch x86_64|aarch64] [-kernel 6.1|6.12] [-share DIR] [-tcg] -- CMD ARGS...
//
// It prints the guest's console on stdout and exits with CMD's status
// (125 when the guest gave none). -share DIR (default: a temporary
// directory) is mounted read-write at the same path in the guest: put
// binaries there and collect results from there. `vmrun -fetch` only
// downloads and unpacks the kernel and prints where. In the initramfs, the
// same binary is the guest's /init.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/relocate/relocate/testscripts/vm"
)

func main() {
	if os.Getpid() == 1 {
		vm.Init()
	}
	os.Exit(run())
}

func run() int {
	arch := flag.String("arch", "x86_64", "guest architecture: x86_64 or aarch64")
	kernel := flag.String("kernel", "6.1", "Debian kernel series: 6.1 (bookworm) or 6.12 (trixie)")
	share := flag.String("share", "", "host directory mounted read-write at the same path in the guest")
	tcg := flag.Bool("tcg", false, "do not try KVM")
	fetch := flag.Bool("fetch", false, "download and unpack the kernel, print its paths, and exit")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole boot")
	flag.Parse()
	k, err := vm.Fetch(vm.Arch(*arch), *kernel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: error: %v\n", err)
		return 125
	}
	if *fetch {
		fmt.Printf("release=%s\nimage=%s\nmodules=%s\n", k.Release, k.Image, k.Modules)
		return 0
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "vmrun: error: no command (vmrun [flags] -- CMD ARGS...)")
		return 2
	}
	if *share == "" {
		d, err := os.MkdirTemp("", "vmrun-share-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmrun: error: %v\n", err)
			return 125
		}
		defer os.RemoveAll(d)
		*share = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cwd, _ := os.Getwd()
	res, err := vm.Run(ctx, vm.Config{Kernel: k, Args: flag.Args(), Share: *share, Dir: cwd,
		Console: os.Stdout, NoKVM: *tcg})
	fmt.Fprintf(os.Stderr, "vmrun: %s %s (%s): ", *arch, k.Release, res.Accel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 125
	}
	fmt.Fprintf(os.Stderr, "exit status %d\n", res.Status)
	return res.Status
}
