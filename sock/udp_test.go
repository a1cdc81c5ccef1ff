package sock

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// udpSocket makes a UDP socket bound to sa (port 0: any) and returns it
// with its address.
func udpSocket(t *testing.T, family int, sa unix.Sockaddr) (int, netip.AddrPort) {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if family == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	got, _ := unix.Getsockname(fd)
	return fd, netip.MustParseAddrPort(addrString(got))
}

type sent struct {
	from *net.UDPConn
	to   string
	data string
}

// sendDatagrams sends each datagram and returns what the receiver must see:
// data and sender, in order.
func sendDatagrams(t *testing.T, msgs []sent) [][2]string {
	t.Helper()
	var want [][2]string
	for _, m := range msgs {
		if _, err := m.from.WriteToUDP([]byte(m.data), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(m.to))); err != nil {
			t.Fatal(err)
		}
		want = append(want, [2]string{m.data, m.from.LocalAddr().String()})
	}
	return want
}

func sender(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receiveAll reads what fd has queued: data and sender, as "ip:port" with
// an IPv4-mapped sender written as IPv4.
func receiveAll(t *testing.T, fd int) [][2]string {
	t.Helper()
	var got [][2]string
	buf := make([]byte, 70000)
	for {
		n, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return got
		}
		ap := netip.MustParseAddrPort(addrString(from))
		got = append(got, [2]string{string(buf[:n]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()})
	}
}

// TestUDPQueueRoundTrip: datagrams waiting on a UDP socket are read
// without being consumed and come back on the restored socket in order,
// each from its own sender (one not an address of the socket's host
// would be fine too: a raw socket puts any source back).
func TestUDPQueueRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_RAW) to requeue datagrams")
	}
	for _, c := range []struct {
		name   string
		family int
		bind   unix.Sockaddr
		msgs   func(port uint16) []sent
	}{
		{"ipv4", unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, func(port uint16) []sent {
			a, b := sender(t, "127.0.0.1:0"), sender(t, "127.0.0.2:0")
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()
			return []sent{{a, to, "one"}, {b, to, "two, from elsewhere"}, {a, to, ""}, {a, to, string(make([]byte, 60000))}, {b, to, "last"}}
		}},
		{"dual-stack wildcard", unix.AF_INET6, &unix.SockaddrInet6{}, func(port uint16) []sent {
			a, b := sender(t, "127.0.0.1:0"), sender(t, "[::1]:0")
			return []sent{{a, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), port).String(), "v4 to 127.0.0.3"},
				{b, netip.AddrPortFrom(netip.IPv6Loopback(), port).String(), "v6"}}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd, addr := udpSocket(t, c.family, c.bind)
			want := sendDatagrams(t, c.msgs(addr.Port()))
			time.Sleep(20 * time.Millisecond) // loopback delivery; not a peek: that would mark the empty one
			st, err := Inspect(fd)
			if err != nil {
				unix.Close(fd)
				t.Fatal(err)
			}
			if len(st.Queue) != len(want) {
				t.Fatalf("inspected %d datagrams, want %d", len(st.Queue), len(want))
			}
			if c.family == unix.AF_INET6 {
				if st.Queue[0].To != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), addr.Port()).String() {
					t.Errorf("destination of the IPv4 datagram: %s", st.Queue[0].To)
				}
				// An address this host does not have (the service moved to
				// another): the datagram still reaches the wildcard socket.
				st.Queue[1].To = netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), addr.Port()).String()
			}
			// The peek consumed nothing and put the socket's settings back.
			if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF); v != -1 {
				t.Errorf("SO_PEEK_OFF left at %d", v)
			}
			if v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR); v != 0 {
				t.Errorf("IP_RECVORIGDSTADDR left on")
			}
			if got := receiveAll(t, fd); !slices.Equal(got, want) {
				t.Fatalf("the original socket lost datagrams to the peek: has %d of %d", len(got), len(want))
			}
			unix.Close(fd)

			nfd, err := Create(st, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(nfd)
			if got := receiveAll(t, nfd); !slices.Equal(got, want) {
				t.Fatalf("restored socket has %d datagrams (%.100q), want %d (%.100q)", len(got), got, len(want), want)
			}
		})
	}
}

// TestUDPPacketChecksum: the checksum of a known datagram (RFC 768 sum
// over the pseudo-header) verifies to zero.
func TestUDPPacketChecksum(t *testing.T) {
	for _, ap := range [][2]string{{"10.0.0.1:53", "10.0.0.2:4000"}, {"[2001:db8::1]:53", "[::1]:4000"}} {
		src, dst := netip.MustParseAddrPort(ap[0]), netip.MustParseAddrPort(ap[1])
		pkt := udpPacket(src, dst, []byte("odd-length payload!"))
		hdr := 20
		if src.Addr().Is6() {
			hdr = 40
		}
		udp := pkt[hdr:]
		sum := onesSum(onesSum(onesSum(0, src.Addr().AsSlice()), dst.Addr().AsSlice()), []byte{0, unix.IPPROTO_UDP, byte(len(udp) >> 8), byte(len(udp))})
		if v := fold(onesSum(sum, udp)); v != 0xffff {
			t.Errorf("%s -> %s: checksum verifies to %#x", src, dst, v)
		}
	}
}
