package transfer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// How the TCP stream to the target's sshd is made: straight, through the
// hops of ProxyJump (each an SSH connection that opens a direct-tcpip
// channel to the next), or through the stdin/stdout of a ProxyCommand.

// maxJumpDepth bounds jump hosts that have jump hosts of their own (and a
// configuration whose hosts jump through each other).
const maxJumpDepth = 8

// parseJumps splits ProxyJump's "[user@]host[:port],..." (ssh:// URIs too).
func parseJumps(v string) ([]string, error) {
	var hops []string
	for _, h := range strings.Split(v, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			return nil, fmt.Errorf("%q: empty hop", v)
		}
		if _, err := parseDest(h); err != nil {
			return nil, err
		}
		hops = append(hops, h)
	}
	return hops, nil
}

// transport opens the byte stream to t's sshd. The closers it returns
// (jump connections) must be closed after the connection made over it.
func transport(ctx context.Context, t *sshTarget, o SSHOptions, sys systemFiles, depth int) (net.Conn, []*Client, error) {
	switch {
	case t.proxyJump != "":
		return jumpTransport(ctx, t, o, sys, depth)
	case t.proxyCommand != "":
		conn, err := proxyCommandConn(t)
		return conn, nil, err
	}
	conn, err := dialTCP(ctx, t)
	return conn, nil, err
}

// jumpTransport connects to the first hop as ssh would to it (its own
// ssh_config, its own proxy), then through each hop to the next, the last
// hop to the target. Like ssh's -J, only -F is passed on to the hops.
func jumpTransport(ctx context.Context, t *sshTarget, o SSHOptions, sys systemFiles, depth int) (net.Conn, []*Client, error) {
	if depth >= maxJumpDepth {
		return nil, nil, fmt.Errorf("ProxyJump: more than %d hops deep (do the hosts jump through each other?)", maxJumpDepth)
	}
	hops, err := parseJumps(t.proxyJump)
	if err != nil {
		return nil, nil, fmt.Errorf("ProxyJump: %w", err)
	}
	hopOpts := SSHOptions{ConfigFile: o.ConfigFile, Passphrase: o.Passphrase, Warn: o.Warn}
	var via []*Client
	fail := func(err error) (net.Conn, []*Client, error) {
		closeClients(via)
		return nil, nil, err
	}
	for i, hop := range hops {
		ht, err := resolveTarget(hop, hopOpts, sys)
		if err != nil {
			return fail(fmt.Errorf("jump host %s: %w", hop, err))
		}
		warnIgnored(ht, hopOpts)
		if i > 0 {
			// Reached through the previous hop: its own proxy settings
			// do not apply (ssh -J a,b makes b's ProxyJump a).
			ht.proxyJump, ht.proxyCommand = "", ""
			conn, err := dialVia(ctx, via[len(via)-1], ht)
			if err != nil {
				return fail(err)
			}
			c, err := handshake(ctx, conn, ht, hopOpts)
			if err != nil {
				return fail(fmt.Errorf("jump host %s: %w", ht.name(), err))
			}
			via = append(via, c)
			continue
		}
		c, err := connectTarget(ctx, ht, hopOpts, sys, depth+1)
		if err != nil {
			return fail(fmt.Errorf("jump host %s: %w", ht.name(), err))
		}
		via = append(via, c)
	}
	conn, err := dialVia(ctx, via[len(via)-1], t)
	if err != nil {
		return fail(err)
	}
	return conn, via, nil
}

// dialVia opens a direct-tcpip channel from c to t.
func dialVia(ctx context.Context, c *Client, t *sshTarget) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	conn, err := c.DialContext(dctx, "tcp", t.address())
	if err != nil {
		if ctx.Err() == nil && dctx.Err() != nil {
			return nil, fmt.Errorf("cannot connect to %s through %s: timed out after %v", t.address(), c.Dest, t.timeout)
		}
		return nil, fmt.Errorf("cannot connect to %s through %s: %w", t.address(), c.Dest, err)
	}
	return conn, nil
}

func closeClients(cs []*Client) {
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i].Close()
	}
}

// proxyCommandConn starts ProxyCommand with /bin/sh, as ssh does with
// "exec CMD", and talks SSH over its stdin and stdout. What the command
// writes on stderr is kept for the error if the connection fails.
func proxyCommandConn(t *sshTarget) (net.Conn, error) {
	// Pipes made here (not by exec) support deadlines on our ends.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("ProxyCommand: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("ProxyCommand: %w", err)
	}
	c := exec.Command("/bin/sh", "-c", "exec "+t.proxyCommand)
	c.Stdin, c.Stdout = inR, outW
	stderr := &tailBuffer{max: 2048}
	c.Stderr = stderr
	// Its own process group: a ^C on the terminal is ours to handle.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		for _, f := range []*os.File{inR, inW, outR, outW} {
			f.Close()
		}
		return nil, fmt.Errorf("ProxyCommand %q: %w", t.proxyCommand, err)
	}
	inR.Close()
	outW.Close()
	pc := &pipeConn{r: outR, w: inW, cmd: c, stderr: stderr, remote: hostPortAddr(t.address())}
	pc.waited = make(chan struct{})
	go func() {
		pc.waitErr = c.Wait()
		close(pc.waited)
	}()
	return pc, nil
}

// pipeConn is a net.Conn over a ProxyCommand's pipes.
type pipeConn struct {
	r, w    *os.File
	cmd     *exec.Cmd
	stderr  *tailBuffer
	remote  net.Addr
	once    sync.Once
	waited  chan struct{}
	waitErr error
}

func (p *pipeConn) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && n == 0 {
		err = p.explain(err)
	}
	return n, err
}

func (p *pipeConn) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if err != nil {
		err = p.explain(err)
	}
	return n, err
}

// explain adds how the command ended and what it said, once it has ended.
func (p *pipeConn) explain(err error) error {
	select {
	case <-p.waited:
	case <-time.After(200 * time.Millisecond):
		return err
	}
	msg := "ProxyCommand ended"
	if p.waitErr != nil {
		msg += " (" + p.waitErr.Error() + ")"
	}
	if s := p.stderr.String(); s != "" {
		msg += ": " + s
	}
	return &proxyEnded{msg: msg, err: err}
}

type proxyEnded struct {
	msg string
	err error
}

func (e *proxyEnded) Error() string { return e.msg }
func (e *proxyEnded) Unwrap() error { return e.err }

func (p *pipeConn) Close() error {
	p.once.Do(func() {
		p.w.Close()
		p.r.Close()
		select {
		case <-p.waited:
		case <-time.After(time.Second):
			// ssh kills the proxy command when it is done with it.
			_ = p.cmd.Process.Kill()
			<-p.waited
		}
	})
	return nil
}

func (p *pipeConn) LocalAddr() net.Addr  { return hostPortAddr("proxycommand:0") }
func (p *pipeConn) RemoteAddr() net.Addr { return p.remote }
func (p *pipeConn) SetDeadline(t time.Time) error {
	return errors.Join(p.r.SetReadDeadline(t), p.w.SetWriteDeadline(t))
}
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return p.r.SetReadDeadline(t) }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return p.w.SetWriteDeadline(t) }

// hostPortAddr is a net.Addr that is only its "host:port" text: what
// known_hosts needs of the remote address when there is no TCP socket.
type hostPortAddr string

func (a hostPortAddr) Network() string { return "tcp" }
func (a hostPortAddr) String() string  { return string(a) }

// tailBuffer keeps the last max bytes written to it, on one line.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(strings.Fields(string(t.b)), " ")
}

// knownHostsAddress is the address known_hosts is asked about.
func knownHostsAddress(t *sshTarget) string {
	return net.JoinHostPort(t.knownHostsName(), strconv.Itoa(t.port))
}
