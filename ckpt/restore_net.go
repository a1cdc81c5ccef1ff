package ckpt

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/sock"
)

// netConns names the connections of each network lock of the image.
func (sh *shared) netConns() map[string][]sock.Conn {
	out := map[string][]sock.Conn{}
	for _, name := range sh.cp.NetLocks {
		out[name] = nil
	}
	for _, p := range sh.cp.Processes {
		name := lockName(p.PID)
		if _, ok := out[name]; !ok {
			continue
		}
		for _, fd := range p.FDs {
			if f := sh.cp.Files[fd.File]; f.Kind == FileTCP && f.TCP != nil {
				out[name] = append(out[name], sock.Conn{LocalPort: port(f.TCP.Local), PeerPort: port(f.TCP.Peer)})
			}
		}
	}
	return out
}

func port(hostPort string) uint16 {
	_, p, _ := net.SplitHostPort(hostPort)
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

// lockNet drops the packets of every connection of the image until the
// connections are rebuilt. On the dump's host its lock is already there;
// on another host nothing holds them yet, and the peer's retransmissions
// would draw a reset as soon as the address appears here.
func (sh *shared) lockNet() error {
	for name, conns := range sh.netConns() {
		if len(conns) == 0 {
			continue
		}
		existed, err := sock.TableExists(name)
		if err != nil {
			return err
		}
		l, err := sock.NewLock(name, conns, nil)
		if err != nil {
			return err
		}
		if !existed {
			sh.locks = append(sh.locks, l) // ours to remove if the restore fails
		}
	}
	// New connections to the listeners wait (their SYN dropped, retried by
	// the client) until the listeners are back, instead of being refused.
	// A nicety: without nftables here the restore goes on without it.
	if ports := sh.listenPorts(); len(ports) > 0 {
		if l, err := sock.NewLock(listenLockName(sh.cp.Root), nil, ports); err == nil {
			sh.locks = append(sh.locks, l)
			sh.listenLock = l
		}
	}
	return nil
}

// listenPorts are the ports of the image's listening TCP sockets.
func (sh *shared) listenPorts() []uint16 {
	var out []uint16
	for _, f := range sh.cp.Files {
		if f.Kind == FileSocket && f.Socket != nil && f.Socket.Listening && sock.IsTCP(f.Socket.Protocol) {
			if p := port(f.Socket.Addr); p != 0 && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// unlockOwn removes the locks this restore installed.
func (sh *shared) unlockOwn() error {
	var errs []error
	for _, l := range sh.locks {
		errs = append(errs, l.Unlock())
	}
	sh.locks = nil
	return errors.Join(errs...)
}

// killRestored ends a tree that already ran, because the migration it
// belongs to was called off: the source resumes instead. Its connections
// must die silently (their other copy lives on at the source): the
// packets are dropped while the processes die, and the restorer's
// duplicates of the sockets are closed in repair mode, which sends nothing.
func (sh *shared) killRestored() error {
	var errs []error
	defer sh.detachSysV(true)
	defer sh.unlinkMQueues()
	for name, conns := range sh.netConns() {
		if len(conns) > 0 {
			l, err := sock.NewLock(name, conns, nil)
			errs = append(errs, err)
			sh.locks = append(sh.locks, l)
		}
	}
	for _, fd := range sh.pidfds {
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	// The root is our child (CLONE_PARENT), or the namespace's init is:
	// reap it, then wait for the rest.
	if sh.init != nil {
		sh.init.killInit()
	} else {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(sh.procs[sh.cp.Root].host, &ws, unix.WALL, nil)
	}
	for _, fd := range sh.pidfds {
		// A pidfd turns readable when its process has exited.
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 5000)
	}
	for _, t := range sh.live {
		if err := sock.RepairOn(t.fd); err != nil {
			errs = append(errs, fmt.Errorf("tcp %s -> %s: %w", t.c.Local, t.c.Peer, err))
		}
	}
	sh.closeFiles()
	errs = append(errs, sh.undo.run(), sh.unlockOwn())
	return errors.Join(errs...)
}
