package sock

import (
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNetlinkRoundTrip: a NETLINK_ROUTE socket (a daemon watching links
// and addresses) comes back with its port id, its groups (one above 32,
// joined by setsockopt), its options and buffer size, and answers a
// request addressed to it. One with messages waiting is refused.
func TestNetlinkRoundTrip(t *testing.T) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Skipf("no netlink: %v", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		t.Fatal(err)
	}
	const high = 34 // RTNLGRP_MCTP_IFADDR: only setsockopt reaches it
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, high); err != nil {
		t.Skipf("group %d: %v", high, err)
	}
	for _, o := range []int{unix.NETLINK_NO_ENOBUFS, unix.NETLINK_EXT_ACK} {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, o, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	port := sa.(*unix.SockaddrNetlink).Pid
	st, err := Inspect(fd)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if st.Netlink == nil || st.Netlink.PortID != port || !slices.Equal(st.Netlink.Groups, []uint32{1, 5, high}) {
		t.Fatalf("state %+v netlink %+v", st, st.Netlink)
	}

	nfd, err := Create(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nfd)
	sa, _ = unix.Getsockname(nfd)
	if n := sa.(*unix.SockaddrNetlink); n.Pid != port || n.Groups != groups {
		t.Errorf("restored socket bound to %+v, want port %d groups %#x", n, port, groups)
	}
	after, err := inspectNetlink(nfd)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(after.Groups, st.Netlink.Groups) || !slices.Equal(after.Options, st.Netlink.Options) || len(after.Options) != 2 {
		t.Errorf("restored groups %v options %v, want %v %v", after.Groups, after.Options, st.Netlink.Groups, st.Netlink.Options)
	}
	if v, _ := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_RCVBUF); v != 2<<20 {
		t.Errorf("SO_RCVBUF %d, want %d", v, 2<<20)
	}

	// A request: the kernel answers the restored port id; until it is
	// read, the socket is refused.
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETLINK)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	if err := unix.Sendto(nfd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	p := []unix.PollFd{{Fd: int32(nfd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(p, 5000); n != 1 {
		t.Fatal("no answer to the restored socket")
	}
	if _, err := Inspect(nfd); err != ErrNetlinkQueue {
		t.Fatalf("with an answer waiting: %v", err)
	}
}
