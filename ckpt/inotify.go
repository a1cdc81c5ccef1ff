package ckpt

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/proc"
)

// InotifyWatch is one watch of an inotify file, with the path its inode
// had at dump time.
type InotifyWatch struct {
	WD   int    `json:"wd"`
	Mask uint32 `json:"mask"`
	Path string `json:"path"`
}

// inotifyUserBits are the mask bits inotify_add_watch(2) accepts back.
const inotifyUserBits = unix.IN_ALL_EVENTS | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW |
	unix.IN_EXCL_UNLINK | unix.IN_ONESHOT

// inotifyWatches resolves each watch's file handle to a path through a
// mount of its file system (open_by_handle_at needs CAP_DAC_READ_SEARCH).
func inotifyWatches(ws []proc.InotifyWatch) ([]InotifyWatch, error) {
	mounts, err := mountsByDev()
	if err != nil {
		return nil, err
	}
	var out []InotifyWatch
	for _, w := range ws {
		major, minor := uint32(w.SDev>>20), uint32(w.SDev&0xfffff)
		mnt, ok := mounts[[2]uint32{major, minor}]
		if !ok || w.FHandle == nil {
			return nil, fmt.Errorf("watch %d: no mount found for device %d:%d: %w", w.WD, major, minor, ErrUnsupported)
		}
		path, err := pathByHandle(mnt, w)
		if err != nil {
			return nil, fmt.Errorf("watch %d: %w", w.WD, err)
		}
		out = append(out, InotifyWatch{WD: w.WD, Mask: w.Mask & inotifyUserBits, Path: path})
	}
	slices.SortFunc(out, func(a, b InotifyWatch) int { return a.WD - b.WD })
	return out, nil
}

func pathByHandle(mnt string, w proc.InotifyWatch) (string, error) {
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(int32(w.FHandleType), w.FHandle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at: %w", err)
	}
	defer unix.Close(fd)
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(path, " (deleted)") {
		return "", fmt.Errorf("watches deleted %s: %w", strings.TrimSuffix(path, " (deleted)"), ErrUnsupported)
	}
	return path, nil
}

// mountsByDev maps device numbers to one mount point of each, from
// /proc/self/mountinfo.
func mountsByDev() (map[[2]uint32]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[[2]uint32]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		a, err1 := strconv.ParseUint(maj, 10, 32)
		b, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		key := [2]uint32{uint32(a), uint32(b)}
		if _, seen := out[key]; !seen {
			out[key] = unescapeMount(fields[4])
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// newInotify recreates an inotify file with the same watch descriptors:
// watches are added in wd order, and numbers in between are used up by a
// throw-away watch on a private directory (wds are allocated cyclically).
func newInotify(watches []InotifyWatch, flags int) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | flags&unix.O_NONBLOCK)
	if err != nil {
		return -1, err
	}
	var spare string
	defer func() {
		if spare != "" {
			os.Remove(spare)
		}
	}()
	next := 1
	for _, w := range watches {
		for next < w.WD {
			if spare == "" {
				if spare, err = os.MkdirTemp("", ".relocate-inotify-"); err != nil {
					unix.Close(fd)
					return -1, err
				}
			}
			wd, err := unix.InotifyAddWatch(fd, spare, unix.IN_ATTRIB)
			if err == nil {
				_, err = unix.InotifyRmWatch(fd, uint32(wd))
			}
			if err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("skip watch number %d: %w", next, err)
			}
			next = wd + 1
		}
		wd, err := unix.InotifyAddWatch(fd, w.Path, w.Mask)
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("watch %s: %w", w.Path, err)
		}
		if wd != w.WD {
			unix.Close(fd)
			return -1, fmt.Errorf("watch %s got number %d, not %d", w.Path, wd, w.WD)
		}
		next = wd + 1
	}
	return fd, nil
}
