package transfer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// testKey is a key pair; its private half can be written as ssh-keygen would.
type testKey struct {
	priv   any
	signer ssh.Signer
}

func newKey(t *testing.T) testKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyFrom(t, priv)
}

func newECDSAKey(t *testing.T) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyFrom(t, priv)
}

func keyFrom(t *testing.T, priv any) testKey {
	t.Helper()
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv: priv, signer: s}
}

func (k testKey) public() ssh.PublicKey { return k.signer.PublicKey() }

// write stores the private key at path in OpenSSH's format.
func (k testKey) write(t *testing.T, path string) {
	t.Helper()
	writeFile(t, path, string(pem.EncodeToMemory(k.block(t))))
}

func (k testKey) block(t *testing.T) *pem.Block {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(k.priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	return block
}

// writeProtected stores the key as passphrase-protected. Readers stop at
// the cipher name, so the private part is left as it is: real encryption
// (bcrypt_pbkdf) takes seconds under the race detector.
func (k testKey) writeProtected(t *testing.T, path string) {
	t.Helper()
	const magic = "openssh-key-v1\x00"
	block := k.block(t)
	var w struct {
		CipherName, KdfName, KdfOpts string
		NumKeys                      uint32
		PubKey, PrivKeyBlock         []byte
	}
	if err := ssh.Unmarshal(block.Bytes[len(magic):], &w); err != nil {
		t.Fatal(err)
	}
	w.CipherName, w.KdfName = "aes256-ctr", "bcrypt"
	w.KdfOpts = string(ssh.Marshal(struct {
		Salt   []byte
		Rounds uint32
	}{make([]byte, 16), 16}))
	block.Bytes = append([]byte(magic), ssh.Marshal(&w)...)
	writeFile(t, path, string(pem.EncodeToMemory(block)))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testServer is an in-process sshd: public-key auth for one user and one
// key, "exec" requests echo their command and exit 0.
type testServer struct {
	addr       string
	port       int
	hostKeys   []testKey
	keepalives atomic.Int32

	user         string
	allowed      ssh.PublicKey
	ignoreGlobal bool          // never answer global requests, like a peer whose network died
	userCA       ssh.PublicKey // also accept user certificates it signed (proxy_test.go)
	extraHost    []ssh.Signer  // host keys besides hostKeys (host certificates)
	forward      bool          // open direct-tcpip channels (a jump host)
	forwarded    []string      // where direct-tcpip channels went

	mu      sync.Mutex
	fromCli []byte // the first bytes the client sent
	conns   []net.Conn
	wg      sync.WaitGroup
}

func startServer(t *testing.T, s *testServer) *testServer {
	t.Helper()
	if len(s.hostKeys) == 0 {
		s.hostKeys = []testKey{newKey(t)}
	}
	cfg := &ssh.ServerConfig{
		MaxAuthTries: -1,
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() == s.user && s.allowed != nil && keysEqual(key, s.allowed) {
				return &ssh.Permissions{}, nil
			}
			return nil, fmt.Errorf("user %q with key %s refused", c.User(), ssh.FingerprintSHA256(key))
		},
	}
	for _, k := range s.hostKeys {
		cfg.AddHostKey(k.signer)
	}
	for _, k := range s.extraHost {
		cfg.AddHostKey(k)
	}
	if s.userCA != nil {
		plain := cfg.PublicKeyCallback
		checker := &ssh.CertChecker{
			IsUserAuthority: func(auth ssh.PublicKey) bool { return keysEqual(auth, s.userCA) },
			UserKeyFallback: plain,
		}
		cfg.PublicKeyCallback = checker.Authenticate
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.port = ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c, cfg)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(&recordingConn{Conn: c, s: s}, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go s.globalRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() == "direct-tcpip" && s.forward {
			go s.forwardChannel(nc)
			continue
		}
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "sessions only")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go execOnly(ch, chReqs)
	}
}

func (s *testServer) globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		if r.Type == "keepalive@openssh.com" {
			s.keepalives.Add(1)
		}
		if r.WantReply && !s.ignoreGlobal {
			r.Reply(false, nil)
		}
	}
}

func execOnly(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for r := range reqs {
		var cmd struct{ Command string }
		if r.Type != "exec" || ssh.Unmarshal(r.Payload, &cmd) != nil {
			r.Reply(false, nil)
			continue
		}
		r.Reply(true, nil)
		ch.Write([]byte(cmd.Command))
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
		return
	}
}

// recordingConn keeps what the client sends before encryption starts, so a
// test can read the client's KEXINIT off the wire.
type recordingConn struct {
	net.Conn
	s *testServer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.s.mu.Lock()
	if len(r.s.fromCli) < 1<<14 {
		r.s.fromCli = append(r.s.fromCli, p[:n]...)
	}
	r.s.mu.Unlock()
	return n, err
}

// clientKexInit reads the name-lists of the client's KEXINIT: key
// exchange, host key, then ciphers client to server, and so on.
func (s *testServer) clientKexInit(t *testing.T) [][]string {
	t.Helper()
	s.mu.Lock()
	stream := append([]byte(nil), s.fromCli...)
	s.mu.Unlock()
	_, pkt, ok := bytes.Cut(stream, []byte("\r\n"))
	if !ok || len(pkt) < 5 {
		t.Fatalf("no version line and packet in %q", stream)
	}
	length, pad := binary.BigEndian.Uint32(pkt), uint32(pkt[4])
	if uint32(len(pkt)) < 4+length || length < pad+1+17 {
		t.Fatalf("short first packet: %d bytes, length %d", len(pkt), length)
	}
	payload := pkt[5 : 4+length-pad]
	if payload[0] != 20 {
		t.Fatalf("first packet is message %d, not KEXINIT", payload[0])
	}
	rest := payload[17:]
	var lists [][]string
	for range 4 {
		if len(rest) < 4 || uint32(len(rest)-4) < binary.BigEndian.Uint32(rest) {
			t.Fatalf("KEXINIT name-list cut short")
		}
		n := binary.BigEndian.Uint32(rest)
		lists = append(lists, strings.Split(string(rest[4:4+n]), ","))
		rest = rest[4+n:]
	}
	return lists
}

// knownLine is a known_hosts line for the server as ssh would write it.
func (s *testServer) knownLine(key ssh.PublicKey) string {
	return knownhosts.Line([]string{s.addr}, key) + "\n"
}

// testHome makes an empty HOME with no agent, and system files that do not
// exist, so nothing on the machine running the test leaks in.
func testHome(t *testing.T) (string, systemFiles) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("USER", "nobody-here")
	t.Setenv("SSH_AUTH_SOCK", "")
	return home, systemFiles{
		config:     filepath.Join(home, "etc", "ssh_config"),
		knownHosts: []string{filepath.Join(home, "etc", "ssh_known_hosts")},
	}
}

func dialTest(t *testing.T, sys systemFiles, dest string, o SSHOptions) (*Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialSSH(ctx, dest, o, sys)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// fixture is the usual setup: a server for alice, her key in
// ~/.ssh/id_ed25519 and the server's key in ~/.ssh/known_hosts.
type fixture struct {
	home string
	sys  systemFiles
	srv  *testServer
	key  testKey
	dest string
}

func newFixture(t *testing.T, adjust ...func(*testServer)) *fixture {
	t.Helper()
	f := &fixture{key: newKey(t)}
	f.home, f.sys = testHome(t)
	srv := &testServer{user: "alice", allowed: f.key.public()}
	for _, a := range adjust {
		a(srv)
	}
	f.srv = startServer(t, srv)
	f.key.write(t, filepath.Join(f.home, ".ssh", "id_ed25519"))
	writeFile(t, filepath.Join(f.home, ".ssh", "known_hosts"), f.srv.knownLine(f.srv.hostKeys[0].public()))
	f.dest = "alice@" + f.srv.addr
	return f
}

func (f *fixture) config(t *testing.T, text string) {
	t.Helper()
	writeFile(t, filepath.Join(f.home, ".ssh", "config"), text)
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("dial succeeded; want an error with %q", parts)
	}
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("error %T is not a *DialError: %v", err, err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q\ndoes not contain %q", msg, p)
		}
	}
}

func runEcho(t *testing.T, c *Client, cmd string) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output(cmd)
	if err != nil {
		t.Fatalf("running %q: %v", cmd, err)
	}
	if string(out) != cmd {
		t.Fatalf("server echoed %q, want %q", out, cmd)
	}
}

func TestDialKnownHostRunsCommand(t *testing.T) {
	f := newFixture(t)
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "alice@" + f.srv.addr; c.Dest != want || c.Host != "127.0.0.1" {
		t.Errorf("Dest, Host = %q, %q; want %q, 127.0.0.1", c.Dest, c.Host, want)
	}
	runEcho(t, c, "echo 'hello there'")
}

func TestDialDefaultUserIsUSER(t *testing.T) {
	f := newFixture(t)
	if _, err := dialTest(t, f.sys, f.srv.addr, SSHOptions{}); err == nil {
		t.Fatal("the server took user nobody-here; the test cannot tell users apart")
	}
	t.Setenv("USER", "alice")
	if _, err := dialTest(t, f.sys, f.srv.addr, SSHOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestDialUnknownHostRefused(t *testing.T) {
	f := newFixture(t)
	kh := filepath.Join(f.home, ".ssh", "known_hosts")
	os.Remove(kh)
	_, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "ssh alice@"+f.srv.addr+": host key is not known: ED25519 ",
		ssh.FingerprintSHA256(f.srv.hostKeys[0].public()),
		fmt.Sprintf("(ssh-keyscan -p %d 127.0.0.1 >> ~/.ssh/known_hosts)", f.srv.port),
		"StrictHostKeyChecking=accept-new")
	if _, err := os.Stat(kh); err == nil {
		t.Error("a refused key was written to known_hosts")
	}
}

func TestDialChangedHostKeyRefused(t *testing.T) {
	f := newFixture(t)
	kh := filepath.Join(f.home, ".ssh", "known_hosts")
	old := "# keys\n" + f.srv.knownLine(newKey(t).public())
	writeFile(t, kh, old)
	// accept-new takes unknown keys, never changed ones.
	f.config(t, "StrictHostKeyChecking accept-new\n")
	_, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "HOST KEY HAS CHANGED: the server offers ED25519 "+ssh.FingerprintSHA256(f.srv.hostKeys[0].public()),
		"~/.ssh/known_hosts:2 has another key for it; refusing (possible man-in-the-middle)")
	if got, _ := os.ReadFile(kh); string(got) != old {
		t.Errorf("known_hosts was changed to %q", got)
	}
}

func TestDialStrictNoAcceptsUnknownKey(t *testing.T) {
	f := newFixture(t)
	kh := filepath.Join(f.home, ".ssh", "known_hosts")
	os.Remove(kh)
	f.config(t, "Host *\n  StrictHostKeyChecking no\n")
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "true")
	if _, err := os.Stat(kh); err == nil {
		t.Error("StrictHostKeyChecking=no wrote known_hosts")
	}
}

func TestDialAcceptNewRecordsKey(t *testing.T) {
	for _, hash := range []bool{false, true} {
		t.Run("hash="+strconv.FormatBool(hash), func(t *testing.T) {
			f := newFixture(t)
			os.RemoveAll(filepath.Join(f.home, ".ssh"))
			f.key.write(t, filepath.Join(f.home, "id"))
			o := SSHOptions{Identity: []string{filepath.Join(f.home, "id")}}
			hashLine := ""
			if hash {
				hashLine = "HashKnownHosts yes\n"
			}
			writeFile(t, filepath.Join(f.home, "cfg-new"), "StrictHostKeyChecking accept-new\n"+hashLine)
			writeFile(t, filepath.Join(f.home, "cfg-yes"), "StrictHostKeyChecking yes\n")

			o.ConfigFile = filepath.Join(f.home, "cfg-yes")
			if _, err := dialTest(t, f.sys, f.dest, o); err == nil {
				t.Fatal("strict dial of an unknown host succeeded")
			}
			o.ConfigFile = filepath.Join(f.home, "cfg-new")
			if _, err := dialTest(t, f.sys, f.dest, o); err != nil {
				t.Fatal(err)
			}
			checkMode(t, filepath.Join(f.home, ".ssh"), 0o700)
			kh := filepath.Join(f.home, ".ssh", "known_hosts")
			checkMode(t, kh, 0o600)
			got, _ := os.ReadFile(kh)
			prefix := fmt.Sprintf("[127.0.0.1]:%d ssh-ed25519 ", f.srv.port)
			if hash {
				prefix = "|1|"
			}
			if !strings.HasPrefix(string(got), prefix) || strings.Count(string(got), "\n") != 1 {
				t.Errorf("known_hosts = %q; want one line starting %q", got, prefix)
			}
			o.ConfigFile = filepath.Join(f.home, "cfg-yes")
			if _, err := dialTest(t, f.sys, f.dest, o); err != nil {
				t.Fatalf("second dial with the recorded key: %v", err)
			}
		})
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func TestDialPrefersKnownHostKeyType(t *testing.T) {
	ec := newECDSAKey(t)
	// The server offers both; only its ECDSA key is known. Asked for
	// Ed25519 first it would show a key that looks changed.
	f := newFixture(t, func(s *testServer) { s.hostKeys = []testKey{newKey(t), ec} })
	writeFile(t, filepath.Join(f.home, ".ssh", "known_hosts"), f.srv.knownLine(ec.public()))
	if _, err := dialTest(t, f.sys, f.dest, SSHOptions{}); err != nil {
		t.Fatal(err)
	}
	if hk := f.srv.clientKexInit(t)[1]; hk[0] != ssh.KeyAlgoECDSA256 {
		t.Errorf("host key algorithms offered %v; want %s first", hk, ssh.KeyAlgoECDSA256)
	}
}

func TestDialOffersAESGCMFirst(t *testing.T) {
	f := newFixture(t)
	if _, err := dialTest(t, f.sys, f.dest, SSHOptions{}); err != nil {
		t.Fatal(err)
	}
	// The server takes the first cipher in the client's list it supports,
	// and x/crypto supports them all.
	want := []string{"aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"}
	kex := f.srv.clientKexInit(t)
	for i, dir := range []string{"client to server", "server to client"} {
		if got := kex[2+i]; !slices.Equal(got, want) {
			t.Errorf("%s ciphers offered %v; want %v", dir, got, want)
		}
	}
}

func TestDialAliasFromSSHConfig(t *testing.T) {
	f := newFixture(t)
	os.RemoveAll(filepath.Join(f.home, ".ssh"))
	f.key.write(t, filepath.Join(f.home, "keys", "127.0.0.1-alice.key"))
	writeFile(t, filepath.Join(f.home, "kh", "second"), f.srv.knownLine(f.srv.hostKeys[0].public()))
	f.config(t, fmt.Sprintf(`# the target
Host dst
  HostName 127.0.0.1
  User alice
  Port %d
  IdentityFile ~/keys/%%h-%%r.key
  UserKnownHostsFile ~/kh/first ~/kh/second

Host *
  User bob
  Port 1
`, f.srv.port))
	c, err := dialTest(t, f.sys, "dst", SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "alice@" + f.srv.addr + " (dst)"; c.Dest != want {
		t.Errorf("Dest = %q, want %q", c.Dest, want)
	}
	runEcho(t, c, "uname")
}

func TestDialConfigFileFlag(t *testing.T) {
	f := newFixture(t)
	closed := closedPort(t)
	f.config(t, fmt.Sprintf("Host 127.0.0.1\n  Port %d\n", closed))
	_, err := dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{})
	wantErr(t, err, fmt.Sprintf("ssh alice@127.0.0.1:%d: cannot connect: connection refused", closed))

	// Only the -F file counts; it also points known_hosts elsewhere, which
	// makes the public Dial independent of /etc/ssh.
	kh := filepath.Join(f.home, "kh")
	writeFile(t, kh, f.srv.knownLine(f.srv.hostKeys[0].public()))
	flagFile := filepath.Join(f.home, "flag config")
	writeFile(t, flagFile, fmt.Sprintf("Port %d\nUserKnownHostsFile %s\nGlobalKnownHostsFile /dev/null\n", f.srv.port, kh))
	os.Remove(filepath.Join(f.home, ".ssh", "known_hosts"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, "alice@127.0.0.1", SSHOptions{ConfigFile: flagFile})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	missing := filepath.Join(f.home, "nosuch")
	_, err = dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{ConfigFile: missing})
	wantErr(t, err, "ssh config "+missing+": no such file or directory")

	bad := filepath.Join(f.home, "bad")
	writeFile(t, bad, "Match\n")
	_, err = dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{ConfigFile: bad})
	wantErr(t, err, "ssh config "+bad+":1: Match without a criterion")
}

func TestDialIdentityFlag(t *testing.T) {
	f := newFixture(t)
	os.Remove(filepath.Join(f.home, ".ssh", "id_ed25519"))
	_, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "authentication failed")

	key := filepath.Join(f.home, "keys", "target")
	f.key.write(t, key)
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{Identity: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "id")

	_, err = dialTest(t, f.sys, f.dest, SSHOptions{Identity: []string{key + ".gone"}})
	wantErr(t, err, "-i "+key+".gone: no such file or directory")
}

func TestDialPortFlagOverridesConfig(t *testing.T) {
	f := newFixture(t)
	closed := closedPort(t)
	f.config(t, fmt.Sprintf("Port %d\n", closed))
	_, err := dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{})
	wantErr(t, err, "cannot connect")
	if _, err := dialTest(t, f.sys, "alice@127.0.0.1", SSHOptions{Port: f.srv.port}); err != nil {
		t.Fatal(err)
	}
	// The port in the destination is more specific than -p.
	if _, err := dialTest(t, f.sys, f.dest, SSHOptions{Port: closed}); err != nil {
		t.Fatal(err)
	}
}

// serveAgent runs an ssh-agent holding keys on a socket in dir and points
// SSH_AUTH_SOCK at it.
func serveAgent(t *testing.T, dir string, keys ...testKey) {
	t.Helper()
	ring := agent.NewKeyring()
	for _, k := range keys {
		if err := ring.Add(agent.AddedKey{PrivateKey: k.priv}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				agent.ServeAgent(ring, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	t.Setenv("SSH_AUTH_SOCK", sock)
}

func TestDialAgent(t *testing.T) {
	f := newFixture(t)
	os.Remove(filepath.Join(f.home, ".ssh", "id_ed25519"))
	serveAgent(t, f.home, f.key)
	c, err := dialTest(t, f.sys, f.dest, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runEcho(t, c, "hostname")

	f.config(t, "IdentityAgent none\n")
	_, err = dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "authentication failed")

	// IdentitiesOnly keeps agent keys that match no identity file out.
	newKey(t).write(t, filepath.Join(f.home, "other"))
	f.config(t, "IdentitiesOnly yes\nIdentityFile ~/other\n")
	_, err = dialTest(t, f.sys, f.dest, SSHOptions{})
	wantErr(t, err, "authentication failed (tried: ssh-agent (0 keys), ~/other)")
}

func TestDialAuthFailureSaysWhatWasTried(t *testing.T) {
	f := newFixture(t, func(s *testServer) { s.allowed = nil })
	ikey := filepath.Join(f.home, "wrong")
	newKey(t).write(t, ikey)
	newKey(t).writeProtected(t, filepath.Join(f.home, ".ssh", "id_ecdsa"))
	serveAgent(t, f.home, newKey(t), newKey(t))
	_, err := dialTest(t, f.sys, f.dest, SSHOptions{Identity: []string{ikey}})
	wantErr(t, err, "ssh alice@"+f.srv.addr+": authentication failed (tried: -i "+ikey+
		", ssh-agent (2 keys), ~/.ssh/id_ed25519); ~/.ssh/id_ecdsa is passphrase-protected; load it into ssh-agent")
}

func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestDialConnectionRefusedIsQuick(t *testing.T) {
	_, sys := testHome(t)
	port := closedPort(t)
	start := time.Now()
	_, err := dialTest(t, sys, "root@127.0.0.1:"+strconv.Itoa(port), SSHOptions{Timeout: 10 * time.Second})
	wantErr(t, err, fmt.Sprintf("ssh root@127.0.0.1:%d: cannot connect: connection refused", port))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
}

// silentListener accepts connections and never says a word, like a
// firewall's tarpit; accepted ticks once per connection.
func silentListener(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tick := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			tick <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), tick
}

func TestDialHandshakeTimeout(t *testing.T) {
	_, sys := testHome(t)
	addr, _ := silentListener(t)
	start := time.Now()
	_, err := dialTest(t, sys, "root@"+addr, SSHOptions{Timeout: 300 * time.Millisecond})
	wantErr(t, err, "timed out after 300ms in the SSH handshake")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timeout of 300ms took %v", d)
	}
}

func TestDialCanceled(t *testing.T) {
	_, sys := testHome(t)
	addr, accepted := silentListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the TCP connection is up, so the handshake is what
	// gets interrupted.
	go func() {
		select {
		case <-accepted:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := dialSSH(ctx, "root@"+addr, SSHOptions{Timeout: 10 * time.Second}, sys)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v is not context.Canceled", err)
	}
}

func TestKeepAlive(t *testing.T) {
	for _, dead := range []bool{false, true} {
		t.Run("dead="+strconv.FormatBool(dead), func(t *testing.T) {
			f := newFixture(t, func(s *testServer) { s.ignoreGlobal = dead })
			c, err := dialTest(t, f.sys, f.dest, SSHOptions{})
			if err != nil {
				t.Fatal(err)
			}
			stopped := make(chan struct{})
			go func() {
				keepAlive(c.Client, 20*time.Millisecond, 3)
				close(stopped)
			}()
			if dead {
				select {
				case <-stopped:
				case <-time.After(3 * time.Second):
					t.Fatal("keepAlive did not give up on a peer that never answers")
				}
				if _, err := c.NewSession(); err == nil {
					t.Fatal("the client still works after keepAlive gave up")
				}
				return
			}
			deadline := time.After(3 * time.Second)
			for f.srv.keepalives.Load() < 6 {
				select {
				case <-stopped:
					t.Fatal("keepAlive closed a connection whose peer answers")
				case <-deadline:
					t.Fatalf("only %d keepalives reached the server", f.srv.keepalives.Load())
				case <-time.After(5 * time.Millisecond):
				}
			}
			runEcho(t, c, "still here")
			c.Close()
			select {
			case <-stopped:
			case <-time.After(3 * time.Second):
				t.Fatal("keepAlive did not stop when the client closed")
			}
		})
	}
}

func TestParseDest(t *testing.T) {
	tests := []struct {
		in   string
		want sshDest
		err  string
	}{
		{in: "host", want: sshDest{host: "host"}},
		{in: "root@10.0.0.2", want: sshDest{user: "root", host: "10.0.0.2"}},
		{in: "db2:2222", want: sshDest{host: "db2", port: 2222}},
		{in: "root@db2:2222", want: sshDest{user: "root", host: "db2", port: 2222}},
		{in: "[::1]:2222", want: sshDest{host: "::1", port: 2222}},
		{in: "u@[fe80::1%eth0]:22", want: sshDest{user: "u", host: "fe80::1%eth0", port: 22}},
		{in: "[::1]", want: sshDest{host: "::1"}},
		{in: "::1", want: sshDest{host: "::1"}},
		{in: "root@2001:db8::7", want: sshDest{user: "root", host: "2001:db8::7"}},
		{in: "me@corp@host", want: sshDest{user: "me@corp", host: "host"}},
		{in: "ssh://root@host:23", want: sshDest{user: "root", host: "host", port: 23}},
		{in: "", err: "no host name"},
		{in: "root@", err: "no host name"},
		{in: "@host", err: "empty user name"},
		{in: "host:", err: `bad port ""`},
		{in: "host:ssh", err: `bad port "ssh"`},
		{in: "host:65536", err: `bad port "65536"`},
		{in: "[::1", err: "missing ]"},
		{in: "[::1]x", err: `unexpected "x"`},
	}
	for _, tt := range tests {
		got, err := parseDest(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseDest(%q) error = %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("parseDest(%q): %v", tt.in, err)
		case tt.err == "" && got != tt.want:
			t.Errorf("parseDest(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestConnectError(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		ctx  context.Context
		err  error
		want string
	}{
		{context.Background(), op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), "cannot connect: connection refused"},
		{context.Background(), op(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), "cannot connect: no route to host"},
		{context.Background(), op(&net.DNSError{Err: "no such host", Name: "nosuch", IsNotFound: true}), `cannot resolve host name "nosuch": no such host`},
		{context.Background(), op(os.ErrDeadlineExceeded), "cannot connect: timed out after 10s"},
		{canceled, op(errors.New("operation was canceled")), "cannot connect: context canceled"},
	}
	for _, tt := range tests {
		if got := connectError(tt.ctx, tt.err, 10*time.Second).Error(); got != tt.want {
			t.Errorf("connectError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestPasswdEntry(t *testing.T) {
	passwd := "# comment:x:0:0::/:/bin/sh\n" +
		"root:x:0:0:root:/root:/bin/bash\n" +
		"broken:x:1000\n" +
		"+nis\n" +
		"ann:x:1000:1000:Ann, room 2:/home/ann b:/bin/sh\n" +
		"no-newline:x:1001:1001::/home/nn:/bin/false"
	tests := []struct {
		uid        int
		name, home string
		ok         bool
	}{
		{0, "root", "/root", true},
		{1000, "ann", "/home/ann b", true},
		{1001, "no-newline", "/home/nn", true},
		{4242, "", "", false},
	}
	for _, tt := range tests {
		name, home, ok := passwdEntry([]byte(passwd), tt.uid)
		if name != tt.name || home != tt.home || ok != tt.ok {
			t.Errorf("passwdEntry(%d) = %q, %q, %v; want %q, %q, %v", tt.uid, name, home, ok, tt.name, tt.home, tt.ok)
		}
	}
}

func TestExpandPaths(t *testing.T) {
	tokens := map[byte]string{'h': "10.0.0.2", 'r': "root", 'd': "/home/me"}
	tests := []struct{ in, want, err string }{
		{in: "~/.ssh/id_%h", want: "/home/me/.ssh/id_10.0.0.2"},
		{in: "~", want: "/home/me"},
		{in: "%d/keys/%r@%h", want: "/home/me/keys/root@10.0.0.2"},
		{in: "100%%", want: "100%"},
		{in: "/k/%x", err: "unknown token %x"},
		{in: "/k/%", err: "lone %"},
		{in: "~bob/k", err: "only ~/"},
	}
	for _, tt := range tests {
		got, err := expandTilde(tt.in, "/home/me")
		if err == nil {
			got, err = expandTokens(got, tokens)
		}
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("expand(%q) error = %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestShellQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "it's", "a b", `$HOME "x" \n`, "'", "*?[]", "new\nline", "-rf"} {
		out, err := shellEcho(ShellQuote(s))
		if err != nil {
			t.Fatal(err)
		}
		if out != s {
			t.Errorf("sh read ShellQuote(%q) = %s as %q", s, ShellQuote(s), out)
		}
	}
}

func TestDialErrorIsOneLine(t *testing.T) {
	e := &DialError{Dest: "root@h:22", Err: errors.New("first\nsecond\r\nthird")}
	if got, want := e.Error(), "ssh root@h:22: first second third"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, e.Err) {
		t.Error("DialError does not unwrap to its Err")
	}
}

// shellEcho has sh print the word it parses from quoted.
func shellEcho(quoted string) (string, error) {
	out, err := exec.Command("sh", "-c", "printf %s "+quoted).Output()
	return string(out), err
}
