package sock

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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

	lport := uint16(client.RemoteAddr().(*net.TCPAddr).Port)
	pport := uint16(client.LocalAddr().(*net.TCPAddr).Port)
	lock, err := NewLock("relocate-test-tcp", []Conn{{LocalPort: lport, PeerPort: pport}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := RepairOn(fd); err != nil {
		t.Fatal(err)
	}
	st, err := InspectTCP(fd)
	if err != nil {
		t.Fatal(err)
	}
	if string(st.RecvQueue) != "to-server" {
		t.Fatalf("receive queue %q", st.RecvQueue)
	}
	f.Close() // in repair mode: no FIN, no RST
	nfd, err := CreateTCP(st, 0)
	if err != nil {
		t.Fatal(err)
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
	} {
		t.Run(finStates[c.state].name, func(t *testing.T) {
			_, client, sc := lockedLoopback(t)
			f, err := sc.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			sc.Close()
			fd := int(f.Fd())
			var lk *Lock
			lock := func() {
				if lk != nil {
					return
				}
				lport := uint16(client.RemoteAddr().(*net.TCPAddr).Port)
				pport := uint16(client.LocalAddr().(*net.TCPAddr).Port)
				if lk, err = NewLock("relocate-test-half", []Conn{{LocalPort: lport, PeerPort: pport}}, nil); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { lk.Unlock() })
			}
			c.setup(t, client.(*net.TCPConn), fd, lock)
			waitTCPState(t, fd, c.state)
			lock()
			if err := RepairOn(fd); err != nil {
				t.Fatal(err)
			}
			st, err := InspectTCP(fd)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != finStates[c.state].name {
				t.Fatalf("inspected state %q", st.State)
			}
			f.Close() // in repair mode: nothing sent
			nfd, err := CreateTCP(st, 0)
			if err != nil {
				t.Fatal(err)
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
