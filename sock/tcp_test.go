package sock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// fileOf turns a net.Conn into a file of its own (the conn is closed).
func fileOf(t *testing.T, c net.Conn) *os.File {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return f
}

// lockOf locks the connection of socket fd, until the test ends.
func lockOf(t *testing.T, fd int) *Lock {
	t.Helper()
	sa, _ := unix.Getsockname(fd)
	pa, _ := unix.Getpeername(fd)
	port := func(sa unix.Sockaddr) uint16 { return netip.MustParseAddrPort(addrString(sa)).Port() }
	lock, err := NewLock("relocate_2000000004", []Conn{{LocalPort: port(sa), PeerPort: port(pa)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Unlock() })
	return lock
}

// checkpointConn does to the connection of f's socket what a dump and a
// restore do: lock it (unless lock is given), read it in repair mode,
// close f (which sends nothing) and rebuild it, still in repair mode and
// locked.
func checkpointConn(t *testing.T, f *os.File, flags int, lock *Lock) (*TCPConn, int, *Lock) {
	t.Helper()
	fd := int(f.Fd())
	if lock == nil {
		lock = lockOf(t, fd)
	}
	if err := RepairOn(fd); err != nil {
		t.Fatal(err)
	}
	st, err := InspectTCP(fd)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	nfd, err := CreateTCP(st, flags)
	if err != nil {
		t.Fatal(err)
	}
	return st, nfd, lock
}

// TestTCPRepairRoundTrip: the server end of a loopback connection, with
// unread bytes in both directions, is read in repair mode, closed (which
// sends nothing), rebuilt, and goes on carrying data both ways.
func TestTCPRepairRoundTrip(t *testing.T) {
	_, client, sc := lockedLoopback(t)
	server := sc.(*net.TCPConn)
	if _, err := client.Write([]byte("to-server")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("to-client")); err != nil {
		t.Fatal(err)
	}
	f, err := server.File() // a duplicate: the Go conn can be closed
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	fd := int(f.Fd())
	// Options a server sets on its connections: they come back.
	for _, o := range [][3]int{{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1}, {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 77}, {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 9000}, {unix.IPPROTO_IP, unix.IP_TOS, 0x10}} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			t.Fatal(err)
		}
	}
	// Buffer sizes the program chose come back; autotuned ones are not
	// stored (the client's, whose size nobody set).
	if err := errors.Join(unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 40000),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 50000)); err != nil {
		t.Fatal(err)
	}
	if cf, err := client.(*net.TCPConn).File(); err != nil {
		t.Fatal(err)
	} else {
		if o := inspectOptions(int(cf.Fd()), unix.AF_INET, unix.IPPROTO_TCP); o != nil && (o.SndBuf != 0 || o.RcvBuf != 0) {
			t.Errorf("autotuned buffers stored: %+v", o)
		}
		cf.Close()
	}
	// Wait until "to-server" is in the server's receive queue.
	for i := 0; i < 500; i++ {
		if n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ); n == 9 {
			break
		}
		time.Sleep(time.Millisecond)
	}

	st, nfd, lock := checkpointConn(t, f, 0, nil)
	if string(st.RecvQueue) != "to-server" {
		t.Fatalf("receive queue %q", st.RecvQueue)
	}
	if err := FinishTCP(nfd, st); err != nil {
		t.Fatal(err)
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	for _, o := range [][3]int{{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1}, {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 77}, {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 9000}, {unix.IPPROTO_IP, unix.IP_TOS, 0x10}} {
		if v, err := unix.GetsockoptInt(nfd, o[0], o[1]); err != nil || v != o[2] {
			t.Errorf("option %d/%d: %d, %v; want %d", o[0], o[1], v, err, o[2])
		}
	}
	for _, o := range [][2]int{{unix.SO_SNDBUF, 80000}, {unix.SO_RCVBUF, 100000}} {
		if v, err := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, o[0]); err != nil || v != o[1] {
			t.Errorf("buffer option %d: %d, %v; want %d", o[0], v, err, o[1])
		}
	}
	restored := os.NewFile(uintptr(nfd), "restored")
	defer restored.Close()

	buf := make([]byte, 9)
	if _, err := io.ReadFull(restored, buf); err != nil || string(buf) != "to-server" {
		t.Fatalf("restored end read %q, %v", buf, err)
	}
	if _, err := restored.Write([]byte("+after")); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len("to-client+after"))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "to-client+after" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if _, err := client.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(restored, buf[:1]); err != nil || buf[0] != '!' {
		t.Fatalf("restored end read %q, %v", buf[:1], err)
	}
}

// TestTCPHalfClosed: a connection in each half-closed state is read in
// repair mode, closed, rebuilt in the same state, and then behaves as the
// original would have: queued bytes, then EOF where the peer had closed,
// EPIPE where we had, and a FIN the peer had not seen yet arrives. The
// network lock is on from before the last step of each setup until the
// connection is rebuilt, as during a dump.
func TestTCPHalfClosed(t *testing.T) {
	for _, c := range []struct {
		state uint8
		// setup brings the server end fd to its state; lock installs
		// the network lock (setup calls it when its last step must
		// happen under the lock).
		setup func(t *testing.T, client *net.TCPConn, fd int, lock func())
		check func(t *testing.T, client *net.TCPConn, restored *os.File)
	}{
		{tcpCloseWait, func(t *testing.T, client *net.TCPConn, fd int, lock func()) {
			client.Write([]byte("last words"))
			client.CloseWrite()
		}, func(t *testing.T, client *net.TCPConn, restored *os.File) {
			if b, err := io.ReadAll(restored); err != nil || string(b) != "last words" {
				t.Fatalf("restored end read %q, %v; want the queued bytes, then EOF", b, err)
			}
			if _, err := restored.Write([]byte("answer")); err != nil {
				t.Fatal(err)
			}
			restored.Close()
			if b, err := io.ReadAll(client); err != nil || string(b) != "answer" {
				t.Fatalf("client read %q, %v", b, err)
			}
		}},
		{5 /* FIN_WAIT2 */, func(t *testing.T, client *net.TCPConn, fd int, lock func()) {
			unix.Write(fd, []byte("from server"))
			unix.Shutdown(fd, unix.SHUT_WR)
			client.Write([]byte("unread"))
		}, func(t *testing.T, client *net.TCPConn, restored *os.File) {
			if b, err := io.ReadAll(client); err != nil || string(b) != "from server" {
				t.Fatalf("client read %q, %v", b, err)
			}
			if _, err := restored.Write([]byte("x")); !errors.Is(err, unix.EPIPE) {
				t.Fatalf("write after our FIN: %v, want EPIPE", err)
			}
			client.Write([]byte(", more"))
			client.CloseWrite()
			if b, err := io.ReadAll(restored); err != nil || string(b) != "unread, more" {
				t.Fatalf("restored end read %q, %v", b, err)
			}
		}},
		{4 /* FIN_WAIT1 */, func(t *testing.T, client *net.TCPConn, fd int, lock func()) {
			lock() // our data and FIN go unacknowledged
			unix.Write(fd, []byte("in flight"))
			unix.Shutdown(fd, unix.SHUT_WR)
		}, func(t *testing.T, client *net.TCPConn, restored *os.File) {
			if b, err := io.ReadAll(client); err != nil || string(b) != "in flight" {
				t.Fatalf("client read %q, %v; want the bytes, then EOF", b, err)
			}
		}},
		{9 /* LAST_ACK */, func(t *testing.T, client *net.TCPConn, fd int, lock func()) {
			client.CloseWrite()
			waitTCPState(t, fd, tcpCloseWait)
			lock()
			unix.Shutdown(fd, unix.SHUT_WR)
		}, func(t *testing.T, client *net.TCPConn, restored *os.File) {
			if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
				t.Fatalf("client read %q, %v; want EOF", b, err)
			}
		}},
		{11 /* CLOSING */, func(t *testing.T, client *net.TCPConn, fd int, lock func()) {
			// Both sides close at once: our FIN is lost on the way, the
			// client's arrives.
			lift := dropOneWay(t, fd)
			unix.Shutdown(fd, unix.SHUT_WR)
			waitTCPState(t, fd, 4 /* FIN_WAIT1 */)
			client.CloseWrite()
			waitTCPState(t, fd, 11)
			lock()
			lift()
		}, func(t *testing.T, client *net.TCPConn, restored *os.File) {
			if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
				t.Fatalf("client read %q, %v; want EOF", b, err)
			}
			if b, err := io.ReadAll(restored); err != nil || len(b) != 0 {
				t.Fatalf("restored end read %q, %v; want EOF", b, err)
			}
		}},
	} {
		t.Run(finStates[c.state].name, func(t *testing.T) {
			_, client, sc := lockedLoopback(t)
			f := fileOf(t, sc)
			fd := int(f.Fd())
			var lk *Lock
			lock := func() {
				if lk == nil {
					lk = lockOf(t, fd)
				}
			}
			c.setup(t, client.(*net.TCPConn), fd, lock)
			waitTCPState(t, fd, c.state)
			lock()
			st, nfd, _ := checkpointConn(t, f, 0, lk)
			if st.State != finStates[c.state].name {
				t.Fatalf("inspected state %q", st.State)
			}
			restored := os.NewFile(uintptr(nfd), "restored")
			defer restored.Close()
			if got := tcpStateName(nfd); !strings.HasPrefix(got, st.State) {
				t.Fatalf("rebuilt in state %s, want %s", got, st.State)
			}
			if err := FinishTCP(nfd, st); err != nil {
				t.Fatal(err)
			}
			if err := lk.Unlock(); err != nil {
				t.Fatal(err)
			}
			client.SetDeadline(time.Now().Add(10 * time.Second))
			c.check(t, client.(*net.TCPConn), restored)
		})
	}
}

// dropOneWay drops what socket fd sends to its peer (not the reverse),
// until the returned function is called or the test ends.
func dropOneWay(t *testing.T, fd int) func() {
	t.Helper()
	sa, _ := unix.Getsockname(fd)
	pa, _ := unix.Getpeername(fd)
	port := func(sa unix.Sockaddr) uint16 { return netip.MustParseAddrPort(addrString(sa)).Port() }
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	const name = "relocate_2000000005"
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	prio := nftables.ChainPriority(-200)
	out := c.AddChain(&nftables.Chain{Name: "output", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: &prio})
	c.AddRule(&nftables.Rule{Table: tb, Chain: out, Exprs: dropPorts(port(sa), port(pa))})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	lift := func() {
		if err := UnlockTable(name); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(lift)
	return lift
}

func waitTCPState(t *testing.T, fd int, want uint8) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && ti.State == want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("state %s, want %d", tcpStateName(fd), want)
}

// pattern is the byte stream each side writes: position-dependent, so a
// lost, doubled or reordered chunk shows.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint32(off + i)
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
	return b
}

// fill writes the pattern to fd until the kernel takes no more.
func fill(t *testing.T, fd int) int {
	t.Helper()
	total := 0
	for idle := 0; idle < 20; {
		n, err := unix.Write(fd, pattern(total, 64<<10))
		if n > 0 {
			total += n
			idle = 0
			continue
		}
		if !errors.Is(err, unix.EAGAIN) {
			t.Fatal(err)
		}
		idle++
		time.Sleep(5 * time.Millisecond) // let loopback drain into the peer
	}
	return total
}

// TestTCPLargeQueues: megabytes in both queues of the server end, most
// of its send queue never sent (the client stopped reading) and its
// receive queue larger than a fresh socket holds (the program set a big
// SO_RCVBUF), come back whole: a fresh socket's buffers would refuse
// them. Each side then reads every byte the other wrote, in order.
func TestTCPLargeQueues(t *testing.T) {
	_, client, sc := lockedLoopback(t)
	f := fileOf(t, sc)
	fd := int(f.Fd())
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		t.Fatal(err)
	}
	cf := fileOf(t, client)
	defer cf.Close()
	cfd := int(cf.Fd())
	unix.SetNonblock(fd, true)
	unix.SetNonblock(cfd, true)
	toServer := fill(t, cfd)
	toClient := fill(t, fd)
	inq, _ := unix.IoctlGetInt(fd, unix.SIOCINQ)
	unsent, _ := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	t.Logf("client wrote %d, server %d; server queues: %d unread, %d unsent", toServer, toClient, inq, unsent)
	if inq < 1<<20 || unsent < 1<<20 {
		t.Fatalf("queues too small to test: %d unread, %d unsent", inq, unsent)
	}

	st, nfd, lock := checkpointConn(t, f, unix.O_NONBLOCK, nil)
	restored := os.NewFile(uintptr(nfd), "restored")
	defer restored.Close()
	if err := FinishTCP(nfd, st); err != nil {
		t.Fatal(err)
	}
	if v, _ := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_RCVBUF); v != 8<<20 {
		t.Errorf("SO_RCVBUF %d after restore, want the program's 8 MiB", v)
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}

	// Both directions at once: each side reads while the other's queue
	// drains. The client keeps writing what did not fit before.
	done := make(chan error, 1)
	go func() { done <- drain(cfd, toClient, 30*time.Second) }()
	if err := drain(nfd, toServer, 30*time.Second); err != nil {
		t.Fatalf("restored end: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("client: %v", err)
	}
}

// drain reads want bytes of the pattern from a non-blocking fd.
func drain(fd, want int, limit time.Duration) error {
	buf := make([]byte, 256<<10)
	deadline := time.Now().Add(limit)
	for got := 0; got < want; {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			if exp := pattern(got, n); !bytes.Equal(buf[:n], exp) {
				return fmt.Errorf("bytes %d..%d differ from what was written", got, got+n)
			}
			got += n
			continue
		}
		if n == 0 && err == nil {
			return fmt.Errorf("EOF after %d of %d bytes", got, want)
		}
		if !errors.Is(err, unix.EAGAIN) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d bytes", got, want)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// TestTCPDualStack: a connection an IPv6 dual-stack listener accepted
// from an IPv4 client (an AF_INET6 socket with IPv4-mapped addresses)
// comes back as an AF_INET6 socket with the same addresses, and carries
// data.
func TestTCPDualStack(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0") // dual-stack
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f := fileOf(t, sc)
	if d, _ := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN); d != unix.AF_INET6 {
		t.Skipf("accepted socket family %d", d)
	}
	before, _ := unix.Getpeername(int(f.Fd()))
	needLock(t)
	st, nfd, lock := checkpointConn(t, f, 0, nil)
	restored := os.NewFile(uintptr(nfd), "restored")
	defer restored.Close()
	if err := FinishTCP(nfd, st); err != nil {
		t.Fatal(err)
	}
	lock.Unlock()
	if d, _ := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_DOMAIN); d != unix.AF_INET6 {
		t.Errorf("restored socket family %d, want AF_INET6", d)
	}
	if after, _ := unix.Getpeername(nfd); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("peer %v after restore, was %v", after, before)
	}
	if _, err := client.Write([]byte("v4 client")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	restored.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(restored, buf); err != nil || string(buf) != "v4 client" {
		t.Fatalf("restored end read %q, %v", buf, err)
	}
}
