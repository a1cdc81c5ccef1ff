package sock

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// String describes the socket in a line, for relocate inspect.
func (s *State) String() string {
	var b strings.Builder
	b.WriteString(kindName(s.Family, s.Type, s.Protocol))
	switch {
	case s.Netlink != nil:
		fmt.Fprintf(&b, " port %d", s.Netlink.PortID)
		if len(s.Netlink.Groups) > 0 {
			fmt.Fprintf(&b, ", groups %v", s.Netlink.Groups)
		}
	case s.Listening:
		fmt.Fprintf(&b, " listening on %s", s.Addr)
	case s.Connecting:
		fmt.Fprintf(&b, " connecting to %s", s.Peer)
	case s.Ended:
		b.WriteString(", connection ended")
	default:
		if s.Addr != "" {
			fmt.Fprintf(&b, " on %s", s.Addr)
		}
		if s.Peer != "" {
			fmt.Fprintf(&b, " to %s", s.Peer)
		}
		if s.Addr == "" && s.Peer == "" {
			b.WriteString(", unbound")
		}
	}
	if len(s.Queue) > 0 {
		fmt.Fprintf(&b, ", %d datagrams queued", len(s.Queue))
	}
	return b.String()
}

// kindName names a socket from its numbers: tcp, udp6, unix dgram,
// netlink route, ...
func kindName(family, typ, proto int) string {
	name := "socket"
	switch {
	case family == unix.AF_UNIX:
		return map[int]string{unix.SOCK_STREAM: "unix", unix.SOCK_DGRAM: "unix dgram", unix.SOCK_SEQPACKET: "unix seqpacket"}[typ]
	case family == unix.AF_NETLINK && proto == unix.NETLINK_ROUTE:
		return "netlink route"
	case family == unix.AF_NETLINK:
		return fmt.Sprintf("netlink %d", proto)
	case proto == unix.IPPROTO_TCP:
		name = "tcp"
	case proto == unix.IPPROTO_MPTCP:
		name = "mptcp"
	case proto == unix.IPPROTO_UDP:
		name = "udp"
	case typ == unix.SOCK_RAW:
		name = "raw"
	}
	if family == unix.AF_INET6 {
		name += "6"
	}
	return name
}

// String describes the connection in a line, for relocate inspect.
func (c *TCPConn) String() string {
	s := fmt.Sprintf("tcp %s -> %s", c.Local, c.Peer)
	if c.State != "" {
		s += " " + c.State
	}
	if n := len(c.RecvQueue) + len(c.SendQueue); n > 0 {
		s += fmt.Sprintf(", %d bytes unread, %d unacknowledged (%d never sent)", len(c.RecvQueue), len(c.SendQueue)-c.Unsent, c.Unsent)
	}
	return s
}

// String describes the end in a line, for relocate inspect.
func (c *UnixConn) String() string {
	s := kindName(unix.AF_UNIX, c.Type, 0)
	switch {
	case c.Connect != "":
		s += " connected to " + c.Connect
	case c.Peer == 0:
		s += ", peer closed"
	case c.Listener != "":
		s += fmt.Sprintf(" through %s with socket:[%d]", c.Listener, c.Peer)
	default:
		s += fmt.Sprintf(" pair with socket:[%d]", c.Peer)
	}
	if n := len(c.Queue); n > 0 {
		s += fmt.Sprintf(", %d bytes queued", n)
	}
	if n := len(c.Msgs); n > 0 {
		s += fmt.Sprintf(", %d messages queued", n)
	}
	return s
}
