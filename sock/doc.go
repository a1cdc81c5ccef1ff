// Package sock owns socket state: reading it from a socket (a pidfd_getfd
// duplicate of the checkpointed process's), and making an equivalent socket
// at restore. It imports nothing of ours.
//
// Supported now: sockets that are not connected, listening TCP and unix
// stream/seqpacket sockets (their pending connections refused), bound UDP
// sockets with no queued datagrams, and unbound sockets. Established TCP
// connections (TCP_REPAIR, the network lock) are the next step.
package sock
