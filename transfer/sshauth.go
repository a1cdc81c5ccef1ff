package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// sshKeyring is the keys Dial offers, in the order it offers them, and what to
// tell the user about them if the server takes none.
type sshKeyring struct {
	signers []ssh.Signer
	tried   []string // "-i /x/key", "ssh-agent (2 keys)", "~/.ssh/id_ed25519"
	notes   []string // keys we could not offer, and why
	agent   net.Conn // nil when no agent was reached
	asked   atomic.Bool
	pause   func(paused bool) // stops the handshake's clock while a passphrase is typed
}

// sshKeyFile is one private key file, possibly unusable without a passphrase.
type sshKeyFile struct {
	path   string
	label  string
	signer ssh.Signer    // nil when passphrase-protected
	public ssh.PublicKey // known for protected keys too when a public half is found
	data   []byte        // the encrypted file, for a passphrase typed later
}

// loadSSHKeyring gathers the keys in ssh's order: -i, then the agent, then
// IdentityFile, then the default files when no IdentityFile is configured.
func loadSSHKeyring(t *sshTarget, o SSHOptions) (*sshKeyring, error) {
	k := &sshKeyring{}
	cmd, err := k.readFiles(t.cmdIdentities, func(p string) string { return "-i " + p }, missingFails)
	if err != nil {
		return nil, err
	}
	cfg, _ := k.readFiles(t.cfgIdentities, homeLabel(t.home), missingNoted)
	var defaults []sshKeyFile
	if len(t.cfgIdentities) == 0 {
		defaults, _ = k.readFiles(defaultIdentities(t.home), homeLabel(t.home), missingSkipped)
	}
	files := append(append(append([]sshKeyFile(nil), cmd...), cfg...), defaults...)

	seen := make(map[string]bool)
	k.addFiles(cmd, seen)
	k.addAgent(t, files, seen)
	k.addFiles(cfg, seen)
	k.addFiles(defaults, seen)
	if o.Passphrase != nil && !t.batch {
		k.addProtected(files, seen, o.Passphrase)
	}
	k.notePassphrases(files, seen)
	k.addCertificates(t, files)
	return k, nil
}

func defaultIdentities(home string) []string {
	var paths []string
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		paths = append(paths, filepath.Join(home, ".ssh", name))
	}
	return paths
}

func homeLabel(home string) func(string) string {
	return func(p string) string { return tildePath(home, p) }
}

// tildePath shortens a path under home to "~/...", as people write it.
func tildePath(home, p string) string {
	if home == "" {
		return p
	}
	if rest, ok := strings.CutPrefix(p, home+"/"); ok {
		return "~/" + rest
	}
	return p
}

// onMissing says what a key file that cannot be read means.
type onMissing int

const (
	missingFails   onMissing = iota // -i: the user named it on the command line
	missingNoted                    // IdentityFile: ssh goes on, but say so if login fails
	missingSkipped                  // ~/.ssh/id_*: most people have only one of them
)

// readFiles reads key files; only with missingFails does it return an error.
func (k *sshKeyring) readFiles(paths []string, label func(string) string, missing onMissing) ([]sshKeyFile, error) {
	var files []sshKeyFile
	for _, p := range paths {
		f, err := readKeyFile(p, label(p))
		switch {
		case err == nil:
			files = append(files, f)
		case missing == missingFails:
			return nil, err
		case errors.Is(err, fs.ErrNotExist) && missing == missingSkipped:
		case errors.Is(err, fs.ErrNotExist):
			k.notes = append(k.notes, label(p)+" does not exist")
		default:
			k.notes = append(k.notes, err.Error())
		}
	}
	return files, nil
}

func readKeyFile(path, label string) (sshKeyFile, error) {
	f := sshKeyFile{path: path, label: label}
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("%s: %w", label, unwrapPathError(err))
	}
	signer, err := ssh.ParsePrivateKey(data)
	var protected *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &protected):
		// We never prompt; the agent may hold it, which the public half lets
		// us see.
		f.public = protected.PublicKey
		if f.public == nil {
			f.public = readPublicHalf(path + ".pub")
		}
		f.data = data
		return f, nil
	case err != nil:
		return f, fmt.Errorf("%s: %w", label, err)
	}
	f.signer, f.public = signer, signer.PublicKey()
	return f, nil
}

func readPublicHalf(path string) ssh.PublicKey {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil
	}
	return key
}

func (k *sshKeyring) addFiles(files []sshKeyFile, seen map[string]bool) {
	for _, f := range files {
		if f.signer == nil || seen[string(f.public.Marshal())] {
			continue
		}
		seen[string(f.public.Marshal())] = true
		k.signers = append(k.signers, f.signer)
		k.tried = append(k.tried, f.label)
	}
}

// addAgent offers the agent's keys; with IdentitiesOnly only those that
// match one of our key files, which is how ssh uses an agent for a key whose
// file is passphrase-protected.
func (k *sshKeyring) addAgent(t *sshTarget, files []sshKeyFile, seen map[string]bool) {
	if t.agentSocket == "" {
		return
	}
	conn, err := net.DialTimeout("unix", t.agentSocket, t.timeout)
	if err != nil {
		k.notes = append(k.notes, fmt.Sprintf("ssh-agent at %s is unreachable: %v", t.agentSocket, unwrapOpError(err)))
		return
	}
	k.agent = conn
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		k.notes = append(k.notes, fmt.Sprintf("ssh-agent at %s: %v", t.agentSocket, err))
		return
	}
	allowed := make(map[string]bool)
	for _, f := range files {
		if f.public != nil {
			allowed[string(f.public.Marshal())] = true
		}
	}
	n := 0
	for _, s := range signers {
		blob := string(s.PublicKey().Marshal())
		if seen[blob] || (t.identitiesOnly && !allowed[blob]) {
			continue
		}
		seen[blob] = true
		k.signers = append(k.signers, s)
		n++
	}
	k.tried = append(k.tried, "ssh-agent ("+countKeys(n)+")")
}

// notePassphrases tells about protected key files the agent did not cover.
func (k *sshKeyring) notePassphrases(files []sshKeyFile, seen map[string]bool) {
	for _, f := range files {
		if f.signer != nil || (f.public != nil && seen[string(f.public.Marshal())]) {
			continue
		}
		k.notes = append(k.notes, f.label+" is passphrase-protected; load it into ssh-agent")
	}
}

func countKeys(n int) string {
	if n == 1 {
		return "1 key"
	}
	return strconv.Itoa(n) + " keys"
}

// offer is the ssh.PublicKeysCallback. x/crypto tries one "publickey"
// method only once, so every key must come from this single callback.
func (k *sshKeyring) offer() ([]ssh.Signer, error) {
	k.asked.Store(true)
	return k.signers, nil
}

// close hangs up on the agent; it is needed only during authentication.
func (k *sshKeyring) close() {
	if k.agent != nil {
		k.agent.Close()
	}
}

// failure explains a refused login: what was offered and what was not.
func (k *sshKeyring) failure(cause error) error {
	return &authError{tried: k.tried, notes: k.notes, cause: cause}
}

type authError struct {
	tried []string
	notes []string
	cause error // from x/crypto
}

func (e *authError) Error() string {
	msg := "authentication failed"
	if len(e.tried) == 0 {
		msg += ": no key to offer (give -i KEY, or start ssh-agent)"
	} else {
		msg += " (tried: " + strings.Join(e.tried, ", ") + ")"
	}
	for _, n := range e.notes {
		msg += "; " + n
	}
	// A server may hang up with its own reason ("Too many authentication
	// failures"); x/crypto's "unable to authenticate" says nothing more.
	if e.cause != nil && !strings.Contains(e.cause.Error(), "unable to authenticate") {
		cause := e.cause
		if inner := errors.Unwrap(cause); inner != nil {
			cause = inner
		}
		msg += "; " + cause.Error()
	}
	return msg
}

func (e *authError) Unwrap() error { return e.cause }
