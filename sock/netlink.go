package sock

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Netlink is a netlink socket (a daemon watching routes and addresses,
// say): its port id, the multicast groups it joined, where it is
// connected, and its netlink options. The family is State.Protocol.
type Netlink struct {
	PortID    uint32   `json:"port_id"`
	Groups    []uint32 `json:"groups,omitempty"` // group numbers, from 1
	DstPortID uint32   `json:"dst_port_id,omitempty"`
	DstGroups uint32   `json:"dst_groups,omitempty"`
	// Options are the SOL_NETLINK flags that were on (NETLINK_PKTINFO,
	// NETLINK_NO_ENOBUFS, ...).
	Options []int `json:"options,omitempty"`
}

// ErrNetlinkQueue is a netlink socket with messages the process has not
// read: they came from the kernel and cannot be sent again from there.
var ErrNetlinkQueue = errors.New("netlink messages wait to be read by the process")

// netlinkFlags are the boolean SOL_NETLINK options carried.
var netlinkFlags = []int{unix.NETLINK_PKTINFO, unix.NETLINK_BROADCAST_ERROR, unix.NETLINK_NO_ENOBUFS,
	unix.NETLINK_LISTEN_ALL_NSID, unix.NETLINK_CAP_ACK, unix.NETLINK_EXT_ACK, unix.NETLINK_GET_STRICT_CHK}

// maxNetlinkGroups bounds the groups read back (NETLINK_LIST_MEMBERSHIPS).
const maxNetlinkGroups = 1024

func inspectNetlink(fd int) (*Netlink, error) {
	if waiting(fd) {
		return nil, ErrNetlinkQueue
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return nil, fmt.Errorf("netlink socket with address %T", sa)
	}
	n := &Netlink{PortID: nsa.Pid}
	bits := make([]byte, maxNetlinkGroups/8)
	if err := getsockoptBytes(fd, unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS, bits); err != nil {
		return nil, fmt.Errorf("NETLINK_LIST_MEMBERSHIPS: %w", err)
	}
	for i := 0; i < len(bits); i += 4 {
		w := binary.NativeEndian.Uint32(bits[i:])
		for b := 0; b < 32; b++ {
			if w&(1<<b) != 0 {
				n.Groups = append(n.Groups, uint32(i*8+b+1))
			}
		}
	}
	if pa, err := unix.Getpeername(fd); err == nil {
		if p, ok := pa.(*unix.SockaddrNetlink); ok {
			n.DstPortID, n.DstGroups = p.Pid, p.Groups
		}
	}
	for _, opt := range netlinkFlags {
		if v, err := unix.GetsockoptInt(fd, unix.SOL_NETLINK, opt); err == nil && v != 0 {
			n.Options = append(n.Options, opt)
		}
	}
	return n, nil
}

// configureNetlink binds fd, a fresh netlink socket, as n was: the same
// port id (free on this host unless another socket took it), the same
// groups, options and destination.
func configureNetlink(fd int, n *Netlink) error {
	for _, opt := range n.Options {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, opt, 1); err != nil {
			return fmt.Errorf("setsockopt SOL_NETLINK %d: %w", opt, err)
		}
	}
	var low uint32
	var high []uint32
	for _, g := range n.Groups {
		if g <= 32 {
			low |= 1 << (g - 1)
		} else {
			high = append(high, g)
		}
	}
	if n.PortID != 0 || low != 0 {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: n.PortID, Groups: low}); err != nil {
			return fmt.Errorf("bind netlink port id %d: %w", n.PortID, err)
		}
	}
	for _, g := range high {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(g)); err != nil {
			return fmt.Errorf("join netlink group %d: %w", g, err)
		}
	}
	if n.DstPortID != 0 || n.DstGroups != 0 {
		if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: n.DstPortID, Groups: n.DstGroups}); err != nil {
			return fmt.Errorf("connect netlink: %w", err)
		}
	}
	return nil
}
