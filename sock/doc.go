// Package sock owns socket state: TCP_REPAIR dump and restore, UDP and unix
// sockets, and the network lock. It must never import cmd, transfer or ckpt.
//
// Nothing is implemented yet: the engine refuses every socket at dump time.
package sock
