package transfer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHOptions are the command-line overrides, like ssh(1)'s.
type SSHOptions struct {
	ConfigFile string        // -F FILE; "" means ~/.ssh/config then /etc/ssh/ssh_config (like ssh)
	Identity   []string      // -i KEY (tried first, before agent and config IdentityFile)
	Port       int           // -p PORT; 0 means from config, else 22
	Timeout    time.Duration // TCP connect + handshake timeout; 0 means ConnectTimeout from config, else 10s
	Jump       string        // -J: ProxyJump hops
	Options    []string      // -o KEY=VALUE, before the files as in ssh
	// Passphrase, when set, is asked for the passphrase of an encrypted key
	// the server accepts (never under BatchMode).
	// (Not kept in a migration's state record: a resolve asks anew.)
	Passphrase func(prompt string) ([]byte, error) `json:"-"`
	// Warn, when set, is told what of ssh_config relocate ignores.
	Warn func(msg string) `json:"-"`
}

// Client is an authenticated connection to the target.
type Client struct {
	*ssh.Client
	Dest string // how to name the target in messages: "user@host:port", then "(alias)" if that differed
	Host string // the resolved HostName (address or name) we connected to
	via  []*Client
}

// Close closes the connection, then the jump hosts' it went through.
func (c *Client) Close() error {
	err := c.Client.Close()
	closeClients(c.via)
	return err
}

// DialError is every failure of Dial: one line, no newline, names the
// destination.
type DialError struct {
	Dest string
	Err  error
}

func (e *DialError) Error() string {
	msg := "failed"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	// x/crypto and the resolver may put line breaks in their messages; ours
	// go on one line of stderr.
	return strings.Join(strings.FieldsFunc("ssh "+e.Dest+": "+msg, isLineBreak), " ")
}

func (e *DialError) Unwrap() error { return e.Err }

func isLineBreak(r rune) bool { return r == '\n' || r == '\r' }

const (
	// An idle migration stream is normal; a peer that has not answered for
	// keepAliveEvery*keepAliveMissed is gone.
	keepAliveEvery  = 15 * time.Second
	keepAliveMissed = 3
)

// Dial resolves dest ("[user@]host[:port]" or an ssh_config alias), connects,
// checks the host key and authenticates. ctx cancels the dial.
func Dial(ctx context.Context, dest string, o SSHOptions) (*Client, error) {
	return dialSSH(ctx, dest, o, defaultSystemFiles())
}

func dialSSH(ctx context.Context, dest string, o SSHOptions, sys systemFiles) (*Client, error) {
	t, err := resolveTarget(dest, o, sys)
	if err != nil {
		return nil, &DialError{Dest: dest, Err: err}
	}
	warnIgnored(t, o)
	c, err := connectTarget(ctx, t, o, sys, 0)
	if err != nil {
		return nil, &DialError{Dest: t.name(), Err: err}
	}
	return c, nil
}

// warnIgnored names, once per dial, the ssh_config keys set for the host
// that relocate does not implement.
func warnIgnored(t *sshTarget, o SSHOptions) {
	if len(t.ignored) > 0 && o.Warn != nil {
		o.Warn(fmt.Sprintf("ssh config for %s: relocate ignores %s", t.alias, strings.Join(t.ignored, ", ")))
	}
}

// connectTarget makes the transport to t (straight, or through its proxy)
// and runs the SSH handshake over it.
func connectTarget(ctx context.Context, t *sshTarget, o SSHOptions, sys systemFiles, depth int) (*Client, error) {
	conn, via, err := transport(ctx, t, o, sys, depth)
	if err != nil {
		return nil, err
	}
	c, err := handshake(ctx, conn, t, o)
	if err != nil {
		closeClients(via)
		return nil, err
	}
	c.via = via
	return c, nil
}

// handshake authenticates over conn and starts the keepalives.
func handshake(ctx context.Context, conn net.Conn, t *sshTarget, o SSHOptions) (*Client, error) {
	keys, err := newHostKeys(t, o.Warn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	ring, err := loadSSHKeyring(t, o)
	if err != nil {
		conn.Close()
		return nil, err
	}
	defer ring.close()
	c, err := sshHandshake(ctx, conn, t, keys, ring)
	if err != nil {
		return nil, err
	}
	go keepAlive(c, t.aliveEvery, t.aliveMissed)
	return &Client{Client: c, Dest: t.name(), Host: t.host}, nil
}

// preferredCiphers puts AES-GCM first: with AES-NI it is the fastest cipher
// x/crypto has, and throughput is what a migration needs.
func preferredCiphers() []string {
	return []string{
		ssh.CipherAES128GCM,
		ssh.CipherChaCha20Poly1305,
		ssh.CipherAES256GCM,
		ssh.CipherAES128CTR,
		ssh.CipherAES256CTR,
	}
}

func clientConfig(t *sshTarget, keys *hostKeys, ring *sshKeyring) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		Config:            ssh.Config{Ciphers: preferredCiphers()},
		User:              t.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeysCallback(ring.offer)},
		HostKeyCallback:   keys.callback,
		HostKeyAlgorithms: keys.algorithms(),
		ClientVersion:     "SSH-2.0-relocate",
	}
}

func dialTCP(ctx context.Context, t *sshTarget) (net.Conn, error) {
	d := net.Dialer{Timeout: t.timeout}
	conn, err := d.DialContext(ctx, "tcp", t.address())
	if err != nil {
		return nil, connectError(ctx, err, t.timeout)
	}
	return conn, nil
}

// connectError says why the TCP connection failed in the words a sysadmin
// expects: "connection refused", "no route to host", "timed out after 10s".
func connectError(ctx context.Context, err error, timeout time.Duration) error {
	var dnsErr *net.DNSError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("cannot connect: %w", ctx.Err())
	case errors.As(err, &dnsErr):
		return fmt.Errorf("cannot resolve host name %q: %w", dnsErr.Name, errors.New(dnsErr.Err))
	case isNetTimeout(err):
		return fmt.Errorf("cannot connect: timed out after %v", timeout)
	}
	return fmt.Errorf("cannot connect: %w", unwrapOpError(err))
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unwrapOpError keeps the reason of a *net.OpError ("connection refused")
// without its repetition of the addresses.
func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return unwrapSyscallError(op.Err)
	}
	return err
}

func unwrapSyscallError(err error) error {
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		return sys.Err
	}
	return err
}

// sshHandshake runs the SSH handshake on conn. x/crypto has no timeout of its
// own here, so a server that accepts and then says nothing would hold us
// forever: the timeout and ctx bound it by closing conn (a channel through
// a jump host has no deadlines).
func sshHandshake(ctx context.Context, conn net.Conn, t *sshTarget, keys *hostKeys, ring *sshKeyring) (*ssh.Client, error) {
	var timedOut atomic.Bool
	timer := time.AfterFunc(t.timeout, func() {
		timedOut.Store(true)
		conn.Close()
	})
	// The time someone takes to type a passphrase does not count.
	ring.pause = func(paused bool) {
		if paused {
			timer.Stop()
		} else {
			timer.Reset(t.timeout)
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, knownHostsAddress(t), clientConfig(t, keys, ring))
	timer.Stop()
	if !stop() || timedOut.Load() {
		if err == nil {
			c.Close()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("SSH handshake: %w", ctx.Err())
		}
		return nil, fmt.Errorf("timed out after %v in the SSH handshake", t.timeout)
	}
	if err != nil {
		return nil, sshHandshakeError(err, t.timeout, keys, ring)
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// sshHandshakeError prefers what we know (a refused host key, the keys offered)
// to x/crypto's generic "ssh: handshake failed".
func sshHandshakeError(err error, timeout time.Duration, keys *hostKeys, ring *sshKeyring) error {
	if refusal := keys.refused(); refusal != nil {
		return refusal
	}
	if isNetTimeout(err) {
		return fmt.Errorf("timed out after %v in the SSH handshake", timeout)
	}
	if ring.asked.Load() || strings.Contains(err.Error(), "unable to authenticate") {
		return ring.failure(err)
	}
	if inner := errors.Unwrap(err); inner != nil {
		err = inner
	}
	return fmt.Errorf("SSH handshake failed: %w", err)
}

// ShellQuote quotes s for a POSIX shell command line (single quotes).
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellWord quotes s only when a shell would otherwise split or expand it,
// for commands we show to people.
func shellWord(s string) string {
	if s == "" || strings.ContainsFunc(s, needsQuote) {
		return ShellQuote(s)
	}
	return s
}

func needsQuote(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return false
	}
	return !strings.ContainsRune("@%+=:,./_-~", r)
}
