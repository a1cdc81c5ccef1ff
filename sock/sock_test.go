package sock

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func listener(t *testing.T, family int, sa unix.Sockaddr) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 9); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestListenerRoundTrip inspects a listener, closes it, makes it again from
// the state, and connects to the new one.
func TestListenerRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		family  int
		sa      unix.Sockaddr
		network string
	}{
		{"tcp4", unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, "tcp"},
		{"tcp6", unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}, "tcp"},
		{"unix", unix.AF_UNIX, &unix.SockaddrUnix{Name: filepath.Join(t.TempDir(), "l.sock")}, "unix"},
		{"abstract", unix.AF_UNIX, &unix.SockaddrUnix{Name: "@relocate-sock-test"}, "unix"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fd := listener(t, c.family, c.sa)
			st, err := Inspect(fd)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Listening || !st.ReuseAddr || st.Addr == "" || (c.network == "tcp" && st.Backlog != 9) {
				t.Fatalf("state %+v", st)
			}
			nfd, err := Create(st, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(nfd)
			addr := st.Addr
			if c.network == "unix" && addr[0] == '@' {
				addr = "\x00" + addr[1:]
			}
			conn, err := net.Dial(c.network, addr)
			if err != nil {
				t.Fatalf("connect to recreated %s: %v", st.Addr, err)
			}
			conn.Close()
		})
	}
}

// TestRefusals: a connected TCP socket and a listener with a pending
// connection are not carried.
func TestRefusals(t *testing.T) {
	fd := listener(t, unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	defer unix.Close(fd)
	sa, _ := unix.Getsockname(fd)
	conn, err := net.Dial("tcp", addrString(sa))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := Inspect(fd); !errors.Is(err, ErrAcceptQueue) {
		t.Fatalf("listener with a pending connection: %v", err)
	}
	afd, _, err := unix.Accept(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(afd)
	if _, err := Inspect(afd); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("established connection: %v", err)
	}
	if _, err := Inspect(fd); err != nil {
		t.Fatalf("listener with an empty queue: %v", err)
	}
	// Half-closed: the peer closed; the refusal names the state.
	conn.Close()
	var herr error
	for i := 0; i < 200; i++ {
		if _, herr = Inspect(afd); herr != nil && strings.Contains(herr.Error(), "CLOSE_WAIT") {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(herr, ErrUnsupported) || !strings.Contains(herr.Error(), "CLOSE_WAIT") {
		t.Fatalf("half-closed connection: %v", herr)
	}
}

// TestConnectedUDPRoundTrip: a connected UDP socket with options comes
// back bound to the same port, connected to the same peer, options set;
// the peer's datagrams reach it and its own reach the peer.
func TestConnectedUDPRoundTrip(t *testing.T) {
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	pa := peer.LocalAddr().(*net.UDPAddr)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: pa.Port}); err != nil {
		t.Fatal(err)
	}
	for _, o := range [][3]int{{unix.IPPROTO_IP, unix.IP_TOS, 0x20}, {unix.SOL_SOCKET, unix.SO_PRIORITY, 3}, {unix.SOL_SOCKET, unix.SO_RCVBUF, 100000}} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			t.Fatal(err)
		}
	}
	st, err := Inspect(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if st.Peer != pa.String() || st.Addr == "" || st.Opts == nil || st.Opts.TOS != 0x20 || st.Opts.Priority != 3 ||
		st.Opts.RcvBuf != 200000 || st.Opts.SndBuf != 0 {
		t.Fatalf("state %+v opts %+v", st, st.Opts)
	}
	nfd, err := Create(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(nfd), "udp")
	defer f.Close()
	if v, _ := unix.GetsockoptInt(nfd, unix.IPPROTO_IP, unix.IP_TOS); v != 0x20 {
		t.Errorf("IP_TOS %#x after restore", v)
	}
	if v, _ := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_RCVBUF); v != 200000 {
		t.Errorf("SO_RCVBUF %d after restore, want 200000", v)
	}
	if _, err := f.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "ping" || from.String() != st.Addr {
		t.Fatalf("peer got %q from %v (%v), want ping from %s", buf[:n], from, err, st.Addr)
	}
	if _, err := peer.WriteToUDP([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("restored socket read %q, %v", buf[:n], err)
	}
}

// TestEndedTCP: a connection the peer reset, or that both sides closed,
// while the program still holds its socket comes back as a socket with no
// connection: a read fails and poll reports a hang-up. A bound socket
// that never connected is still refused (control).
func TestEndedTCP(t *testing.T) {
	for _, how := range []string{"reset", "closed"} {
		t.Run(how, func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			f, _ := sc.(*net.TCPConn).File()
			sc.Close()
			defer f.Close()
			fd := int(f.Fd())
			if how == "reset" {
				client.(*net.TCPConn).SetLinger(0)
				client.Close()
			} else {
				client.Close()
				time.Sleep(20 * time.Millisecond)
				unix.Shutdown(fd, unix.SHUT_WR)
			}
			for i := 0; i < 500 && tcpStateName(fd) != "CLOSE"; i++ {
				time.Sleep(time.Millisecond)
			}
			st, err := Inspect(fd)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Ended || st.Addr != "" {
				t.Fatalf("state %+v", st)
			}
			nfd, err := Create(st, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(nfd)
			if _, err := unix.Read(nfd, make([]byte, 1)); !errors.Is(err, unix.ENOTCONN) {
				t.Errorf("read: %v, want ENOTCONN", err)
			}
			p := []unix.PollFd{{Fd: int32(nfd), Events: unix.POLLIN}}
			if _, err := unix.Poll(p, 0); err != nil || p[0].Revents&unix.POLLHUP == 0 {
				t.Errorf("poll: %#x, %v; want POLLHUP", p[0].Revents, err)
			}
		})
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(fd); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bound, never connected: %v", err)
	}
}

// TestMPTCPListener: an MPTCP listener (what Go's net.Listen makes) is
// carried and accepts plain TCP clients, whose connections are plain TCP;
// a connection whose client spoke MPTCP too is refused with a way out.
func TestMPTCPListener(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
	if err != nil {
		t.Skipf("no MPTCP here: %v", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := errors.Join(unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}), unix.Listen(fd, 9)); err != nil {
		t.Fatal(err)
	}
	st, err := Inspect(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if st.Protocol != unix.IPPROTO_MPTCP || !st.Listening {
		t.Fatalf("state %+v", st)
	}
	nfd, err := Create(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nfd)
	if p, _ := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_PROTOCOL); p != unix.IPPROTO_MPTCP {
		t.Errorf("restored listener protocol %d", p)
	}
	c, err := net.Dial("tcp", st.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	afd, _, err := unix.Accept(nfd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(afd)
	if !CarriedTCP(afd) {
		t.Errorf("a plain TCP client's connection is not carried")
	}

	mc, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mc)
	sa, _ := unix.Getsockname(nfd)
	if err := unix.Connect(mc, sa); err != nil {
		t.Fatal(err)
	}
	mfd, _, err := unix.Accept(nfd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if _, err := Inspect(mfd); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "GODEBUG=multipathtcp=0") {
		t.Fatalf("MPTCP connection: %v", err)
	}
}

// TestFreeBindListener: a listener bound with IP_FREEBIND to an address
// the host does not have (a service address still on its way) comes back:
// the option is set again before the bind, which would fail without it.
func TestFreeBindListener(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	nowhere := &unix.SockaddrInet4{Addr: [4]byte{192, 0, 2, 77}}
	if err := errors.Join(unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1), unix.Bind(fd, nowhere), unix.Listen(fd, 4)); err != nil {
		t.Fatal(err)
	}
	st, err := Inspect(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if st.Opts == nil || !st.Opts.FreeBind {
		t.Fatalf("options %+v", st.Opts)
	}
	nfd, err := Create(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(nfd)
	st.Opts.FreeBind = false
	if nfd, err := Create(st, 0); err == nil {
		unix.Close(nfd)
		t.Fatal("control: bound an address the host lacks without IP_FREEBIND")
	}
}

// TestConnectingTCP: a socket whose connect is under way (its SYN
// unanswered: the listener's port is locked) comes back connecting to
// the same peer; once the SYNs get through it connects and carries data.
func TestConnectingTCP(t *testing.T) {
	needLock(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	lock, err := NewLock("relocate_listen_2000000003", nil, []uint16{uint16(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); !errors.Is(err, unix.EINPROGRESS) {
		t.Fatalf("connect: %v", err)
	}
	st, err := Inspect(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Connecting || st.Peer != ln.Addr().String() {
		t.Fatalf("state %+v", st)
	}
	nfd, err := Create(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(nfd), "restored")
	defer f.Close()
	if s := tcpState(nfd); s != tcpSynSent {
		t.Fatalf("restored socket in state %d, want SYN_SENT", s)
	}
	if fl, _ := unix.FcntlInt(uintptr(nfd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Errorf("restored socket left non-blocking")
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	// A blocking connect, as the program's interrupted one runs again,
	// waits for the connection (EALREADY would mean it does not).
	if err := unix.Connect(nfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		t.Fatalf("connect again on the restored socket: %v", err)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := f.Write([]byte("connected")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "connected" {
		t.Fatalf("listener got %q, %v", buf, err)
	}
}
