package sock

import (
	"errors"
	"net"
	"path/filepath"
	"testing"

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
	if _, err := Inspect(fd); !errors.Is(err, ErrUnsupported) {
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
}
