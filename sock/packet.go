package sock

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ipPacket wraps a UDP or TCP segment (checksum field zero) in an IPv4 or
// IPv6 header from src to dst, filling in the segment's checksum. The
// kernel fills in the IPv4 header checksum and id.
func ipPacket(proto byte, src, dst netip.Addr, seg []byte) []byte {
	s, d := src.AsSlice(), dst.AsSlice()
	// The checksum covers a pseudo-header: addresses, protocol, length.
	// Summed as 16-bit words, IPv4's and IPv6's come to the same.
	sum := onesSum(onesSum(onesSum(0, s), d), []byte{0, proto, byte(len(seg) >> 8), byte(len(seg))})
	c := ^fold(onesSum(sum, seg))
	off := 16 // TCP
	if proto == unix.IPPROTO_UDP {
		off = 6
		if c == 0 {
			c = 0xffff // zero means "no checksum"
		}
	}
	binary.BigEndian.PutUint16(seg[off:], c)
	if src.Is4() {
		ip := make([]byte, 20, 20+len(seg))
		ip[0] = 0x45 // version 4, 5-word header
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(seg)))
		ip[8] = 64
		ip[9] = proto
		copy(ip[12:], s)
		copy(ip[16:], d)
		return append(ip, seg...)
	}
	ip := make([]byte, 40, 40+len(seg))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(seg)))
	ip[6] = proto
	ip[7] = 64
	copy(ip[8:], s)
	copy(ip[24:], d)
	return append(ip, seg...)
}

// udpPacket builds an IP packet carrying one UDP datagram.
func udpPacket(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	return ipPacket(unix.IPPROTO_UDP, src.Addr(), dst.Addr(), udp)
}

// TCP header flags.
const (
	tcpFIN = 0x01
	tcpACK = 0x10
)

// tcpPacket builds an IP packet carrying a TCP segment without options or
// data.
func tcpPacket(src, dst netip.AddrPort, seq, ack uint32, flags byte, window uint16) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4 // data offset: 5 words
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], window)
	return ipPacket(unix.IPPROTO_TCP, src.Addr(), dst.Addr(), tcp)
}

// RawAvailable reports whether forged packets can be sent here (raw
// sockets of both families with PacketMark).
func RawAvailable() error {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, PacketMark)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// sendRaw sends a forged packet to its destination on this host, marked
// to pass the network lock.
func sendRaw(pkt []byte, dst netip.Addr) error {
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16()}
	if dst.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: dst.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, PacketMark); err != nil {
		return err
	}
	return unix.Sendto(fd, pkt, 0, sa)
}

// onesSum adds b as big-endian 16-bit words to sum (the Internet checksum).
func onesSum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
