package sock

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Options are the socket options a program commonly sets and expects to
// keep: keep-alive and its timers, Nagle, the user timeout, TOS/traffic
// class, linger, mark and priority. Zero values mean the default and are
// not set again. Buffer sizes are left alone: reading them cannot tell a
// size the program chose from one TCP's autotuning picked, and setting one
// turns autotuning off.
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
}

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
	case unix.AF_INET6:
		o.TOS = get(unix.IPPROTO_IPV6, unix.IPV6_TCLASS)
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
