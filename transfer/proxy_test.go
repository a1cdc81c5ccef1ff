package transfer

import (
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
)

// forwardChannel serves a direct-tcpip channel: a jump host.
func (s *testServer) forwardChannel(nc ssh.NewChannel) {
	var req struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &req); err != nil {
		nc.Reject(ssh.ConnectionFailed, "bad request")
		return
	}
	addr := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	s.mu.Lock()
	s.forwarded = append(s.forwarded, addr)
	s.mu.Unlock()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	go func() {
		io.Copy(ch, conn)
		ch.CloseWrite()
	}()
	io.Copy(conn, ch)
	conn.Close()
	ch.Close()
}

func (s *testServer) forwards() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.forwarded...)
}

// TestMain lets the test binary act as a ProxyCommand: with
// RELOCATE_TEST_NC=host:port it copies stdin and stdout to that address.
func TestMain(m *testing.M) {
	if addr := os.Getenv("RELOCATE_TEST_NC"); addr != "" {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nc:", err)
			os.Exit(1)
		}
		go func() {
			io.Copy(conn, os.Stdin)
			conn.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(os.Stdout, conn)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestDialProxyJump(t *testing.T) {
	f := newFixture(t)
	jump := startServer(t, &testServer{user: "jumper", allowed: f.key.public(), forward: true})
	jump2 := startServer(t, &testServer{user: "alice", allowed: f.key.public(), forward: true})
	writeFile(t, filepath.Join(f.home, ".ssh", "known_hosts"),
		f.srv.knownLine(f.srv.hostKeys[0].public())+jump.knownLine(jump.hostKeys[0].public())+jump2.knownLine(jump2.hostKeys[0].public()))
	f.config(t, fmt.Sprintf(`
Host target
  HostName 127.0.0.1
  Port %d
  User alice
  ProxyJump bastion
Host bastion
  HostName 127.0.0.1
  Port %d
  User jumper
`, f.srv.port, jump.port))
	c, err := dialTest(t, f.sys, "target", SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "through the bastion")
	if got := jump.forwards(); len(got) != 1 || got[0] != f.srv.addr {
		t.Errorf("the bastion forwarded to %q, want [%s]", got, f.srv.addr)
	}

	// -J a chain: bastion, then jump2, then the target.
	c, err = dialTest(t, f.sys, "alice@"+f.srv.addr, SSHOptions{Jump: "bastion,alice@" + jump2.addr})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "two hops")
	if got := jump2.forwards(); len(got) != 1 || got[0] != f.srv.addr {
		t.Errorf("the second hop forwarded to %q, want [%s]", got, f.srv.addr)
	}
	if got := jump.forwards(); len(got) != 2 || got[1] != jump2.addr {
		t.Errorf("the first hop forwarded to %q, want [... %s]", got, jump2.addr)
	}

	// A hop that refuses us is named.
	_, err = dialTest(t, f.sys, "target", SSHOptions{Jump: "nobody@" + jump.addr})
	wantErr(t, err, "jump host nobody@"+jump.addr, "authentication failed")
	// -o ProxyJump=none turns the configured one off: the target is then
	// dialled directly, which here works.
	if _, err := dialTest(t, f.sys, "target", SSHOptions{Options: []string{"ProxyJump=none"}}); err != nil {
		t.Fatal(err)
	}
	if got := jump.forwards(); len(got) != 2 {
		t.Errorf("the bastion forwarded %d times, want 2 (not for the refused hop, not for ProxyJump=none)", len(got))
	}
}

func TestDialProxyCommand(t *testing.T) {
	f := newFixture(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f.config(t, fmt.Sprintf(`
Host target
  HostName 127.0.0.1
  Port %d
  User alice
  ProxyCommand env RELOCATE_TEST_NC=%%h:%%p %s
`, f.srv.port, exe))
	c, err := dialTest(t, f.sys, "target", SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "through a command")
	c.Close()

	// A command that fails says why.
	_, err = dialTest(t, f.sys, "target", SSHOptions{Options: []string{"ProxyCommand sh -c 'echo no route to the moon >&2; exit 3'"}})
	wantErr(t, err, "ProxyCommand ended (exit status 3): no route to the moon")
}

// signCert makes a certificate for key signed by ca.
func signCert(t *testing.T, ca testKey, key ssh.PublicKey, typ uint32, principals ...string) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{
		Key: key, CertType: typ, KeyId: "test-" + principals[0], ValidPrincipals: principals,
		ValidAfter: 0, ValidBefore: ssh.CertTimeInfinity,
	}
	if err := c.SignCert(rand.Reader, ca.signer); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDialUserCertificate(t *testing.T) {
	ca := newKey(t)
	f := newFixture(t, func(s *testServer) { s.allowed = nil; s.userCA = ca.public() })
	_, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "authentication failed")

	cert := signCert(t, ca, f.key.public(), ssh.UserCert, "alice")
	certFile := filepath.Join(f.home, "certs", "alice-cert.pub")
	writeFile(t, certFile, string(ssh.MarshalAuthorizedKey(cert)))
	f.config(t, "CertificateFile ~/certs/alice-cert.pub\n")
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "certified")

	// ssh also finds KEY-cert.pub beside the key.
	f.config(t, "")
	writeFile(t, filepath.Join(f.home, ".ssh", "id_ed25519-cert.pub"), string(ssh.MarshalAuthorizedKey(cert)))
	if _, err := dialTest(t, f.sys, f.dest, SSHOptions{}); err != nil {
		t.Fatal(err)
	}

	// A certificate for another principal is refused by the server.
	os.Remove(filepath.Join(f.home, ".ssh", "id_ed25519-cert.pub"))
	bob := signCert(t, ca, f.key.public(), ssh.UserCert, "bob")
	writeFile(t, certFile, string(ssh.MarshalAuthorizedKey(bob)))
	f.config(t, "CertificateFile ~/certs/alice-cert.pub\n")
	_, err = dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "authentication failed", `certificate "test-bob"`)
}

func TestDialHostCertificate(t *testing.T) {
	ca := newKey(t)
	var hostKey testKey
	f := newFixture(t, func(s *testServer) {
		hostKey = newKey(t)
		s.hostKeys = []testKey{hostKey}
	})
	cert := signCert(t, ca, hostKey.public(), ssh.HostCert, "127.0.0.1")
	cs, err := ssh.NewCertSigner(cert, hostKey.signer)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.extraHost = []ssh.Signer{cs}
	srv := startServer(t, &testServer{user: "alice", allowed: f.key.public(), hostKeys: []testKey{hostKey}, extraHost: []ssh.Signer{cs}})
	dest := "alice@" + srv.addr
	kh := filepath.Join(f.home, ".ssh", "known_hosts")
	writeFile(t, kh, "")
	_, err = dialTest(t, f.sys, dest, SSHOptions{})
	wantErr(t, err, "host key is not known")
	// (x/crypto matches a pattern without [host]:port to port 22 only.)
	writeFile(t, kh, "@cert-authority [127.0.0.1]:"+strconv.Itoa(srv.port)+" "+string(ssh.MarshalAuthorizedKey(ca.public())))
	c, err := dialTest(t, f.sys, dest, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "host certified")
	// The certificate is for 127.0.0.1 only: under another name it does
	// not count.
	_, err = dialTest(t, f.sys, dest, SSHOptions{Options: []string{"HostKeyAlias=elsewhere"}})
	wantErr(t, err, "host key is not known")
}

func TestDialHostKeyAlias(t *testing.T) {
	f := newFixture(t)
	kh := filepath.Join(f.home, ".ssh", "known_hosts")
	line := strings.Replace(f.srv.knownLine(f.srv.hostKeys[0].public()), "[127.0.0.1]", "[the-alias]", 1)
	writeFile(t, kh, line)
	_, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "host key is not known")
	f.config(t, "HostKeyAlias The-Alias\n")
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "aliased")
}

func TestDialOptionOverridesConfig(t *testing.T) {
	f := newFixture(t)
	f.config(t, fmt.Sprintf("Host 127.0.0.1\n  Port %d\n", closedPort(t)))
	_, err := dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{})
	wantErr(t, err, "connection refused")
	if _, err := dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{Options: []string{"Port=" + strconv.Itoa(f.srv.port)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{Options: []string{"Bogus"}}); err == nil {
		t.Fatal("-o Bogus accepted")
	}
}

func TestDialWarnsOfIgnoredKeys(t *testing.T) {
	f := newFixture(t)
	f.config(t, "Host *\n  Ciphers aes256-ctr\n  SendEnv LANG\n")
	var warned []string
	if _, err := dialTest(t, f.sys, f.dest, SSHOptions{Warn: func(s string) { warned = append(warned, s) }}); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "relocate ignores Ciphers") || strings.Contains(warned[0], "SendEnv") {
		t.Errorf("warnings %q, want one naming Ciphers only", warned)
	}
}

func TestDialPassphrase(t *testing.T) {
	f := newFixture(t)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(f.key.priv, "test", []byte("sesame"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(f.home, ".ssh", "id_ed25519"), string(pem.EncodeToMemory(block)))
	var asked atomic.Int32
	answers := []string{"wrong", "sesame"}
	ask := func(prompt string) ([]byte, error) {
		n := asked.Add(1)
		if !strings.Contains(prompt, "~/.ssh/id_ed25519") {
			t.Errorf("prompt %q does not name the key", prompt)
		}
		return []byte(answers[(n-1)%2]), nil
	}
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{Passphrase: ask})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "unlocked")
	if asked.Load() != 2 {
		t.Errorf("asked %d times, want 2 (a wrong passphrase, then the right one)", asked.Load())
	}

	// BatchMode: no question, and the failure says why.
	f.config(t, "BatchMode yes\n")
	_, err = dialTest(t, f.sys, f.dest, SSHOptions{Passphrase: ask})
	wantErr(t, err, "authentication failed", "passphrase-protected")
	if asked.Load() != 2 {
		t.Errorf("asked under BatchMode")
	}

	// A key the server does not take is not unlocked.
	f.config(t, "")
	other := startServer(t, &testServer{user: "alice", allowed: newKey(t).public()})
	writeFile(t, filepath.Join(f.home, ".ssh", "known_hosts"), other.knownLine(other.hostKeys[0].public()))
	_, err = dialTest(t, f.sys, "alice@"+other.addr, SSHOptions{Passphrase: ask})
	wantErr(t, err, "authentication failed")
	if asked.Load() != 2 {
		t.Errorf("asked for a key the server refuses")
	}
}

func TestDialStrictNoWarnsOfChangedKey(t *testing.T) {
	f := newFixture(t)
	kh := filepath.Join(f.home, ".ssh", "known_hosts")
	writeFile(t, kh, f.srv.knownLine(newKey(t).public()))
	f.config(t, "Host *\n  StrictHostKeyChecking no\n")
	var warned []string
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{Warn: func(s string) { warned = append(warned, s) }})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "true")
	if len(warned) != 1 || !strings.Contains(warned[0], "HOST KEY HAS CHANGED") || !strings.Contains(warned[0], "known_hosts:1") {
		t.Errorf("warnings %q, want one about the changed key", warned)
	}
	// An unknown host under "no" is let in without a word, as by ssh.
	writeFile(t, kh, "")
	warned = nil
	if _, err := dialTest(t, f.sys, f.dest, SSHOptions{Warn: func(s string) { warned = append(warned, s) }}); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 0 {
		t.Errorf("warnings %q for an unknown host", warned)
	}
}
