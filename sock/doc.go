// Package sock owns socket state: reading it from a socket (a pidfd_getfd
// duplicate of the checkpointed process's), and making an equivalent socket
// at restore, in the network namespace of the calling thread. It imports
// nothing of ours (testscripts/layering_test.go checks it).
//
// What it carries:
//   - TCP: listeners (with their options; connections still waiting in the
//     accept queue are a refusal, ErrAcceptQueue), established connections
//     through TCP_REPAIR (sequence numbers, both queues, window, options,
//     timestamps; half-closed and CLOSING states, replaying the FIN with a
//     forged packet marked PacketMark), and connects under way (SYN_SENT,
//     started again to the same peer). Kernel TLS and other upper-layer
//     protocols are refused.
//   - The network lock (lock.go): one nftables table per dump, inet
//     relocate_PID, dropping the connections' packets while the tree is
//     frozen, and inet relocate_listen_PID holding new connections to its
//     listening ports; LockTables lists them for relocate unlock.
//   - UDP: bound and connected sockets with their queued datagrams
//     (re-queued at restore).
//   - unix: socketpairs and connections inside the tree (stream, seqpacket,
//     datagram, with queued data), listeners, datagram sockets connected to
//     a named service such as /dev/log; a connection to a socket outside the
//     tree is refused unless the caller accepts it back closed.
//   - netlink sockets (route and the like): protocol, port ID and groups.
//
// Errors that are refusals (ErrUnsupported, ErrAcceptQueue) say so with an
// Expected method; package ckpt wraps them with the process and descriptor.
package sock
