package sock

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"
)

func tableNames(t *testing.T) map[string]bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, tb := range ts {
		out[tb.Name] = true
	}
	return out
}

// needLock skips unless the network lock (nftables) and TCP_REPAIR can be
// used here.
func needLock(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) for nftables and TCP_REPAIR")
	}
	if err := LockAvailable(); err != nil {
		t.Skipf("nftables unavailable: %v", err)
	}
}

// lockedLoopback skips unless nftables can be used here, and returns a
// listener with one accepted connection: the client end and the server end.
func lockedLoopback(t *testing.T) (ln net.Listener, client, server net.Conn) {
	t.Helper()
	needLock(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if client, err = net.Dial("tcp4", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return ln, client, server
}

// TestLockDropsAndLeavesNoTrace: while locked, a connection carries no
// data; after Unlock it does again and the ruleset is as before.
func TestLockDropsAndLeavesNoTrace(t *testing.T) {
	_, client, server := lockedLoopback(t)
	before := tableNames(t)
	lport := uint16(server.LocalAddr().(*net.TCPAddr).Port)
	pport := uint16(server.RemoteAddr().(*net.TCPAddr).Port)

	l, err := NewLock("relocate_2000000001", []Conn{{LocalPort: lport, PeerPort: pport}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := server.Read(make([]byte, 1)); err == nil {
		t.Fatalf("locked connection delivered %d bytes", n)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	// The retransmission now gets through.
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := server.Read(make([]byte, 1)); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	after := tableNames(t)
	if len(after) != len(before) || after["relocate_2000000001"] {
		t.Fatalf("ruleset tables before %v, after %v", before, after)
	}
}

// TestLockHoldsNewConnections: with a listening port locked, a new
// connection's SYN meets silence (no refusal, no accept) while an
// established connection to the same port still carries data; after
// Unlock the client's retransmitted SYN is accepted.
func TestLockHoldsNewConnections(t *testing.T) {
	ln, old, server := lockedLoopback(t)

	l, err := NewLock("relocate_listen_2000000002", nil, []uint16{uint16(ln.Addr().(*net.TCPAddr).Port)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if c, err := net.DialTimeout("tcp4", ln.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a new connection got through the lock")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("locked dial: %v, want a timeout", err)
	}
	if _, err := old.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 1)); err != nil {
		t.Fatalf("established connection under a listener lock: %v", err)
	}

	type dialed struct {
		c   net.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		done <- dialed{c, err}
	}()
	time.Sleep(200 * time.Millisecond) // the first SYN is dropped
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	d := <-done
	if d.err != nil {
		t.Fatalf("dial after unlock: %v", d.err)
	}
	d.c.Close()
}

func TestCheckLockName(t *testing.T) {
	for _, name := range []string{"relocate_42", "relocate_listen_4194303"} {
		if err := checkLockName(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"filter", "nat", "relocate_", "relocate_0", "relocate_042", "relocate_-1",
		"relocate_1 ", "relocate_listen_", "relocate_x", "relocate_listen_listen_1", "relocate_99999999999"} {
		if err := checkLockName(name); err == nil {
			t.Errorf("%q accepted as a lock table", name)
		}
		if err := UnlockTable(name); err == nil {
			t.Errorf("UnlockTable(%q) went ahead", name)
		}
	}
}
