package ckpt

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/proc"
	"github.com/relocate/relocate/sock"
)

// Connections a listener has completed but the process has not accepted
// cannot be carried: a new listener's queue cannot be filled from outside.
// So before the freeze, new connections to the tree's listening ports are
// held off (their SYN dropped: the client retries a second later, by then
// reaching the restored listener) and the running process gets a moment
// to accept what is queued. Netlink messages waiting (sent by the kernel,
// which will not send them again) get the same moment to be read. A
// connection or message that slips in before the freeze makes the dump
// start over.
const (
	drainWait   = 2 * time.Second // for the process to accept what is queued
	drainRetry  = 500 * time.Millisecond
	dumpAttempt = 3 // freezes tried while connections keep arriving in a queue
)

// listeners are the tree's listening TCP sockets, and its netlink
// sockets, seen before the freeze: their queues are drained.
type listeners struct {
	fds   []int    // duplicates, to watch their queues
	ports []uint16 // of the TCP listeners, held off by lock
	lock  *sock.Lock
}

// listenLockName is the table holding off new connections to a tree's
// listeners, from before the freeze until the tree is gone or resumed.
func listenLockName(root int) string { return fmt.Sprintf("relocate_listen_%d", root) }

// findListeners collects the listening TCP sockets and netlink sockets of
// root and its descendants and holds off new connections to the TCP
// ports. It is best
// effort: a process that exits or a socket that closes meanwhile is
// skipped, and without nftables the queues are still drained.
func findListeners(fs proc.FS, root int) *listeners {
	l := &listeners{}
	seen := map[uint64]bool{}
	ports := map[uint16]bool{}
	pids := []int{root}
	for i := 0; i < len(pids) && i < 100000; i++ {
		pid := pids[i]
		if kids, err := fs.Children(pid); err == nil {
			pids = append(pids, kids...)
		}
		fds, err := fs.FDs(pid)
		if err != nil {
			continue
		}
		pidfd := -1
		for _, fd := range fds {
			link, err := fs.Readlink(pid, "fd/"+strconv.Itoa(fd))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil || seen[ino] {
				continue
			}
			seen[ino] = true
			if pidfd < 0 {
				if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
					break
				}
			}
			dup, err := unix.PidfdGetfd(pidfd, fd, 0)
			if err != nil {
				continue
			}
			port, ok := tcpListenPort(dup)
			if !ok {
				if isNetlink(dup) {
					l.fds = append(l.fds, dup) // its queue is drained too
				} else {
					unix.Close(dup)
				}
				continue
			}
			l.fds = append(l.fds, dup)
			if !ports[port] {
				ports[port] = true
				l.ports = append(l.ports, port)
			}
		}
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}
	if len(l.ports) > 0 {
		l.lock, _ = sock.NewLock(listenLockName(root), nil, l.ports)
	}
	return l
}

// tcpListenPort reports the port of a listening TCP socket.
func tcpListenPort(fd int) (uint16, bool) {
	if proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); !sock.IsTCP(proto) {
		return 0, false
	}
	if acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 1 {
		return 0, false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, false
	}
	return sockPort(sa), true
}

func isNetlink(fd int) bool {
	d, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return d == unix.AF_NETLINK
}

// drain waits up to max for every accept queue, and every netlink
// socket's queue, to be empty.
func (l *listeners) drain(max time.Duration) {
	deadline := time.Now().Add(max)
	for {
		busy := false
		for _, fd := range l.fds {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, err := unix.Poll(p, 0); err == nil && n > 0 {
				busy = true
				break
			}
		}
		if !busy || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// release lifts the hold on new connections.
func (l *listeners) release() error {
	for _, fd := range l.fds {
		unix.Close(fd)
	}
	l.fds = nil
	return l.lock.Unlock()
}

// queued reports an error about input the process had not taken yet
// (connections to accept, netlink messages to read): letting it run a
// moment more may clear it.
func queued(err error) bool {
	return errors.Is(err, sock.ErrAcceptQueue) || errors.Is(err, sock.ErrNetlinkQueue) || errors.Is(err, ErrTTYQueue)
}

// queueError says why a dump gave up on a queue.
func queueError(err error, waited time.Duration) error {
	if !queued(err) {
		return err
	}
	return fmt.Errorf("%w (relocate waited %s for it to take them)", err, waited.Round(100*time.Millisecond))
}
