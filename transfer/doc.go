// Package transfer owns everything between two hosts: the SSH client, the
// self-upload of the binary, the control protocol of a migration and its
// stream plumbing. It may import ckpt; it must never import cmd
// (testscripts/layering_test.go checks it).
//
// The SSH client (ssh.go, sshconfig*.go, sshauth.go, sshcert.go,
// knownhosts.go, proxy.go, keepalive.go) resolves a destination the way
// OpenSSH does: ssh_config with Include and Match, -o and -J, ProxyJump and
// ProxyCommand, keys from -i, the agent and IdentityFile, certificates,
// known_hosts with @cert-authority and @revoked, HostKeyAlias, keepalives.
//
// A migration (migrate.go, the source; receive.go, the target started as
// `relocate receive` over SSH; upload.go brings the binary when the target
// lacks it; proto.go frames the messages) surveys the tree, lets the target
// refuse before anything is frozen, streams the image while it is read, and
// commits at one decision point; hooks.go runs the user's hooks.
//
// transfer never prints: what happens is reported as log records on the
// logger the context carries (events.go, WithLog), warnings included, and
// the command line decides what the user sees. Errors that are answers
// rather than bugs (DialError, RefusedError, RolledBackError, HookError)
// say so with an Expected method.
package transfer
