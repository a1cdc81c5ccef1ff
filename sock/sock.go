package sock

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsupported marks socket states this package cannot carry yet.
var ErrUnsupported error = expected("not supported yet")

// ErrAcceptQueue is a listener with connections the process has not
// accepted yet: they cannot be put back into a new listener's queue.
var ErrAcceptQueue error = expected("connections wait in the accept queue, not yet accepted by the process")

// expected is a refusal, not a bug: its Expected method tells the command
// line to print it as one line without asking for a bug report.
type expected string

func (e expected) Error() string  { return string(e) }
func (e expected) Expected() bool { return true }

// State is what a restore needs to make the socket again.
type State struct {
	Family    int    `json:"family"`
	Type      int    `json:"type"`
	Protocol  int    `json:"protocol"`
	Addr      string `json:"addr,omitempty"` // "ip:port", a unix path, "@name" for an abstract name; "" unbound
	Listening bool   `json:"listening,omitempty"`
	Backlog   int    `json:"backlog,omitempty"`
	ReuseAddr bool   `json:"reuse_addr,omitempty"`
	ReusePort bool   `json:"reuse_port,omitempty"`
	V6Only    bool   `json:"v6only,omitempty"`
	KeepAlive bool   `json:"keepalive,omitempty"`
	NoDelay   bool   `json:"nodelay,omitempty"`
	// Peer is the address a connected UDP socket sends to.
	Peer string   `json:"peer,omitempty"`
	Opts *Options `json:"opts,omitempty"`
	// Queue holds the datagrams a UDP socket had not read yet.
	Queue []Datagram `json:"queue,omitempty"`
	// Connecting is a TCP socket whose connect was under way (SYN_SENT):
	// it comes back connecting afresh to Peer, from Addr's address where
	// this host has it (a new port: the old attempt may still live on).
	Connecting bool `json:"connecting,omitempty"`
	// Netlink holds a netlink socket's binding and options.
	Netlink *Netlink `json:"netlink,omitempty"`
	// Ended is a TCP socket whose connection had ended (reset, or closed
	// by both sides) before the program closed it. It comes back as a
	// socket with no connection: reads fail (ENOTCONN), poll reports a
	// hang-up, and the program closes it as it would have.
	Ended bool `json:"ended,omitempty"`
}

// Kind names the socket the way error messages do: tcp, udp6, unix, ...
func Kind(fd int) string {
	domain, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch domain {
	case unix.AF_UNIX:
		return "unix"
	case unix.AF_NETLINK:
		return "netlink"
	case unix.AF_PACKET:
		return "packet"
	}
	return kindName(domain, typ, proto)
}

// Inspect reads the state of the socket fd (a duplicate of the
// process's: the open file description is the same).
func Inspect(fd int) (*State, error) {
	var s State
	var err error
	if s.Family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, err
	}
	s.Type, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	s.Protocol, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch {
	case s.Family == unix.AF_INET || s.Family == unix.AF_INET6:
		if s.Protocol == unix.IPPROTO_MPTCP {
			// A listener is carried (Go's net package makes its
			// listeners MPTCP); connections from clients that speak
			// plain TCP are plain TCP sockets. An MPTCP connection has
			// no TCP_REPAIR.
			if acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 1 {
				return nil, fmt.Errorf("an MPTCP connection (Go programs: GODEBUG=multipathtcp=0 turns MPTCP off): %w", ErrUnsupported)
			}
		} else if s.Protocol != unix.IPPROTO_TCP && s.Protocol != unix.IPPROTO_UDP {
			return nil, ErrUnsupported
		}
	case s.Family == unix.AF_UNIX:
		if s.Type != unix.SOCK_STREAM && s.Type != unix.SOCK_SEQPACKET && s.Type != unix.SOCK_DGRAM {
			return nil, ErrUnsupported
		}
	case s.Family == unix.AF_NETLINK:
		if s.Netlink, err = inspectNetlink(fd); err != nil {
			return nil, err
		}
		s.Opts = inspectOptions(fd, s.Family, s.Protocol)
		return &s, nil
	default:
		return nil, ErrUnsupported
	}
	if peer, err := unix.Getpeername(fd); err == nil {
		switch {
		case s.Protocol == unix.IPPROTO_UDP:
			s.Peer = addrString(peer)
		case s.Protocol == unix.IPPROTO_TCP:
			return nil, fmt.Errorf("a TCP connection in state %s: %w", tcpStateName(fd), ErrUnsupported)
		default:
			return nil, fmt.Errorf("connected sockets: %w", ErrUnsupported)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	s.Addr = addrString(sa)
	if acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc == 1 {
		s.Listening = true
		if waiting(fd) {
			return nil, ErrAcceptQueue
		}
		s.Backlog = unix.SOMAXCONN
		if IsTCP(s.Protocol) {
			if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				s.Backlog = int(ti.Sacked) // sk_max_ack_backlog for a listener
			}
		}
	} else if s.Family == unix.AF_UNIX && s.Type == unix.SOCK_DGRAM && waiting(fd) {
		if s.Queue, err = peekUnixDatagrams(fd); err != nil {
			return nil, err
		}
	} else if s.Protocol == unix.IPPROTO_UDP && waiting(fd) {
		if s.Queue, err = peekDatagrams(fd, s.Family); err != nil {
			return nil, err
		}
	} else if s.Protocol == unix.IPPROTO_TCP && tcpState(fd) == tcpSynSent {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, err
		}
		peer, err := tcpPeerByInode(st.Ino)
		if err != nil {
			return nil, err
		}
		s.Connecting, s.Peer = true, peer.String()
	} else if s.Protocol == unix.IPPROTO_TCP && ended(fd) {
		s.Ended, s.Addr = true, ""
	} else if s.Protocol == unix.IPPROTO_TCP && s.Addr != "" && !strings.HasSuffix(s.Addr, ":0") {
		return nil, fmt.Errorf("a bound, unconnected TCP socket: %w", ErrUnsupported)
	}
	flag := func(level, opt int) bool { v, _ := unix.GetsockoptInt(fd, level, opt); return v != 0 }
	s.ReuseAddr = flag(unix.SOL_SOCKET, unix.SO_REUSEADDR)
	s.ReusePort = flag(unix.SOL_SOCKET, unix.SO_REUSEPORT)
	s.KeepAlive = flag(unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	if s.Family == unix.AF_INET6 {
		s.V6Only = flag(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	}
	if s.Protocol == unix.IPPROTO_TCP {
		s.NoDelay = flag(unix.IPPROTO_TCP, unix.TCP_NODELAY)
	}
	if s.Family != unix.AF_UNIX && strings.HasSuffix(s.Addr, ":0") && !s.Listening {
		s.Addr = "" // never bound
	}
	if s.Family == unix.AF_UNIX && s.Addr == "@" {
		s.Addr = "" // unnamed (x/sys reads the empty path as an abstract name)
	}
	if s.Family != unix.AF_UNIX {
		s.Opts = inspectOptions(fd, s.Family, s.Protocol)
	}
	return &s, nil
}

const (
	tcpSynSent = 2
	tcpClose   = 7
)

// tcpState is tcp_info's state of fd, 0 if it has none.
func tcpState(fd int) uint8 {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return ti.State
}

// ended reports whether fd is a TCP socket in state CLOSE that once had a
// connection: segments went in or out (a fresh or merely bound socket
// has none).
func ended(fd int) bool {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && ti.State == tcpClose && (ti.Segs_in > 0 || ti.Segs_out > 0)
}

// tcpStateName names the state of a TCP socket, for messages.
func tcpStateName(fd int) string {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return "unknown"
	}
	names := []string{1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1 (half-closed)", 5: "FIN_WAIT2 (half-closed)",
		6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT (half-closed: the peer has closed)", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
	if int(ti.State) < len(names) && names[ti.State] != "" {
		return names[ti.State]
	}
	return fmt.Sprint(ti.State)
}

// IsTCP reports whether proto is TCP, or MPTCP (TCP underneath).
func IsTCP(proto int) bool { return proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP }

// waiting reports whether the socket has something to read: a pending
// connection on a listener, a datagram on a UDP socket.
func waiting(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents&unix.POLLIN != 0
}

func addrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrUnix:
		if strings.HasPrefix(a.Name, "\x00") {
			return "@" + a.Name[1:]
		}
		if a.Name == "" {
			return ""
		}
		if a.Name[0] == '@' { // Go reports abstract names with a leading @
			return a.Name
		}
		return a.Name
	}
	return ""
}

// Create makes a socket like s, bound and listening as it was. flags are
// the file status flags to give it (O_NONBLOCK); it is always close-on-exec.
// A unix socket path left behind by the checkpointed process is replaced.
func Create(s *State, flags int) (int, error) {
	typ := s.Type | unix.SOCK_CLOEXEC
	if flags&unix.O_NONBLOCK != 0 {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(s.Family, typ, s.Protocol)
	if err != nil && s.Protocol == unix.IPPROTO_MPTCP {
		// No MPTCP here (net.mptcp.enabled=0, or an older kernel): a
		// plain TCP listener serves the same clients, as Go itself
		// falls back.
		fd, err = unix.Socket(s.Family, typ, unix.IPPROTO_TCP)
	}
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := configure(fd, s); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if len(s.Queue) > 0 {
		if s.Family == unix.AF_UNIX {
			err = requeueUnix(s.Addr, s.Queue)
		} else {
			err = requeue(fd, s.Queue)
		}
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

func configure(fd int, s *State) error {
	set := func(level, opt int, on bool) error {
		if !on {
			return nil
		}
		return unix.SetsockoptInt(fd, level, opt, 1)
	}
	if err := errors.Join(set(unix.SOL_SOCKET, unix.SO_REUSEADDR, s.ReuseAddr),
		set(unix.SOL_SOCKET, unix.SO_REUSEPORT, s.ReusePort),
		set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, s.KeepAlive)); err != nil {
		return fmt.Errorf("setsockopt: %w", err)
	}
	if s.Family == unix.AF_INET6 {
		v := 0
		if s.V6Only {
			v = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			return fmt.Errorf("setsockopt IPV6_V6ONLY: %w", err)
		}
	}
	if s.Protocol == unix.IPPROTO_TCP && s.NoDelay {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return fmt.Errorf("setsockopt TCP_NODELAY: %w", err)
		}
	}
	if s.Connecting {
		return reconnect(fd, s)
	}
	if s.Netlink != nil {
		return errors.Join(s.Opts.apply(fd, s.Family, s.Protocol), s.Opts.applyBuffers(fd), configureNetlink(fd, s.Netlink))
	}
	if s.Addr == "" {
		return nil
	}
	sa, err := sockaddr(s)
	if err != nil {
		return err
	}
	if u, ok := sa.(*unix.SockaddrUnix); ok && !strings.HasPrefix(u.Name, "@") {
		dir, err := clearSocketPath(u.Name)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
	}
	if err := errors.Join(s.Opts.apply(fd, s.Family, s.Protocol), s.Opts.applyBuffers(fd)); err != nil {
		return err
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind %s: %w", s.Addr, err)
	}
	if s.Peer != "" {
		psa, err := sockaddr(&State{Family: s.Family, Addr: s.Peer})
		if err != nil {
			return err
		}
		if err := unix.Connect(fd, psa); err != nil {
			return fmt.Errorf("connect %s: %w", s.Peer, err)
		}
	}
	if s.Listening {
		if err := unix.Listen(fd, max(s.Backlog, 1)); err != nil {
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
	}
	return nil
}

// reconnect starts the connect a checkpointed socket had under way: from
// the same local address if this host has it, on a new port, without
// waiting. The program's own connect, interrupted by the freeze and run
// again, then waits for it (or, non-blocking, polls for it as before).
func reconnect(fd int, s *State) error {
	if err := s.Opts.apply(fd, s.Family, s.Protocol); err != nil {
		return err
	}
	if local, err := netip.ParseAddrPort(s.Addr); err == nil {
		sa, _ := sockaddr(&State{Family: s.Family, Addr: netip.AddrPortFrom(local.Addr(), 0).String()})
		if err := unix.Bind(fd, sa); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("bind %s: %w", local.Addr(), err)
		}
	}
	psa, err := sockaddr(&State{Family: s.Family, Addr: s.Peer})
	if err != nil {
		return err
	}
	blocking, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	if err := unix.Connect(fd, psa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("connect %s: %w", s.Peer, err)
	}
	if blocking&unix.O_NONBLOCK == 0 {
		return unix.SetNonblock(fd, false)
	}
	return nil
}

func sockaddr(s *State) (unix.Sockaddr, error) {
	if s.Family == unix.AF_UNIX {
		return &unix.SockaddrUnix{Name: s.Addr}, nil
	}
	ap, err := netip.ParseAddrPort(s.Addr)
	if err != nil {
		return nil, fmt.Errorf("socket address %q: %w", s.Addr, err)
	}
	if s.Family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, nil
}
