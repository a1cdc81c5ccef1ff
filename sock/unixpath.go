package sock

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// clearSocketPath makes way for binding a unix socket at path: its
// directory is opened without following symbolic links (the path was the
// kernel's name for the socket, which has none), and a socket file left
// there is removed through that directory, never through a link someone
// put in its place. It returns the directory, for the caller to close
// once the socket is bound. Restore calls this with the process's own
// credentials, so a directory swapped in the meantime is one the process
// could write to anyway.
func clearSocketPath(path string) (int, error) {
	dirPath, base := filepath.Dir(path), filepath.Base(path)
	if !filepath.IsAbs(path) || base == "." || base == ".." || base == "/" {
		return -1, fmt.Errorf("bind %s: not an absolute path to a file", path)
	}
	dir, err := unix.Openat2(unix.AT_FDCWD, dirPath, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	if errors.Is(err, unix.ELOOP) {
		return -1, fmt.Errorf("bind %s: a symbolic link is in the path now (it had none at the checkpoint)", path)
	}
	if err != nil {
		return -1, fmt.Errorf("bind %s: directory: %w", path, err)
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(dir, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
		return dir, nil
	case err != nil:
		unix.Close(dir)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		unix.Close(dir)
		return -1, fmt.Errorf("bind %s: a file that is not a socket is in the way", path)
	}
	if err := unix.Unlinkat(dir, base, 0); err != nil {
		unix.Close(dir)
		return -1, fmt.Errorf("bind %s: remove the old socket file: %w", path, err)
	}
	return dir, nil
}
