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

// TestLockDropsAndLeavesNoTrace: while locked, a connection carries no
// data; after Unlock it does again and the ruleset is as before.
func TestLockDropsAndLeavesNoTrace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) for nftables")
	}
	if err := LockAvailable(); err != nil {
		t.Skipf("nftables unavailable: %v", err)
	}
	before := tableNames(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	lport := uint16(server.LocalAddr().(*net.TCPAddr).Port)
	pport := uint16(server.RemoteAddr().(*net.TCPAddr).Port)

	l, err := NewLock("relocate-test-lock", []Conn{{LocalPort: lport, PeerPort: pport}})
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
	if len(after) != len(before) || after["relocate-test-lock"] {
		t.Fatalf("ruleset tables before %v, after %v", before, after)
	}
}
