package transfer

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Certificates and passphrases: what ssh does with a key beyond offering it.

// addCertificates puts, before each key offered, the certificates for it:
// those of CertificateFile, and KEY-cert.pub beside each key file, as ssh
// loads them. A certificate whose key we do not hold is noted.
func (k *sshKeyring) addCertificates(t *sshTarget, files []sshKeyFile) {
	var certs []*ssh.Certificate
	seen := map[string]bool{}
	add := func(path string, explicit bool) {
		c, err := readCertificate(path)
		switch {
		case err == nil:
			if !seen[string(c.Marshal())] {
				seen[string(c.Marshal())] = true
				certs = append(certs, c)
			}
		case explicit || !errors.Is(err, fs.ErrNotExist):
			k.notes = append(k.notes, fmt.Sprintf("certificate %s: %v", tildePath(t.home, path), unwrapPathError(err)))
		}
	}
	for _, p := range t.certificates {
		add(p, true)
	}
	for _, f := range files {
		add(f.path+"-cert.pub", false)
	}
	if len(certs) == 0 {
		return
	}
	used := make([]bool, len(certs))
	var signers []ssh.Signer
	var tried []string
	for _, s := range k.signers {
		for j, c := range certs {
			if !bytes.Equal(c.Key.Marshal(), s.PublicKey().Marshal()) {
				continue
			}
			cs, err := ssh.NewCertSigner(c, s)
			if err != nil {
				k.notes = append(k.notes, fmt.Sprintf("certificate %q: %v", c.KeyId, err))
				continue
			}
			used[j] = true
			signers = append(signers, cs)
			tried = append(tried, fmt.Sprintf("certificate %q", c.KeyId))
		}
		signers = append(signers, s)
	}
	for j, c := range certs {
		if !used[j] {
			k.notes = append(k.notes, fmt.Sprintf("certificate %q: no private key for it", c.KeyId))
		}
	}
	k.signers = signers
	k.tried = append(tried, k.tried...)
}

func readCertificate(path string) (*ssh.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, err
	}
	c, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("a %s key, not a certificate", key.Type())
	}
	if c.CertType != ssh.UserCert {
		return nil, errors.New("a host certificate, not a user certificate")
	}
	now := uint64(time.Now().Unix())
	if c.ValidBefore != ssh.CertTimeInfinity && now >= c.ValidBefore {
		return nil, fmt.Errorf("expired %s", time.Unix(int64(c.ValidBefore), 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// addProtected offers the passphrase-protected keys the agent does not
// hold, asking for the passphrase only once the server accepts the key, as
// ssh does (x/crypto asks the server about a public key before signing).
func (k *sshKeyring) addProtected(files []sshKeyFile, seen map[string]bool, ask func(string) ([]byte, error)) {
	for _, f := range files {
		if f.signer != nil || f.public == nil || f.data == nil || seen[string(f.public.Marshal())] {
			continue
		}
		seen[string(f.public.Marshal())] = true
		k.signers = append(k.signers, &lazySigner{file: f, ask: ask, ring: k})
		k.tried = append(k.tried, f.label)
	}
}

// maxPassphraseTries is ssh's NumberOfPasswordPrompts default.
const maxPassphraseTries = 3

// lazySigner decrypts its key when first asked to sign.
type lazySigner struct {
	file   sshKeyFile
	ask    func(string) ([]byte, error)
	ring   *sshKeyring
	once   sync.Once
	signer ssh.AlgorithmSigner
	err    error
}

func (l *lazySigner) PublicKey() ssh.PublicKey { return l.file.public }

func (l *lazySigner) unlock() (ssh.AlgorithmSigner, error) {
	l.once.Do(func() {
		if l.ring.pause != nil {
			l.ring.pause(true)
			defer l.ring.pause(false)
		}
		for try := 0; try < maxPassphraseTries; try++ {
			pass, err := l.ask(fmt.Sprintf("Enter passphrase for key '%s': ", l.file.label))
			if err != nil {
				l.err = fmt.Errorf("%s: passphrase: %w", l.file.label, err)
				return
			}
			s, err := ssh.ParsePrivateKeyWithPassphrase(l.file.data, pass)
			if errors.Is(err, x509.IncorrectPasswordError) {
				l.err = fmt.Errorf("%s: wrong passphrase", l.file.label)
				continue
			}
			if err != nil {
				l.err = fmt.Errorf("%s: %w", l.file.label, err)
				return
			}
			as, ok := s.(ssh.AlgorithmSigner)
			if !ok {
				l.err = fmt.Errorf("%s: key type %s cannot sign here", l.file.label, s.PublicKey().Type())
				return
			}
			l.signer, l.err = as, nil
			return
		}
	})
	if l.err != nil {
		l.ring.notes = append(l.ring.notes, l.err.Error())
	}
	return l.signer, l.err
}

func (l *lazySigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	s, err := l.unlock()
	if err != nil {
		return nil, err
	}
	return s.Sign(rand, data)
}

func (l *lazySigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	s, err := l.unlock()
	if err != nil {
		return nil, err
	}
	return s.SignWithAlgorithm(rand, data, algorithm)
}

// Algorithms are those x/crypto would use for a key of this type.
func (l *lazySigner) Algorithms() []string {
	if l.file.public.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{l.file.public.Type()}
}
