package ckpt

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenChecked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (setfsuid)")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(secret, &st); err != nil {
		t.Fatal(err)
	}
	id := &FileID{Path: secret, Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano()}
	nobody := fsCreds{uid: 65534, gid: 65534}
	reg := expect{typ: unix.S_IFREG}

	// Root opens it; nobody, with nothing to prove it held it, cannot.
	fd, err := openChecked(nil, secret, unix.O_RDONLY, reg)
	if err != nil {
		t.Fatalf("as relocate: %v", err)
	}
	unix.Close(fd)
	if _, err := openChecked(&nobody, secret, unix.O_RDONLY, reg); !errors.Is(err, unix.EACCES) {
		t.Fatalf("as nobody: got %v, want EACCES", err)
	}
	// The very file it held (same host, same inode) is given back.
	fd, err = openChecked(&nobody, secret, unix.O_RDONLY, expect{typ: unix.S_IFREG, id: id, sameHost: true})
	if err != nil {
		t.Fatalf("as nobody, same inode: %v", err)
	}
	unix.Close(fd)
	// Through a symbolic link, or as another type: refused.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openChecked(nil, link, unix.O_RDONLY, reg); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("through a link: %v", err)
	}
	if _, err := openChecked(nil, filepath.Join(link, "x"), unix.O_RDONLY, reg); err == nil {
		t.Fatal("through a linked directory: opened")
	}
	if _, err := openChecked(nil, secret, unix.O_RDONLY, expect{typ: unix.S_IFIFO}); err == nil || !strings.Contains(err.Error(), "is a regular file now, was a FIFO") {
		t.Fatalf("a file for a FIFO: %v", err)
	}
	// Another inode at the path, on the same host: refused.
	other := *id
	other.Ino++
	if _, err := openChecked(nil, secret, unix.O_RDONLY, expect{typ: unix.S_IFREG, id: &other, sameHost: true}); err == nil || !strings.Contains(err.Error(), "another file") {
		t.Fatalf("another inode: %v", err)
	}
	// Across hosts: size and mtime.
	other = *id
	other.Size++
	if _, err := openChecked(nil, secret, unix.O_RDONLY, expect{typ: unix.S_IFREG, id: &other}); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("another size: %v", err)
	}
}
