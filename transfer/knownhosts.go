package transfer

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeys checks the server's host key against known_hosts, the way
// StrictHostKeyChecking asks, and remembers why it refused one so that Dial
// can report that rather than x/crypto's generic handshake error.
type hostKeys struct {
	db       ssh.HostKeyCallback // nil when no known_hosts file exists
	mode     strictMode
	recordIn string // where accept-new appends: the first UserKnownHostsFile
	hash     bool   // HashKnownHosts
	host     string
	port     int
	home     string
	haveCA   bool // some known_hosts file has an @cert-authority line
	warn     func(string)

	mu       sync.Mutex
	accepted ssh.PublicKey // a key let in by accept-new or "no", for re-keying
	refusal  error
}

func newHostKeys(t *sshTarget, warn func(string)) (*hostKeys, error) {
	files := append(append([]string(nil), t.userKnownHosts...), t.globalKnownHosts...)
	db, err := loadKnownHosts(files)
	if err != nil {
		return nil, err
	}
	h := &hostKeys{db: db, mode: t.strict, hash: t.hashKnownHosts, host: t.knownHostsName(), port: t.port, home: t.home,
		haveCA: anyCertAuthority(files), warn: warn}
	if len(t.userKnownHosts) > 0 {
		h.recordIn = t.userKnownHosts[0]
	}
	return h, nil
}

// loadKnownHosts skips missing files (most people have no known_hosts2) but
// not unreadable ones: silently ignoring a file we cannot read would turn a
// known host into an unknown one.
func loadKnownHosts(files []string) (ssh.HostKeyCallback, error) {
	var present []string
	for _, f := range files {
		_, err := os.Stat(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("known hosts: %w", err)
		}
		present = append(present, f)
	}
	if len(present) == 0 {
		return nil, nil
	}
	db, err := knownhosts.New(present...)
	if err != nil {
		return nil, fmt.Errorf("known hosts: %w", err)
	}
	return db, nil
}

// lookup checks key for address. Like ssh, a host certificate that no
// @cert-authority vouches for is judged as the plain key it certifies: the
// server proved it holds that key's private half.
func (h *hostKeys) lookup(address string, remote net.Addr, key ssh.PublicKey) error {
	if h.db == nil {
		return &knownhosts.KeyError{}
	}
	err := h.db(address, remote, key)
	if cert, ok := key.(*ssh.Certificate); ok && err != nil {
		return h.db(address, remote, cert.Key)
	}
	return err
}

// callback is the ssh.HostKeyCallback. x/crypto calls it again on every
// re-key, hence the memory of a key accepted earlier.
func (h *hostKeys) callback(address string, remote net.Addr, key ssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.accepted != nil && keysEqual(h.accepted, key) {
		return nil
	}
	err := h.judge(address, remote, key)
	if err != nil {
		h.refusal = err
	}
	return err
}

func (h *hostKeys) judge(address string, remote net.Addr, key ssh.PublicKey) error {
	err := h.lookup(address, remote, key)
	if err == nil {
		return nil
	}
	var keyErr *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case errors.As(err, &revoked):
		return fmt.Errorf("host key %s is marked @revoked in %s:%d; refusing",
			describeKey(key), h.tilde(revoked.Revoked.Filename), revoked.Revoked.Line)
	case !errors.As(err, &keyErr):
		return fmt.Errorf("checking the host key: %w", err)
	case h.mode == strictNo:
		if want := plainEntries(keyErr.Want); len(want) > 0 && h.warn != nil {
			// ssh lets it in too, but not without saying so.
			h.warn(fmt.Sprintf("HOST KEY HAS CHANGED for %s: the server offers %s, %s:%d has another key; connecting anyway (StrictHostKeyChecking no)",
				h.host, describeKey(key), h.tilde(want[0].Filename), want[0].Line))
		}
		h.accepted = key
		return nil
	case len(plainEntries(keyErr.Want)) > 0:
		return h.changed(key, plainEntries(keyErr.Want))
	case h.mode == strictAcceptNew:
		if err := h.record(key); err != nil {
			return err
		}
		h.accepted = key
		return nil
	}
	return h.unknown(key)
}

// refused is why the last host key was refused, or nil.
func (h *hostKeys) refused() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refusal
}

func (h *hostKeys) unknown(key ssh.PublicKey) error {
	scan := fmt.Sprintf("ssh-keyscan -p %d %s", h.port, shellWord(h.host))
	if h.recordIn == "" || h.recordIn == os.DevNull {
		return fmt.Errorf("host key is not known: %s; check it and add it to a known_hosts file (%s), or use StrictHostKeyChecking=accept-new",
			describeKey(key), scan)
	}
	file := h.tilde(h.recordIn)
	return fmt.Errorf("host key is not known: %s; check it and add it to %s (%s >> %s), or use StrictHostKeyChecking=accept-new",
		describeKey(key), file, scan, shellWord(file))
}

func (h *hostKeys) changed(key ssh.PublicKey, want []knownhosts.KnownKey) error {
	// Name the entry of the same type if there is one: that is the line the
	// user will want to look at.
	w := want[0]
	for _, k := range want {
		if k.Key.Type() == plainKey(key).Type() {
			w = k
			break
		}
	}
	return fmt.Errorf("HOST KEY HAS CHANGED: the server offers %s, %s:%d has another key for it; refusing (possible man-in-the-middle)",
		describeKey(key), h.tilde(w.Filename), w.Line)
}

// record appends key for our host to recordIn, creating ~/.ssh as ssh would.
func (h *hostKeys) record(key ssh.PublicKey) error {
	name := knownhosts.Normalize(net.JoinHostPort(h.host, strconv.Itoa(h.port)))
	if h.hash {
		name = knownhosts.HashHostname(name)
	}
	if err := appendKnownHost(h.recordIn, knownhosts.Line([]string{name}, plainKey(key))); err != nil {
		return fmt.Errorf("accepting new host key %s: %w", describeKey(key), err)
	}
	return nil
}

func appendKnownHost(path, line string) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	// A file whose last line has no newline would glue our entry onto it.
	sep := ""
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			sep = "\n"
		}
	}
	_, err = f.WriteString(sep + line + "\n")
	return err
}

func (h *hostKeys) tilde(path string) string { return tildePath(h.home, path) }

// algorithms lists the host key algorithms to offer, those of keys already
// in known_hosts for this host first. The server picks the first one it has,
// so without this a host known by its ECDSA key would show its Ed25519 key
// and be taken for a changed host.
func (h *hostKeys) algorithms() []string {
	known := h.knownTypes()
	var first, rest []string
	for _, a := range defaultHostKeyAlgorithms() {
		// With an @cert-authority line, certificates stay first: it
		// vouches for them whatever the plain entries hold.
		if known[keyTypeOfAlgorithm(a)] || (h.haveCA && strings.Contains(a, "-cert-")) {
			first = append(first, a)
		} else {
			rest = append(rest, a)
		}
	}
	return append(first, rest...)
}

// knownTypes asks known_hosts which key types it holds for our host: a key
// nobody has makes knownhosts list every key it knows for the address.
func (h *hostKeys) knownTypes() map[string]bool {
	if h.db == nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return nil
	}
	address := net.JoinHostPort(h.host, strconv.Itoa(h.port))
	var keyErr *knownhosts.KeyError
	if !errors.As(h.db(address, &net.TCPAddr{}, probe), &keyErr) {
		return nil
	}
	known := make(map[string]bool)
	for _, k := range plainEntries(keyErr.Want) {
		known[k.Key.Type()] = true
	}
	return known
}

// defaultHostKeyAlgorithms is OpenSSH's order, without SHA-1 "ssh-rsa".
func defaultHostKeyAlgorithms() []string {
	return []string{
		ssh.CertAlgoED25519v01,
		ssh.CertAlgoECDSA256v01,
		ssh.CertAlgoECDSA384v01,
		ssh.CertAlgoECDSA521v01,
		ssh.CertAlgoRSASHA512v01,
		ssh.CertAlgoRSASHA256v01,
		ssh.KeyAlgoED25519,
		ssh.KeyAlgoECDSA256,
		ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512,
		ssh.KeyAlgoRSASHA256,
	}
}

// keyTypeOfAlgorithm maps a signature algorithm to the key type known_hosts
// stores; certificate algorithms map to themselves and so never match a
// plain known_hosts entry.
func keyTypeOfAlgorithm(algo string) string {
	switch algo {
	case ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512:
		return ssh.KeyAlgoRSA
	}
	return algo
}

func plainKey(key ssh.PublicKey) ssh.PublicKey {
	if cert, ok := key.(*ssh.Certificate); ok {
		return cert.Key
	}
	return key
}

// describeKey names a key as ssh does: "ED25519 SHA256:...".
func describeKey(key ssh.PublicKey) string {
	k := plainKey(key)
	label := strings.ToUpper(strings.TrimPrefix(k.Type(), "ssh-"))
	switch {
	case strings.HasPrefix(k.Type(), "ecdsa-"):
		label = "ECDSA"
	case k.Type() == ssh.KeyAlgoRSA:
		label = "RSA"
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		label += "-CERT"
	}
	return label + " " + ssh.FingerprintSHA256(k)
}

func keysEqual(a, b ssh.PublicKey) bool {
	return string(a.Marshal()) == string(b.Marshal())
}

// plainEntries drops the @cert-authority lines x/crypto lists among the
// keys it knows for a host: they hold a CA's key, not the host's, and
// their presence does not make a plain host key "changed".
func plainEntries(want []knownhosts.KnownKey) []knownhosts.KnownKey {
	var plain []knownhosts.KnownKey
	files := map[string][]string{}
	for _, k := range want {
		lines, ok := files[k.Filename]
		if !ok {
			data, _ := os.ReadFile(k.Filename)
			lines = strings.Split(string(data), "\n")
			files[k.Filename] = lines
		}
		if k.Line >= 1 && k.Line <= len(lines) && strings.HasPrefix(strings.TrimSpace(lines[k.Line-1]), "@") {
			continue
		}
		plain = append(plain, k)
	}
	return plain
}

func anyCertAuthority(files []string) bool {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "@cert-authority") {
				return true
			}
		}
	}
	return false
}
