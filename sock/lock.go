package sock

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Conn names one TCP connection by its ports (the local side first).
type Conn struct {
	LocalPort, PeerPort uint16
}

// PacketMark is the SO_MARK of packets relocate forges; the lock lets them
// through.
const PacketMark = 0x72656c6f // "relo"

// Lock drops every packet of a set of TCP connections, in and out, so that
// the peer's retransmissions meet silence instead of a reset while the
// connection has no socket, and the opening SYN of new connections to a
// set of listening ports, so that a client connecting meanwhile retries a
// second later instead of being accepted by a frozen listener (and reset
// when it dies) or refused by a host where the listener is not back yet.
// It is one nftables table of our own (inet family, base chains at
// priority -200); nothing else in the ruleset is touched, and Unlock
// deletes the table, as does the guard (guard.go) if relocate dies
// before it persisted the lock.
type Lock struct {
	name string
}

// NewLock installs the drop rules for conns and for new connections to the
// listening ports in a table named name.
func NewLock(name string, conns []Conn, listening []uint16) (*Lock, error) {
	if err := checkLockName(name); err != nil {
		return nil, err
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("network lock: %w", err)
	}
	existed, _ := TableExists(name)
	if !existed {
		guardSend("+" + name) // before it exists: no moment unguarded
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	prio := nftables.ChainPriority(-200)
	policy := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: &prio, Policy: &policy})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: &prio, Policy: &policy})
	// Packets relocate itself forges to rebuild a connection's state (a
	// peer's FIN) carry PacketMark and pass.
	for _, ch := range []*nftables.Chain{in, out} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, PacketMark)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	for _, k := range conns {
		// Incoming: from the peer's port to ours; outgoing: the reverse.
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: dropPorts(k.PeerPort, k.LocalPort)})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: dropPorts(k.LocalPort, k.PeerPort)})
	}
	for _, p := range listening {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: dropSYN(p)})
	}
	if err := c.Flush(); err != nil {
		if !existed {
			guardSend("-" + name)
		}
		return nil, fmt.Errorf("network lock: install nftables table %s: %w", name, err)
	}
	return &Lock{name: name}, nil
}

func be16(p uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, p); return b }

// tcpPort matches TCP whose header has port at offset (0 source, 2
// destination).
func tcpPort(offset uint32, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)},
	}
}

// dropSYN matches a TCP SYN without ACK (a connection's first packet) to
// dport and drops it. Later packets of a handshake under way pass.
func dropSYN(dport uint16) []expr.Any {
	const syn, ack = 0x02, 0x10
	return append(tcpPort(2, dport),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | ack}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syn}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// dropPorts matches TCP from sport to dport and drops it.
func dropPorts(sport, dport uint16) []expr.Any {
	return append(tcpPort(0, sport),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(dport)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// Unlock removes the table. It is safe to call more than once.
func (l *Lock) Unlock() error {
	if l == nil || l.name == "" {
		return nil
	}
	if err := UnlockTable(l.name); err != nil {
		return err
	}
	l.name = ""
	return nil
}

// UnlockTable removes the lock table called name, left by a dump whose
// process was killed; a table that is not there is not an error.
func UnlockTable(name string) error {
	if err := checkLockName(name); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network unlock: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("network unlock: %w", err)
	}
	guardSend("-" + name)
	for _, t := range tables {
		if t.Name != name {
			continue
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("network unlock: delete nftables table %s: %w", name, err)
		}
	}
	return nil
}

// LockAvailable reports whether nftables can be used here.
func LockAvailable() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	_, err = c.ListTables()
	return err
}

// TableExists reports whether a lock table called name is installed.
func TableExists(name string) (bool, error) {
	if err := checkLockName(name); err != nil {
		return false, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("network lock: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("network lock: %w", err)
	}
	for _, t := range tables {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}
