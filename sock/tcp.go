package sock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Queue selectors for TCP_REPAIR_QUEUE (include/uapi/linux/tcp.h).
const (
	tcpRecvQueue = 1 // TCP_RECV_QUEUE
	tcpSendQueue = 2 // TCP_SEND_QUEUE
)

// tcp_info option bits (include/uapi/linux/tcp.h).
const (
	tcpiOptTimestamps = 1 // TCPI_OPT_TIMESTAMPS
	tcpiOptSACK       = 2 // TCPI_OPT_SACK
	tcpiOptWscale     = 4 // TCPI_OPT_WSCALE
)

// TCPConn is an established or half-closed TCP connection as TCP_REPAIR
// reads it.
type TCPConn struct {
	Local     string    `json:"local"` // ip:port
	Peer      string    `json:"peer"`
	State     string    `json:"state,omitempty"` // a half-closed state (finStates); "" for ESTABLISHED
	SendSeq   uint32    `json:"send_seq"`        // sequence number of the first byte of SendQueue
	RecvSeq   uint32    `json:"recv_seq"`        // of the first byte of RecvQueue
	SendQueue []byte    `json:"send_queue,omitempty"`
	Unsent    int       `json:"unsent"` // trailing bytes of SendQueue never sent
	RecvQueue []byte    `json:"recv_queue,omitempty"`
	MSS       int       `json:"mss"`
	SndWscale int       `json:"snd_wscale"`
	RcvWscale int       `json:"rcv_wscale"`
	Wscale    bool      `json:"wscale,omitempty"`
	SACK      bool      `json:"sack,omitempty"`
	Stamps    bool      `json:"timestamps,omitempty"`
	Timestamp uint32    `json:"timestamp"`
	Window    [5]uint32 `json:"window"` // struct tcp_repair_window
	Opts      *Options  `json:"opts,omitempty"`
}

// finState says which FINs a half-closed connection holds. TCP_REPAIR
// has no way to set them: they are rebuilt the way they came about, our
// FIN by a shutdown in repair mode, the peer's FIN (and its ACK of ours)
// by a forged packet from the peer.
type finState struct {
	name      string
	state     uint8 // as tcp_info reports it
	sent      bool  // we sent a FIN (it follows the send queue's data)
	acked     bool  // the peer acknowledged it
	recv      bool  // the peer's FIN came in (after the receive queue's data)
	peerFirst bool  // the peer's FIN came before ours
}

const tcpCloseWait = 8

// finStates are the half-closed states carried, by tcp_info state.
var finStates = map[uint8]finState{
	4:            {name: "FIN_WAIT1", state: 4, sent: true},
	5:            {name: "FIN_WAIT2", state: 5, sent: true, acked: true},
	tcpCloseWait: {name: "CLOSE_WAIT", state: tcpCloseWait, recv: true},
	9:            {name: "LAST_ACK", state: 9, sent: true, recv: true, peerFirst: true},
	11:           {name: "CLOSING", state: 11, sent: true, recv: true},
}

func finStateNamed(name string) (finState, bool) {
	for _, f := range finStates {
		if f.name == name {
			return f, true
		}
	}
	return finState{}, name == ""
}

// CarriedTCP reports whether fd is a TCP connection TCP_REPAIR can carry:
// established, or half-closed in one of finStates.
func CarriedTCP(fd int) bool {
	proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if proto != unix.IPPROTO_TCP {
		return false
	}
	state := tcpState(fd)
	_, half := finStates[state]
	return state == unix.BPF_TCP_ESTABLISHED || half
}

func setInt(fd, opt, v int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, v); err != nil {
		return fmt.Errorf("setsockopt %d=%d: %w", opt, v, err)
	}
	return nil
}

// RepairOn puts a socket into repair mode: from now on closing it sends
// nothing to the peer. Needs CAP_NET_ADMIN.
func RepairOn(fd int) error { return setInt(fd, unix.TCP_REPAIR, unix.TCP_REPAIR_ON) }

// RepairOff takes a socket out of repair mode; the connection goes on.
func RepairOff(fd int) error { return setInt(fd, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF) }

// InspectTCP reads an established connection; fd must be in repair mode.
func InspectTCP(fd int) (*TCPConn, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, err
	}
	fin, half := finStates[ti.State]
	if ti.State != unix.BPF_TCP_ESTABLISHED && !half {
		return nil, fmt.Errorf("a TCP connection in state %s: %w", tcpStateName(fd), ErrUnsupported)
	}
	// Kernel TLS keeps keys and record state in the kernel that
	// TCP_REPAIR does not give back: the bytes would come back garbled.
	if ulp, _ := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_ULP); ulp != "" {
		return nil, fmt.Errorf("a TCP connection with upper-layer protocol %q (kernel TLS): %w", ulp, ErrUnsupported)
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return nil, err
	}
	family := unix.AF_INET
	if _, ok := local.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	c := &TCPConn{Local: addrString(local), Peer: addrString(peer), State: fin.name, Opts: inspectOptions(fd, family, unix.IPPROTO_TCP)}
	var qerr error
	if c.RecvQueue, c.RecvSeq, qerr = readQueue(fd, tcpRecvQueue, unix.SIOCINQ); qerr != nil {
		return nil, qerr
	}
	if c.SendQueue, c.SendSeq, qerr = readQueue(fd, tcpSendQueue, unix.SIOCOUTQ); qerr != nil {
		return nil, qerr
	}
	if c.Unsent, err = unix.IoctlGetInt(fd, unix.SIOCOUTQNSD); err != nil {
		return nil, fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	// A FIN takes a sequence number after the data: the queues' sequence
	// numbers count it, their bytes do not.
	if fin.recv {
		c.RecvSeq--
	}
	if fin.sent {
		c.SendSeq--
		if c.Unsent > 0 {
			c.Unsent-- // the FIN itself waits behind unsent data
		}
	}
	c.Unsent = min(c.Unsent, len(c.SendQueue))
	if c.MSS, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG); err != nil {
		return nil, err
	}
	ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
	if err != nil {
		return nil, err
	}
	c.Timestamp = uint32(ts)
	c.SACK = ti.Options&tcpiOptSACK != 0
	c.Stamps = ti.Options&tcpiOptTimestamps != 0
	c.Wscale = ti.Options&tcpiOptWscale != 0
	// x/sys hides the wscale bitfield byte; read it from the raw struct.
	raw := make([]byte, 8)
	if err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, raw); err != nil {
		return nil, err
	}
	c.SndWscale, c.RcvWscale = int(raw[6]&0x0f), int(raw[6]>>4)
	win := make([]byte, 20)
	if err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, win); err != nil {
		return nil, err
	}
	for i := range c.Window {
		c.Window[i] = binary.LittleEndian.Uint32(win[4*i:])
	}
	return c, nil
}

// readQueue peeks the whole of one queue and returns it with the sequence
// number of its first byte (TCP_QUEUE_SEQ gives the one after its last).
func readQueue(fd, queue int, sizeIoctl uint) ([]byte, uint32, error) {
	if err := setInt(fd, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return nil, 0, err
	}
	seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return nil, 0, fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
	}
	size, err := unix.IoctlGetInt(fd, sizeIoctl)
	if err != nil {
		return nil, 0, err
	}
	data := make([]byte, size)
	for got := 0; got < size; {
		n, _, err := unix.Recvfrom(fd, data[got:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			return nil, 0, fmt.Errorf("peek queue %d: %w", queue, err)
		}
		if n == 0 {
			break
		}
		got = n // MSG_PEEK starts from the front each time
		if n < size {
			data = data[:n]
			break
		}
	}
	return data, uint32(seq) - uint32(len(data)), nil
}

// CreateTCP rebuilds an established connection from c. The socket stays in
// repair mode, so that closing it on a failed restore sends nothing;
// FinishTCP brings it to life. flags are the file status flags (O_NONBLOCK).
func CreateTCP(c *TCPConn, flags int) (int, error) {
	local, err := netip.ParseAddrPort(c.Local)
	if err != nil {
		return -1, err
	}
	peer, err := netip.ParseAddrPort(c.Peer)
	if err != nil {
		return -1, err
	}
	// An IPv6 socket with IPv4-mapped addresses (a dual-stack listener's
	// IPv4 client) stays an IPv6 socket: the program knows it as one.
	family := unix.AF_INET
	if local.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	if err := buildTCP(fd, family, c, local, peer); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if flags&unix.O_NONBLOCK != 0 {
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

func buildTCP(fd, family int, c *TCPConn, local, peer netip.AddrPort) error {
	if err := RepairOn(fd); err != nil {
		return err
	}
	if err := reserveBuffers(fd, c); err != nil {
		return err
	}
	if err := setInt(fd, unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return err
	}
	if err := setInt(fd, unix.TCP_QUEUE_SEQ, int(int32(c.RecvSeq))); err != nil {
		return err
	}
	if err := setInt(fd, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return err
	}
	if err := setInt(fd, unix.TCP_QUEUE_SEQ, int(int32(c.SendSeq))); err != nil {
		return err
	}
	// No SO_REUSEADDR here: repair mode already set SK_FORCE_REUSE, which
	// lets the socket share its port with the listener that accepted it.
	toSA := func(ap netip.AddrPort) unix.Sockaddr {
		if family == unix.AF_INET {
			return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
		}
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	if err := unix.Bind(fd, toSA(local)); err != nil {
		return fmt.Errorf("bind %s: %w", local, err)
	}
	if err := unix.Connect(fd, toSA(peer)); err != nil { // no SYN in repair mode
		return fmt.Errorf("connect %s (repair): %w", peer, err)
	}
	opts := []uint32{unix.TCPOPT_MAXSEG, uint32(c.MSS)}
	if c.Wscale {
		opts = append(opts, unix.TCPOPT_WINDOW, uint32(c.SndWscale)|uint32(c.RcvWscale)<<16)
	}
	if c.SACK {
		opts = append(opts, unix.TCPOPT_SACK_PERMITTED, 0)
	}
	if c.Stamps {
		opts = append(opts, unix.TCPOPT_TIMESTAMP, 0)
	}
	ob := make([]byte, 4*len(opts))
	for i, v := range opts {
		binary.LittleEndian.PutUint32(ob[4*i:], v)
	}
	if err := setsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, ob); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if c.Stamps {
		if err := setInt(fd, unix.TCP_TIMESTAMP, int(int32(c.Timestamp))); err != nil {
			return err
		}
	}
	if err := fillQueue(fd, tcpRecvQueue, c.RecvQueue); err != nil {
		return err
	}
	fin, ok := finStateNamed(c.State)
	if !ok {
		return fmt.Errorf("TCP state %q: %w", c.State, ErrUnsupported)
	}
	sent := len(c.SendQueue) - c.Unsent
	if sent < 0 || c.Unsent < 0 {
		return errors.New("TCP state: more unsent bytes than queued")
	}
	if fin.sent {
		// The FIN must follow every byte: bytes never sent go as sent
		// ones, which retransmission delivers.
		sent = len(c.SendQueue)
	}
	if err := fillQueue(fd, tcpSendQueue, c.SendQueue[:sent]); err != nil {
		return err
	}
	win := c.Window
	if fin.recv {
		// The window was read with the peer's FIN counted in rcv_nxt;
		// until the FIN is replayed, rcv_nxt is one short.
		win[4]--
		win[3]++
	}
	wb := make([]byte, 20)
	for i, v := range win {
		binary.LittleEndian.PutUint32(wb[4*i:], v)
	}
	if err := setsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, wb); err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	if c.State != "" {
		return rebuildFINs(fd, c, fin, local, peer)
	}
	return nil
}

// rebuildFINs takes a connection rebuilt as established to its
// half-closed state, in the order the FINs came about: our FIN first
// unless the peer's came first (LAST_ACK), then the peer's acknowledgment
// of ours (FIN_WAIT2). The forged packets carry PacketMark past the
// network lock.
func rebuildFINs(fd int, c *TCPConn, fin finState, local, peer netip.AddrPort) error {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	recvEnd := c.RecvSeq + uint32(len(c.RecvQueue)) // the peer's FIN, if any
	sendEnd := c.SendSeq + uint32(len(c.SendQueue)) // ours
	window := uint16(min(c.Window[1]>>c.SndWscale, 0xffff))
	shutdown := func() error {
		// Queued as already sent: no transmission now; the retransmit
		// timer sends it again if it was not acknowledged.
		if err := setInt(fd, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
			return err
		}
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return fmt.Errorf("shutdown (repair): %w", err)
		}
		return nil
	}
	if fin.sent && !fin.peerFirst {
		if err := shutdown(); err != nil {
			return err
		}
	}
	if fin.recv {
		pkt := tcpPacket(peer, local, recvEnd, c.SendSeq, tcpFIN|tcpACK, window)
		if err := sendRaw(pkt, local.Addr()); err != nil {
			return fmt.Errorf("replay the peer's FIN: %w", err)
		}
		if fin.peerFirst {
			if err := waitState(fd, tcpCloseWait); err != nil {
				return err
			}
			if err := shutdown(); err != nil {
				return err
			}
		}
		recvEnd++
	}
	if fin.acked {
		pkt := tcpPacket(peer, local, recvEnd, sendEnd+1, tcpACK, window)
		if err := sendRaw(pkt, local.Addr()); err != nil {
			return fmt.Errorf("replay the peer's ACK of our FIN: %w", err)
		}
	}
	return waitState(fd, fin.state)
}

// waitState waits until the connection is in state want: a forged packet
// is processed in softirq context.
func waitState(fd int, want uint8) error {
	for wait := 100 * time.Microsecond; wait < time.Second; wait *= 2 {
		if tcpState(fd) == want {
			return nil
		}
		time.Sleep(wait)
	}
	return fmt.Errorf("rebuild TCP state %s: the connection is in %s", finStates[want].name, tcpStateName(fd))
}

// FinishTCP takes a socket made by CreateTCP out of repair mode and sends
// the bytes the process had written but the kernel had not sent yet. On
// an error the socket is back in repair mode: closing it sends nothing.
func FinishTCP(fd int, c *TCPConn) (err error) {
	if err := RepairOff(fd); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = RepairOn(fd)
		}
	}()
	// Options last: keep-alive timers must not run in repair mode.
	family, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err := c.Opts.apply(fd, family, unix.IPPROTO_TCP); err != nil {
		return err
	}
	rest := c.SendQueue[len(c.SendQueue)-c.Unsent:]
	if fin, _ := finStateNamed(c.State); fin.sent {
		rest = nil // queued before the FIN, as sent bytes
	}
	for len(rest) > 0 {
		n, err := unix.SendmsgN(fd, rest, nil, nil, unix.MSG_DONTWAIT)
		if err != nil {
			return fmt.Errorf("send unsent bytes: %w", err)
		}
		rest = rest[n:]
	}
	return c.Opts.settleBuffers(fd)
}

// reserveBuffers makes the socket's buffers big enough for the queues
// about to be refilled (a fresh socket's are smaller than the ones
// autotuning had grown): the kernel would refuse the bytes, or block.
// settleBuffers hands the sizes back afterwards.
func reserveBuffers(fd int, c *TCPConn) error {
	for _, b := range []struct {
		name       string
		get, force int
		need       int
	}{{"SO_SNDBUFFORCE", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, len(c.SendQueue)}, {"SO_RCVBUFFORCE", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, len(c.RecvQueue)}} {
		cur, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.get)
		want := b.need + 64<<10 // the kernel doubles it: room for per-packet overhead
		if 2*want <= cur {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, want); err != nil {
			return fmt.Errorf("setsockopt %s=%d: %w", b.name, want, err)
		}
	}
	return nil
}

func fillQueue(fd, queue int, data []byte) error {
	if err := setInt(fd, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return err
	}
	for len(data) > 0 {
		n, err := unix.SendmsgN(fd, data, nil, nil, 0)
		if err != nil {
			return fmt.Errorf("refill queue %d: %w", queue, err)
		}
		data = data[n:]
	}
	return nil
}

// ResetTCP ends a connection rebuilt in repair mode the way a crash would:
// repair mode off, then a disconnect, which sends the peer a reset with
// the right sequence numbers and leaves ECONNRESET pending on the socket,
// so the process learns on its next read or write. The socket stays open.
func ResetTCP(fd int) error {
	if err := RepairOff(fd); err != nil {
		return err
	}
	if err := disconnect(fd); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	return nil
}
