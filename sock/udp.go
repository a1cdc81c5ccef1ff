package sock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Datagram is one datagram waiting in a UDP socket's receive queue.
type Datagram struct {
	From string `json:"from,omitempty"` // the sender, "ip:port" ("" for a unix one: unnamed)
	To   string `json:"to,omitempty"`   // where it was sent, "ip:port"
	Data []byte `json:"data"`
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// peekDatagrams copies the datagrams queued on a UDP socket, in order,
// with their sender and original destination, without consuming them:
// SO_PEEK_OFF moves each peek to the next datagram, and IP(V6)_ORIGDSTADDR
// tells where each was sent (a socket bound to a wildcard address takes
// them for every local address). The socket's own settings are put back.
func peekDatagrams(fd, family int) ([]Datagram, error) {
	type opt struct{ level, name int }
	opts := []opt{{unix.SOL_SOCKET, unix.SO_PEEK_OFF}, {unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR}}
	if family == unix.AF_INET6 {
		opts = append(opts, opt{unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR})
	}
	for i, o := range opts {
		old, err := unix.GetsockoptInt(fd, o.level, o.name)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %d/%d: %w", o.level, o.name, err)
		}
		defer unix.SetsockoptInt(fd, o.level, o.name, old)
		v := 1
		if i == 0 {
			v = 0 // SO_PEEK_OFF: from the first queued byte
		}
		if err := unix.SetsockoptInt(fd, o.level, o.name, v); err != nil {
			return nil, fmt.Errorf("setsockopt %d/%d: %w", o.level, o.name, err)
		}
	}
	var out []Datagram
	buf := make([]byte, maxDatagram+1)
	oob := make([]byte, 256)
	for {
		n, oobn, flags, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("peek queued datagrams: %w", err)
		}
		if flags&unix.MSG_TRUNC != 0 || n > maxDatagram {
			return nil, fmt.Errorf("a queued datagram over %d bytes (UDP_GRO?): %w", maxDatagram, ErrUnsupported)
		}
		to, err := origDst(oob[:oobn])
		if err != nil {
			return nil, err
		}
		out = append(out, Datagram{From: addrString(from), To: to, Data: append([]byte(nil), buf[:n]...)})
	}
}

// origDst finds the IP_ORIGDSTADDR or IPV6_ORIGDSTADDR message.
func origDst(oob []byte) (string, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return "", fmt.Errorf("control messages: %w", err)
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet4:
			a := netip.AddrFrom4([4]byte(m.Data[4:8]))
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(m.Data[2:4])).String(), nil
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet6:
			a := netip.AddrFrom16([16]byte(m.Data[8:24]))
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(m.Data[2:4])).String(), nil
		}
	}
	return "", errors.New("a queued datagram without its destination address")
}

// requeue puts datagrams back into the receive queue of fd, a bound UDP
// socket, as if their senders had sent them again: each goes out of a raw
// socket with its original source address and port, to its original
// destination, or, if that address is not on this host, to the loopback
// address (the socket is bound to a wildcard address then, or its own
// bind would have failed). Nothing leaves the host. The queue is checked
// afterwards: a datagram the kernel dropped (a smaller receive buffer
// here) fails the restore rather than going missing.
func requeue(fd int, q []Datagram) error {
	for i, d := range q {
		from, err1 := netip.ParseAddrPort(d.From)
		to, err2 := netip.ParseAddrPort(d.To)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("queued datagram %d: %w", i, err)
		}
		src := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		dst := to.Addr().Unmap()
		if src.Addr().Is4() != dst.Is4() {
			return fmt.Errorf("queued datagram %d: from %s to %s: mixed address families", i, d.From, d.To)
		}
		if !isLocal(dst) {
			dst = netip.IPv6Loopback()
			if src.Addr().Is4() {
				dst = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			}
		}
		if err := sendRaw(udpPacket(src, netip.AddrPortFrom(dst, to.Port()), d.Data), dst); err != nil {
			return fmt.Errorf("requeue datagram %d (%s -> %s): %w", i, src, dst, err)
		}
	}
	// Loopback delivery runs in softirq context: give it a moment. (New
	// datagrams from the network may join them meanwhile.)
	var want, got queueSize
	for _, d := range q {
		want.add(len(d.Data))
	}
	for wait := time.Millisecond; wait < time.Second; wait *= 2 {
		if got = queued(fd); got.n >= want.n && got.bytes >= want.bytes {
			return nil
		}
		time.Sleep(wait)
	}
	return fmt.Errorf("%d of %d queued datagrams (%d of %d bytes) could be put back (receive buffer too small here?)",
		got.n, want.n, got.bytes, want.bytes)
}

// queueSize counts datagrams that carry bytes, and their bytes. Empty
// datagrams are left out: once peeked at, the kernel skips them in a peek
// at an offset (so a dump misses an empty datagram the program itself
// peeked at and left queued).
type queueSize struct{ n, bytes int }

func (q *queueSize) add(n int) {
	if n > 0 {
		q.n++
		q.bytes += n
	}
}

// queued measures what waits on fd.
func queued(fd int) queueSize {
	var q queueSize
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil || unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0) != nil {
		return q
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	buf := make([]byte, maxDatagram+1)
	for {
		n, _, _, _, err := unix.Recvmsg(fd, buf, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			return q
		}
		q.add(n) // an empty datagram is marked peeked, and skipped next time

	}
}

// isLocal reports whether a is an address of this host (of this network
// namespace): a socket can be bound to it.
func isLocal(a netip.Addr) bool {
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: a.As16()})
	if a.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: a.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, sa) == nil
}
