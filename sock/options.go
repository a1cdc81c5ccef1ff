package sock

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Options are the socket options a program commonly sets and expects to
// keep: keep-alive and its timers, Nagle, the user timeout, TOS/traffic
// class, linger, mark, priority, free and transparent binding, and buffer
// sizes. Zero values mean the default and are not set again. A buffer
// size is kept only when the program set it (the kernel then locks it:
// SO_BUF_LOCK); a size TCP's autotuning picked is left to autotuning
// again, since setting one turns autotuning off.
type Options struct {
	KeepAlive   bool `json:"keepalive,omitempty"`
	KeepIdle    int  `json:"keepidle,omitempty"` // seconds
	KeepIntvl   int  `json:"keepintvl,omitempty"`
	KeepCnt     int  `json:"keepcnt,omitempty"`
	NoDelay     bool `json:"nodelay,omitempty"`
	UserTimeout int  `json:"user_timeout,omitempty"` // ms
	TOS         int  `json:"tos,omitempty"`          // IP_TOS or IPV6_TCLASS
	Linger      *int `json:"linger,omitempty"`       // seconds, when SO_LINGER is on
	Mark        int  `json:"mark,omitempty"`
	Priority    int  `json:"priority,omitempty"`
	FreeBind    bool `json:"freebind,omitempty"`    // IP(V6)_FREEBIND: may bind an address not (yet) on the host
	Transparent bool `json:"transparent,omitempty"` // IP(V6)_TRANSPARENT
	SndBuf      int  `json:"sndbuf,omitempty"`      // bytes as SO_SNDBUF reports them (twice what was asked)
	RcvBuf      int  `json:"rcvbuf,omitempty"`
}

// Buffer locks (SO_BUF_LOCK): the program set the size itself.
const (
	sndBufLock = 1
	rcvBufLock = 2
)

// defaults of a fresh TCP socket, to store only what a program changed.
var tcpDefaults = sync.OnceValue(func() map[int]int {
	m := map[int]int{}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return m
	}
	defer unix.Close(fd)
	for _, opt := range []int{unix.TCP_KEEPIDLE, unix.TCP_KEEPINTVL, unix.TCP_KEEPCNT} {
		m[opt], _ = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, opt)
	}
	return m
})

// inspectOptions reads fd's options; family and proto say which apply.
func inspectOptions(fd, family, proto int) *Options {
	get := func(level, opt int) int { v, _ := unix.GetsockoptInt(fd, level, opt); return v }
	o := &Options{
		KeepAlive: get(unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 0,
		Mark:      get(unix.SOL_SOCKET, unix.SO_MARK),
		Priority:  get(unix.SOL_SOCKET, unix.SO_PRIORITY),
	}
	switch family {
	case unix.AF_INET:
		o.TOS = get(unix.IPPROTO_IP, unix.IP_TOS)
		o.FreeBind = get(unix.IPPROTO_IP, unix.IP_FREEBIND) != 0
		o.Transparent = get(unix.IPPROTO_IP, unix.IP_TRANSPARENT) != 0
	case unix.AF_INET6:
		o.TOS = get(unix.IPPROTO_IPV6, unix.IPV6_TCLASS)
		o.FreeBind = get(unix.IPPROTO_IPV6, unix.IPV6_FREEBIND) != 0
		o.Transparent = get(unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT) != 0
	}
	if locks, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK); err == nil {
		if locks&sndBufLock != 0 {
			o.SndBuf = get(unix.SOL_SOCKET, unix.SO_SNDBUF)
		}
		if locks&rcvBufLock != 0 {
			o.RcvBuf = get(unix.SOL_SOCKET, unix.SO_RCVBUF)
		}
	}
	if l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 {
		secs := int(l.Linger)
		o.Linger = &secs
	}
	if proto == unix.IPPROTO_TCP {
		def := tcpDefaults()
		o.NoDelay = get(unix.IPPROTO_TCP, unix.TCP_NODELAY) != 0
		o.UserTimeout = get(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if v := get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != def[unix.TCP_KEEPIDLE] {
			o.KeepIdle = v
		}
		if v := get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL); v != def[unix.TCP_KEEPINTVL] {
			o.KeepIntvl = v
		}
		if v := get(unix.IPPROTO_TCP, unix.TCP_KEEPCNT); v != def[unix.TCP_KEEPCNT] {
			o.KeepCnt = v
		}
	}
	if *o == (Options{}) {
		return nil
	}
	return o
}

// apply sets the options that differ from a fresh socket's.
func (o *Options) apply(fd, family, proto int) error {
	if o == nil {
		return nil
	}
	var errs []error
	set := func(name string, level, opt, v int, when bool) {
		if when {
			if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
				errs = append(errs, fmt.Errorf("setsockopt %s=%d: %w", name, v, err))
			}
		}
	}
	set("SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, o.KeepAlive)
	set("SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, o.Mark, o.Mark != 0)
	set("SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY, o.Priority, o.Priority != 0)
	set("IP_TOS", unix.IPPROTO_IP, unix.IP_TOS, o.TOS, o.TOS != 0 && family == unix.AF_INET)
	set("IPV6_TCLASS", unix.IPPROTO_IPV6, unix.IPV6_TCLASS, o.TOS, o.TOS != 0 && family == unix.AF_INET6)
	set("IP_FREEBIND", unix.IPPROTO_IP, unix.IP_FREEBIND, 1, o.FreeBind && family == unix.AF_INET)
	set("IP_TRANSPARENT", unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1, o.Transparent && family == unix.AF_INET)
	set("IPV6_FREEBIND", unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1, o.FreeBind && family == unix.AF_INET6)
	set("IPV6_TRANSPARENT", unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1, o.Transparent && family == unix.AF_INET6)
	if o.Linger != nil {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(*o.Linger)}); err != nil {
			errs = append(errs, fmt.Errorf("setsockopt SO_LINGER: %w", err))
		}
	}
	if proto == unix.IPPROTO_TCP {
		set("TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, o.NoDelay)
		set("TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, o.UserTimeout, o.UserTimeout != 0)
		set("TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, o.KeepIdle, o.KeepIdle != 0)
		set("TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, o.KeepIntvl, o.KeepIntvl != 0)
		set("TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.KeepCnt, o.KeepCnt != 0)
	}
	return errors.Join(errs...)
}

// settleBuffers gives a socket whose buffers were enlarged for a restore
// back to the program's own sizes, locked as it had them, or to
// autotuning (SO_BUF_LOCK cleared; the sizes only grow from there).
func (o *Options) settleBuffers(fd int) error {
	locks := 0
	if o != nil && o.SndBuf != 0 {
		locks |= sndBufLock
	}
	if o != nil && o.RcvBuf != 0 {
		locks |= rcvBufLock
	}
	// Before 5.14 SO_BUF_LOCK cannot be set: the sizes stay as reserved.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK, locks)
	return o.applyBuffers(fd)
}

// applyBuffers sets the buffer sizes the program had chosen. The kernel
// doubles what it is given, so half goes in; the forcing variants keep
// the size exact where this host's net.core.[wr]mem_max is lower.
func (o *Options) applyBuffers(fd int) error {
	if o == nil {
		return nil
	}
	var errs []error
	for _, b := range []struct {
		name         string
		force, plain int
		size         int
	}{{"SO_SNDBUF", unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.SndBuf}, {"SO_RCVBUF", unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.RcvBuf}} {
		if b.size == 0 {
			continue
		}
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, b.size/2)
		if errors.Is(err, unix.EPERM) {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.plain, b.size/2)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("setsockopt %s=%d: %w", b.name, b.size/2, err))
		}
	}
	return errors.Join(errs...)
}
