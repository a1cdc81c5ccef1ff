package cmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// imageOutput is where dump writes an image: a new file next to the final
// path, made with O_CREAT|O_EXCL and mode 0600, renamed into place once the
// image is complete and synced (before the process is killed, so that a
// failed rename leaves the process running instead of losing the only
// copy), or stdout with -o -.
type imageOutput struct {
	w     io.Writer
	file  *os.File // the temporary file; nil for stdout
	path  string   // the final path
	done  bool     // renamed into place
	warns []string
}

// openImageOutput refuses a path that exists and is not a regular file:
// a FIFO or a device would hand the memory image to whoever reads it, and
// a symbolic link points who knows where.
func openImageOutput(path string) (*imageOutput, error) {
	if path == "-" {
		o := &imageOutput{w: os.Stdout}
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return nil, usageError{errors.New("refusing to write an image to a terminal; redirect stdout or use -o FILE")}
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(os.Stdout.Fd()), &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o077 != 0 {
			o.warns = append(o.warns, fmt.Sprintf("stdout is a file with mode %#o: others can read the image, which holds the process's memory; chmod 600 it", st.Mode&0o777))
		}
		return o, nil
	}
	if fi, err := os.Lstat(path); err == nil {
		switch {
		case fi.IsDir():
			return nil, expectedError{fmt.Errorf("%s is a directory", path)}
		case fi.Mode()&fs.ModeSymlink != 0:
			return nil, expectedError{fmt.Errorf("%s is a symbolic link; dump writes only to a new regular file, or - for stdout", path)}
		case !fi.Mode().IsRegular():
			return nil, expectedError{fmt.Errorf("%s exists and is %s; dump writes only to a new regular file, or - for stdout (-o - > %s)", path, describeMode(fi.Mode()), path)}
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-")
	if err != nil {
		return nil, expectedError{fmt.Errorf("create image: %w", err)}
	}
	o := &imageOutput{w: f, file: f, path: path}
	if err := f.Chmod(0o600); err != nil {
		o.warns = append(o.warns, fmt.Sprintf("cannot make %s mode 0600 (%v): others may read the image, which holds the process's memory", path, err))
	} else if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		o.warns = append(o.warns, fmt.Sprintf("%s is mode %#o on this file system, not 0600: others may read the image, which holds the process's memory", path, fi.Mode().Perm()))
	}
	return o, nil
}

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// commit makes the complete image durable under its final name: sync the
// file, rename it into place, sync the directory. Dump calls it before
// anything irreversible.
func (o *imageOutput) commit() error {
	if o.file == nil || o.done {
		return nil
	}
	if err := o.file.Sync(); err != nil {
		return fmt.Errorf("write image %s: %w", o.path, err)
	}
	if err := o.file.Close(); err != nil {
		return fmt.Errorf("write image %s: %w", o.path, err)
	}
	if err := os.Rename(o.file.Name(), o.path); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	o.done = true
	if err := syncDir(filepath.Dir(o.path)); err != nil {
		return fmt.Errorf("write image %s: %w", o.path, err)
	}
	return nil
}

// finish ends the output: on success the image is committed (if dump did
// not already), on failure a partial image is removed. An image already in
// place stays, whatever happened after.
func (o *imageOutput) finish(ok bool) error {
	if o.file == nil || o.done {
		return nil
	}
	if ok {
		err := o.commit()
		if !o.done {
			o.file.Close()
			os.Remove(o.file.Name())
		}
		return err
	}
	o.file.Close()
	os.Remove(o.file.Name())
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}
