package sock

import (
	"errors"
	"io"
	"net"
	"os"
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
