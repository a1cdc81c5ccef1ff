package sock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// UnixConn is one end of a connected pair of unix sockets whose other end
// is also being checkpointed (a socketpair, typically between a parent
// and its children). Restore makes the pair again with socketpair(2).
type UnixConn struct {
	Type int    `json:"type"` // SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM
	Ino  uint64 `json:"ino"`  // this end's inode, at the dump
	Peer uint64 `json:"peer"` // the other end's inode; 0 when it was closed
	// Queue is what this end has received and not read yet (stream
	// sockets): restore sends it through the other end.
	Queue []byte `json:"queue,omitempty"`
	// Msgs are the messages queued on a datagram or seqpacket end, in
	// order, sent again through the other end at restore.
	Msgs [][]byte `json:"msgs,omitempty"`
	// Connect is the named socket an unnamed datagram socket was
	// connected to (syslog's /dev/log, journald's socket): there is no
	// connection to carry, so restore connects a fresh socket to that
	// address again. If nothing listens there any more, the socket comes
	// back unconnected and its sends fail, as they would have once the
	// service went away.
	Connect string `json:"connect,omitempty"`
	// Shutdown is the RCV_SHUTDOWN|SEND_SHUTDOWN bits (1, 2) of this end.
	Shutdown int `json:"shutdown,omitempty"`
	// Listener is the name (a path, "@abstract") of the listener a
	// stream or seqpacket connection was made through: this end's own
	// name if it was accepted, its peer's if it connected. Restore makes
	// the pair again with socketpair(2) when both ends are in the tree;
	// getsockname and getpeername then report no name.
	Listener string `json:"listener,omitempty"`
}

// errUnixNamed: connections made with connect(2) to a named socket carry
// addresses that a socketpair cannot give back.
var errUnixNamed = fmt.Errorf("a unix connection to a named socket (--unix-disconnect brings it back closed): %w", ErrUnsupported)

// InspectUnix reads a connected unix socket. fd is a duplicate of the
// process's descriptor; ino is its inode. A stream or seqpacket
// connection made through a named listener is recorded with its peer and
// Listener set: whether the peer is in the checkpoint is for the caller
// to tell. Any other connection involving a name (a datagram socket, a
// client that bound a name of its own) is refused unless disconnect:
// then it is recorded as an end whose peer is gone (Peer 0), which is how
// it comes back.
func InspectUnix(fd int, ino uint64, disconnect bool) (*UnixConn, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, err
	}
	// x/sys reports an unnamed socket as "@" (its empty path read as an
	// abstract name).
	named := func(sa unix.Sockaddr) bool { a := addrString(sa); return a != "" && a != "@" }
	sn, serr := unix.Getsockname(fd)
	pn, perr := unix.Getpeername(fd)
	isNamed := (serr == nil && named(sn)) || (perr == nil && named(pn))
	if peer := addrString(pn); typ == unix.SOCK_DGRAM && serr == nil && !named(sn) && perr == nil &&
		(strings.HasPrefix(peer, "/") || strings.HasPrefix(peer, "@") && peer != "@") {
		// Nothing can be waiting: without a name of its own, no one can
		// send to it. (A name the service bound relative to its own
		// directory cannot be found again: refused below.)
		return &UnixConn{Type: typ, Ino: ino, Connect: peer}, nil
	}
	// Through a listener: one end bears its name, the other none.
	listener := ""
	if typ != unix.SOCK_DGRAM && serr == nil && perr == nil && named(sn) != named(pn) {
		if listener = addrString(sn); !named(sn) {
			listener = addrString(pn)
		}
		isNamed = false
	}
	if isNamed && !disconnect {
		return nil, errUnixNamed
	}
	d, err := unixDiag(ino)
	if err != nil {
		return nil, err
	}
	// Peer 0: the other end was closed (this one reads the rest, then EOF).
	c := &UnixConn{Type: typ, Ino: ino, Peer: d.peer, Shutdown: d.shutdown, Listener: listener}
	if listener != "" && d.peer == 0 && d.shutdown != 3 && !disconnect {
		// No peer, yet not shut down by its closing: the other end
		// waits in the accept queue of a listener outside the tree (one
		// inside would have been refused).
		return nil, fmt.Errorf("a unix connection through %s that its listener has not accepted yet (--unix-disconnect brings it back closed): %w", listener, ErrUnsupported)
	}
	if isNamed {
		c.Peer = 0
	}
	if typ != unix.SOCK_STREAM {
		if c.Msgs, err = peekMessages(fd); err != nil {
			return nil, err
		}
		return c, nil
	}
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCINQ: %w", err)
	}
	if n == 0 {
		return c, nil
	}
	if c.Queue, err = peekUnix(fd, n); err != nil {
		return nil, err
	}
	return c, nil
}

// maxUnixMessage bounds one queued datagram (the default send buffer is
// about 208 KiB).
const maxUnixMessage = 1 << 20

// peekMessages copies the queued messages of a datagram or seqpacket end
// without consuming them: with SO_PEEK_OFF each peek moves on to the next
// message. The socket's own peek offset is put back.
func peekMessages(fd int) ([][]byte, error) {
	msgs, _, err := peekMessagesFrom(fd)
	return msgs, err
}

// peekMessagesFrom is peekMessages with each message's sender ("" for an
// unnamed one).
func peekMessagesFrom(fd int) ([][]byte, []string, error) {
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	var msgs [][]byte
	var from []string
	buf := make([]byte, maxUnixMessage)
	oob := make([]byte, unix.CmsgSpace(4*64))
	for {
		n, oobn, flags, sa, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EAGAIN) {
			return msgs, from, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("peek queued messages: %w", err)
		}
		if err := refuseRights(oob[:oobn]); err != nil {
			return nil, nil, err
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, nil, fmt.Errorf("a queued message over %d bytes: %w", maxUnixMessage, ErrUnsupported)
		}
		msgs = append(msgs, append([]byte(nil), buf[:n]...))
		sender := ""
		if sa != nil {
			if sender = addrString(sa); sender == "@" {
				sender = ""
			}
		}
		from = append(from, sender)
	}
}

// refuseRights fails on descriptors in flight (SCM_RIGHTS), closing the
// copies a peek installed here.
func refuseRights(oob []byte) error {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, f := range fds {
				unix.Close(f)
			}
			return fmt.Errorf("descriptors in flight (SCM_RIGHTS): %w", ErrUnsupported)
		}
	}
	return nil
}

// peekUnix copies the n queued bytes without consuming them. Descriptors
// in flight (SCM_RIGHTS) are refused: they would be lost.
func peekUnix(fd, n int) ([]byte, error) {
	buf := make([]byte, n)
	oob := make([]byte, unix.CmsgSpace(4*64))
	got, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("peek queued bytes: %w", err)
	}
	if err := refuseRights(oob[:oobn]); err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("peeked %d of %d queued bytes: %w", got, n, ErrUnsupported)
	}
	return buf, nil
}

// CreateUnixPair makes the pair of a and b (b.Ino == a.Peer) and refills
// each end's queue through the other. flagsA and flagsB are the file
// status flags (O_NONBLOCK) of each end.
func CreateUnixPair(a, b *UnixConn, flagsA, flagsB int) (fa, fb int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, a.Type|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socketpair: %w", err)
	}
	fa, fb = fds[0], fds[1]
	fail := func(e error) (int, int, error) {
		unix.Close(fa)
		unix.Close(fb)
		return -1, -1, e
	}
	// a's queue was sent by b, and the other way round.
	if err := errors.Join(sendAll(fb, a.Queue), sendMsgs(fb, a.Msgs)); err != nil {
		return fail(err)
	}
	if err := errors.Join(sendAll(fa, b.Queue), sendMsgs(fa, b.Msgs)); err != nil {
		return fail(err)
	}
	for _, e := range []struct {
		fd, flags int
		c         *UnixConn
	}{{fa, flagsA, a}, {fb, flagsB, b}} {
		if err := finishUnix(e.fd, e.flags, e.c); err != nil {
			return fail(err)
		}
	}
	return fa, fb, nil
}

// CreateUnixOrphan makes an end whose peer is not in the checkpoint: a
// datagram socket connected again to c.Connect, or an end whose peer was
// closed (a pair whose other end sends c's queue and is closed at once).
func CreateUnixOrphan(c *UnixConn, flags int) (int, error) {
	if c.Connect != "" {
		fd, err := unix.Socket(unix.AF_UNIX, c.Type|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("socket: %w", err)
		}
		_ = unix.Connect(fd, &unix.SockaddrUnix{Name: c.Connect}) // see UnixConn.Connect
		if flags&unix.O_NONBLOCK != 0 {
			if err := unix.SetNonblock(fd, true); err != nil {
				unix.Close(fd)
				return -1, err
			}
		}
		return fd, nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, c.Type|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socketpair: %w", err)
	}
	err = errors.Join(sendAll(fds[1], c.Queue), sendMsgs(fds[1], c.Msgs))
	unix.Close(fds[1])
	if err == nil && flags&unix.O_NONBLOCK != 0 {
		err = unix.SetNonblock(fds[0], true)
	}
	if err != nil {
		unix.Close(fds[0])
		return -1, err
	}
	return fds[0], nil
}

// sendMsgs sends each message as one datagram, in order.
func sendMsgs(fd int, msgs [][]byte) error {
	for _, m := range msgs {
		if err := unix.Sendmsg(fd, m, nil, nil, unix.MSG_DONTWAIT); err != nil {
			return fmt.Errorf("requeue a unix message: %w", err)
		}
	}
	return nil
}

func sendAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.SendmsgN(fd, data, nil, nil, unix.MSG_DONTWAIT)
		if err != nil {
			return fmt.Errorf("refill unix socket queue: %w", err)
		}
		data = data[n:]
	}
	return nil
}

// finishUnix applies an end's shutdown state and status flags.
func finishUnix(fd, flags int, c *UnixConn) error {
	how := -1
	switch c.Shutdown & 3 {
	case 1:
		how = unix.SHUT_RD
	case 2:
		how = unix.SHUT_WR
	case 3:
		how = unix.SHUT_RDWR
	}
	if how >= 0 {
		if err := unix.Shutdown(fd, how); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	if flags&unix.O_NONBLOCK != 0 {
		return unix.SetNonblock(fd, true)
	}
	return nil
}

// unixDiagResult is what sock_diag says about one unix socket.
type unixDiagResult struct {
	peer     uint64
	shutdown int
}

// sock_diag for AF_UNIX (include/uapi/linux/unix_diag.h).
const (
	sockDiagByFamily = 20
	udiagShowPeer    = 0x4 // UDIAG_SHOW_PEER
	unixDiagPeer     = 2   // UNIX_DIAG_PEER
	unixDiagShutdown = 6   // UNIX_DIAG_SHUTDOWN, always sent
)

// unixDiag asks the kernel, over NETLINK_SOCK_DIAG, for the peer and the
// shutdown state of the unix socket with inode ino (in our network
// namespace).
func unixDiag(ino uint64) (unixDiagResult, error) {
	var res unixDiagResult
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return res, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(s)
	// nlmsghdr (16) + unix_diag_req (24).
	req := make([]byte, 40)
	le := binary.LittleEndian
	le.PutUint32(req[0:], 40)
	le.PutUint16(req[4:], sockDiagByFamily)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST)
	le.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	le.PutUint32(req[20:], 0xffffffff) // all states
	le.PutUint32(req[24:], uint32(ino))
	le.PutUint32(req[28:], udiagShowPeer)
	le.PutUint32(req[32:], 0xffffffff) // no cookie
	le.PutUint32(req[36:], 0xffffffff)
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return res, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, os.Getpagesize())
	n, _, err := unix.Recvfrom(s, buf, 0)
	if err != nil {
		return res, fmt.Errorf("sock_diag: %w", err)
	}
	// One nlmsghdr: length, type, flags, seq, pid.
	if n < 16 || int(le.Uint32(buf)) > n || le.Uint32(buf) < 16 {
		return res, errors.New("sock_diag: short answer")
	}
	typ, data := le.Uint16(buf[4:]), buf[16:le.Uint32(buf)]
	if typ == unix.NLMSG_ERROR {
		if len(data) >= 4 {
			if e := int32(le.Uint32(data)); e != 0 {
				return res, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
			}
		}
		return res, errors.New("sock_diag: error answer")
	}
	// unix_diag_msg (16 bytes), then attributes.
	if len(data) < 16 {
		return res, errors.New("sock_diag: short answer")
	}
	for attrs := data[16:]; len(attrs) >= 4; {
		l, t := int(le.Uint16(attrs)), le.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		v := attrs[4:l]
		switch t {
		case unixDiagPeer:
			if len(v) >= 4 {
				res.peer = uint64(le.Uint32(v))
			}
		case unixDiagShutdown:
			if len(v) >= 1 {
				res.shutdown = int(v[0])
			}
		}
		attrs = attrs[(l+3)&^3:]
	}
	return res, nil
}

// peekUnixDatagrams copies the datagrams waiting on a bound unix datagram
// socket (a log service's, say). Only those from unnamed senders are
// carried: restore sends them again from an unnamed socket, which is all
// the service could tell of them; a named sender could not be imitated.
func peekUnixDatagrams(fd int) ([]Datagram, error) {
	msgs, from, err := peekMessagesFrom(fd)
	if err != nil {
		return nil, err
	}
	out := make([]Datagram, len(msgs))
	for i, m := range msgs {
		if from[i] != "" {
			return nil, fmt.Errorf("a datagram from %s waiting to be read: %w", from[i], ErrUnsupported)
		}
		out[i] = Datagram{Data: m}
	}
	return out, nil
}

// requeueUnix sends q again to the unix datagram socket bound at addr,
// from an unnamed socket.
func requeueUnix(addr string, q []Datagram) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for i, d := range q {
		if err := unix.Sendto(fd, d.Data, unix.MSG_DONTWAIT, &unix.SockaddrUnix{Name: addr}); err != nil {
			return fmt.Errorf("requeue datagram %d to %s: %w", i, addr, err)
		}
	}
	return nil
}
