package sock

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestUnixPairRoundTrip: a socketpair with bytes queued both ways and one
// direction shut down is read, made again, and carries on: each end reads
// what was waiting for it, then new bytes, and the shut direction stays
// shut.
func TestUnixPairRoundTrip(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := fds[0], fds[1]
	defer unix.Close(a)
	defer unix.Close(b)
	if _, err := unix.Write(a, []byte("for-b-1 ")); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(a, []byte("for-b-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(b, []byte("for-a")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(b, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	ca, err := InspectUnix(a, inode(t, a), false)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := InspectUnix(b, inode(t, b), false)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Peer != cb.Ino || cb.Peer != ca.Ino {
		t.Fatalf("peers: a %+v b %+v", ca, cb)
	}
	if string(ca.Queue) != "for-a" || string(cb.Queue) != "for-b-1 for-b-2" {
		t.Fatalf("queues %q %q", ca.Queue, cb.Queue)
	}
	if cb.Shutdown != 2 || ca.Shutdown != 1 {
		t.Fatalf("shutdown bits a=%d b=%d, want 1 (peer stopped sending) and 2", ca.Shutdown, cb.Shutdown)
	}
	// The originals still hold their bytes: peeking consumed nothing.
	if n, _ := unix.IoctlGetInt(b, unix.SIOCINQ); n != len("for-b-1 for-b-2") {
		t.Fatalf("original queue now %d bytes", n)
	}

	na, nb, err := CreateUnixPair(ca, cb, 0, unix.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	fa, fb := os.NewFile(uintptr(na), "a"), os.NewFile(uintptr(nb), "b")
	defer fa.Close()
	defer fb.Close()
	buf := make([]byte, 64)
	if n, err := fb.Read(buf); err != nil || string(buf[:n]) != "for-b-1 for-b-2" {
		t.Fatalf("b read %q, %v", buf[:n], err)
	}
	if n, err := fa.Read(buf); err != nil || string(buf[:n]) != "for-a" {
		t.Fatalf("a read %q, %v", buf[:n], err)
	}
	if _, err := fb.Write([]byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("b's write side should stay shut, got %v", err)
	}
	if _, err := fa.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	if n, err := fb.Read(buf); err != nil || string(buf[:n]) != "more" {
		t.Fatalf("b read %q, %v", buf[:n], err)
	}
	if fl, _ := unix.FcntlInt(uintptr(nb), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("b lost O_NONBLOCK")
	}
}

// TestUnixRefusals: a descriptor in flight, and a connection to a named
// listener, are refused.
func TestUnixRefusals(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := unix.Sendmsg(fds[0], []byte("fd"), unix.UnixRights(0), nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectUnix(fds[1], inode(t, fds[1]), false); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("descriptor in flight: %v", err)
	}

	path := t.TempDir() + "/l.sock"
	l := listener(t, unix.AF_UNIX, &unix.SockaddrUnix{Name: path})
	defer unix.Close(l)
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// Not accepted yet: its other end, in the listener's queue, is no
	// file anyone has.
	if _, err := InspectUnix(c, inode(t, c), false); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("connection not accepted yet: %v", err)
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	// Accepted: both ends recorded with their peer and the listener's name.
	if d, err := InspectUnix(c, inode(t, c), false); err != nil || d.Peer != inode(t, a) || d.Listener != path {
		t.Fatalf("connecting end: %+v, %v", d, err)
	}
	if d, err := InspectUnix(a, inode(t, a), false); err != nil || d.Peer != inode(t, c) || d.Listener != path {
		t.Fatalf("accepted end: %+v, %v", d, err)
	}
	// A client that bound a name of its own is refused.
	b, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(b)
	if err := unix.Bind(b, &unix.SockaddrUnix{Name: path + ".client"}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(b, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectUnix(b, inode(t, b), false); !errors.Is(err, errUnixNamed) {
		t.Fatalf("named client: %v", err)
	}
	// Opted in: recorded as an end whose peer is gone.
	if d, err := InspectUnix(b, inode(t, b), true); err != nil || d.Peer != 0 {
		t.Fatalf("named client, disconnected: %+v, %v", d, err)
	}
}

// TestUnixOrphan: an end whose peer was closed keeps its unread bytes,
// then reads EOF, and writing to it fails.
func TestUnixOrphan(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	if _, err := unix.Write(fds[1], []byte("last words")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	c, err := InspectUnix(fds[0], inode(t, fds[0]), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer != 0 || string(c.Queue) != "last words" {
		t.Fatalf("orphan end %+v", c)
	}
	nfd, err := CreateUnixOrphan(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(nfd), "orphan")
	defer f.Close()
	buf := make([]byte, 32)
	if n, err := f.Read(buf); err != nil || string(buf[:n]) != "last words" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := f.Read(buf); n != 0 || err == nil {
		t.Fatalf("after the queue: %d bytes, %v; want EOF", n, err)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("write to an orphan end: %v, want EPIPE", err)
	}
}

// TestUnixMessagesRoundTrip: datagram and seqpacket pairs keep their
// queued messages, boundaries and order (an empty one included), and the
// original socket's peek offset is left as it was.
func TestUnixMessagesRoundTrip(t *testing.T) {
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"first", "", "third message"}
		for _, m := range want {
			if err := unix.Sendmsg(fds[0], []byte(m), nil, nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		cb, err := InspectUnix(fds[1], inode(t, fds[1]), false)
		if err != nil {
			t.Fatal(err)
		}
		if off, _ := unix.GetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF); off != -1 {
			t.Errorf("type %d: peek offset left at %d", typ, off)
		}
		if len(cb.Msgs) != len(want) {
			t.Fatalf("type %d: %d messages %q, want %d", typ, len(cb.Msgs), cb.Msgs, len(want))
		}
		ca, err := InspectUnix(fds[0], inode(t, fds[0]), false)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fds[0])
		unix.Close(fds[1])
		na, nb, err := CreateUnixPair(ca, cb, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		for _, w := range want {
			n, err := unix.Read(nb, buf)
			if err != nil || string(buf[:n]) != w {
				t.Fatalf("type %d: read %q, %v; want %q", typ, buf[:n], err, w)
			}
		}
		unix.Close(na)
		unix.Close(nb)
	}
}

// dgramSocket makes a unix datagram socket, bound to name unless it is "".
func dgramSocket(t *testing.T, name string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if name != "" {
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
	}
	return fd
}

// TestUnixDgramReconnect: an unnamed datagram socket connected to a named
// one (a syslog client's to /dev/log) comes back connected to the same
// name: what it sends reaches the service. Control: once it has a name of
// its own (autobind), the service could have written to it, and it is
// refused like any connection to a named socket.
func TestUnixDgramReconnect(t *testing.T) {
	for _, name := range []string{t.TempDir() + "/log", "@relocate-test-log"} {
		srv := dgramSocket(t, name)
		defer unix.Close(srv)
		c := dgramSocket(t, "")
		defer unix.Close(c)
		if err := unix.Connect(c, &unix.SockaddrUnix{Name: name}); err != nil {
			t.Fatal(err)
		}
		st, err := InspectUnix(c, inode(t, c), false)
		if err != nil {
			t.Fatal(err)
		}
		if st.Connect != name {
			t.Fatalf("%s: state %+v", name, st)
		}
		nc, err := CreateUnixOrphan(st, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(nc)
		if _, err := unix.Write(nc, []byte("<13>after restore")); err != nil {
			t.Fatalf("%s: send after restore: %v", name, err)
		}
		buf := make([]byte, 64)
		n, _, err := unix.Recvfrom(srv, buf, unix.MSG_DONTWAIT)
		if err != nil || string(buf[:n]) != "<13>after restore" {
			t.Fatalf("%s: service got %q, %v", name, buf[:max(n, 0)], err)
		}

		if err := unix.Bind(c, &unix.SockaddrUnix{}); err != nil { // autobind
			t.Fatal(err)
		}
		if _, err := InspectUnix(c, inode(t, c), false); !errors.Is(err, errUnixNamed) {
			t.Fatalf("%s: autobound client: %v", name, err)
		}
	}
}

// TestUnixDgramService: a bound unix datagram socket (a log service's)
// comes back bound to its path with the datagrams unnamed clients had
// sent it, in order; one with a datagram from a named sender is refused
// (it could not be sent again from that name); an unbound, unconnected
// one comes back as a fresh socket.
func TestUnixDgramService(t *testing.T) {
	path := t.TempDir() + "/svc"
	srv := dgramSocket(t, path)
	c := dgramSocket(t, "")
	defer unix.Close(c)
	for _, m := range []string{"first", "", "third"} {
		if err := unix.Sendto(c, []byte(m), 0, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := Inspect(srv)
	unix.Close(srv) // its path is free for the restored one
	if err != nil {
		t.Fatal(err)
	}
	if st.Addr != path || len(st.Queue) != 3 {
		t.Fatalf("state %+v", st)
	}
	nfd, err := Create(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nfd)
	buf := make([]byte, 64)
	for _, want := range []string{"first", "", "third"} {
		n, _, err := unix.Recvfrom(nfd, buf, unix.MSG_DONTWAIT)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("restored service read %q, %v; want %q", buf[:max(n, 0)], err, want)
		}
	}

	named := dgramSocket(t, path+".client")
	defer unix.Close(named)
	if err := unix.Sendto(named, []byte("from a name"), 0, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(nfd); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a datagram from a named sender: %v", err)
	}

	fresh := dgramSocket(t, "")
	st, err = Inspect(fresh)
	unix.Close(fresh)
	if err != nil || st.Addr != "" || len(st.Queue) != 0 {
		t.Fatalf("unbound socket: %+v, %v", st, err)
	}
	if fd, err := Create(st, 0); err != nil {
		t.Fatal(err)
	} else {
		unix.Close(fd)
	}
}
