package sock

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestDescriptions(t *testing.T) {
	for _, c := range []struct {
		got  interface{ String() string }
		want string
	}{
		{&State{Family: unix.AF_INET6, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, Addr: "[::]:80", Listening: true}, "tcp6 listening on [::]:80"},
		{&State{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP, Addr: "127.0.0.1:53", Queue: make([]Datagram, 2)}, "udp on 127.0.0.1:53, 2 datagrams queued"},
		{&State{Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, Connecting: true, Peer: "10.0.0.1:5432"}, "tcp connecting to 10.0.0.1:5432"},
		{&State{Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, Ended: true}, "tcp, connection ended"},
		{&State{Family: unix.AF_NETLINK, Type: unix.SOCK_RAW, Netlink: &Netlink{PortID: 7, Groups: []uint32{1, 5}}}, "netlink route port 7, groups [1 5]"},
		{&State{Family: unix.AF_UNIX, Type: unix.SOCK_DGRAM}, "unix dgram, unbound"},
		{&TCPConn{Local: "127.0.0.1:80", Peer: "127.0.0.1:5000", State: "CLOSE_WAIT", RecvQueue: []byte("ab"), SendQueue: []byte("xyz"), Unsent: 1}, "tcp 127.0.0.1:80 -> 127.0.0.1:5000 CLOSE_WAIT, 2 bytes unread, 2 unacknowledged (1 never sent)"},
		{&UnixConn{Type: unix.SOCK_DGRAM, Connect: "/dev/log"}, "unix dgram connected to /dev/log"},
		{&UnixConn{Type: unix.SOCK_STREAM, Peer: 42, Queue: []byte("q")}, "unix pair with socket:[42], 1 bytes queued"},
	} {
		if s := c.got.String(); s != c.want {
			t.Errorf("%q, want %q", s, c.want)
		}
	}
}
