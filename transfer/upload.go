package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// The target runs the very same binary as the source: the protocol and the
// image format are then the same by construction. A relocate already
// installed there is used when it is byte-identical (same SHA-256);
// otherwise the source uploads itself to a private directory, and the
// receiving process deletes its own file as soon as it runs, so that
// nothing is left behind whatever happens next.

// SelfID identifies this binary: "sha256:" and the hash of its file.
var SelfID = sync.OnceValues(func() (string, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
})

// remoteBinary is the relocate that runs on the target.
type remoteBinary struct {
	path     string
	dir      string // the private directory of an upload
	uploaded bool
}

// RemoveSelfFlag makes `relocate receive` delete its own uploaded file.
const RemoveSelfFlag = "--remove-self"

func (b *remoteBinary) receiveCommand() string {
	cmd := "exec " + ShellQuote(b.path) + " receive"
	if b.uploaded {
		cmd += " " + RemoveSelfFlag
	}
	return cmd
}

// cleanup removes an upload whose receiver never started (it removes
// itself once it runs); best effort.
func (b *remoteBinary) cleanup(c *Client) {
	if b.dir == "" {
		return
	}
	if s, err := c.NewSession(); err == nil {
		_ = s.Run("rm -rf " + ShellQuote(b.dir))
		s.Close()
	}
}

// prepareRemote finds or uploads relocate on the target.
func prepareRemote(ctx context.Context, c *Client) (*remoteBinary, error) {
	id, err := SelfID()
	if err != nil {
		return nil, fmt.Errorf("read own binary: %w", err)
	}
	out, _ := run(c, "relocate version --id 2>/dev/null", nil)
	if strings.TrimSpace(out) == id {
		return &remoteBinary{path: "relocate"}, nil
	}
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	defer self.Close()
	// mktemp -d makes a 0700 directory; the binary is checked by running
	// it, which also catches a noexec /tmp.
	script := `umask 077; d=$(mktemp -d "${TMPDIR:-/tmp}/relocate.XXXXXXXX") || exit 1
cat > "$d/relocate" && chmod 700 "$d/relocate" || { rm -rf "$d"; exit 1; }
echo "$d"; "$d/relocate" version --id || { rm -rf "$d"; exit 1; }`
	out, err = run(c, script, self)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 {
		if err == nil {
			err = fmt.Errorf("unexpected answer %q", truncate(out, 300))
		}
		return nil, fmt.Errorf("upload relocate: %w", err)
	}
	dir := lines[0]
	b := &remoteBinary{path: dir + "/relocate", dir: dir, uploaded: true}
	if lines[1] != id {
		b.cleanup(c)
		return nil, fmt.Errorf("upload relocate: the copy on the target does not run as expected (%s)", lastLine(out))
	}
	return b, nil
}

// run runs a shell command on the target and returns its stdout, then
// its stderr.
func run(c *Client, cmd string, stdin io.Reader) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	// Two buffers: the session copies stdout and stderr concurrently.
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errOut, stdin
	err = s.Run(cmd)
	return out.String() + errOut.String(), err
}
