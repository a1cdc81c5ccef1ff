package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// FDInfo is /proc/PID/fdinfo/FD.
type FDInfo struct {
	Pos   int64
	Flags uint32 // O_* flags of the open file description, and O_CLOEXEC of the descriptor
	MntID int
	Ino   uint64

	// Fields holds the single-valued "key: value" lines, including pos,
	// flags, mnt_id and ino, with the value trimmed: eventfd-count,
	// eventfd-id, eventfd-semaphore, clockid, ticks, "settime flags",
	// it_value, it_interval, sigmask, Pid, NSpid, ...
	Fields map[string]string
	// Lines holds all other lines verbatim, in order: the repeated records
	// ("tfd:" of epoll, "inotify wd:", "fanotify ...", "lock:"), a second
	// occurrence of a key, and lines without a colon.
	Lines []string
}

// recordPrefixes start the lines of which a file can have many.
var recordPrefixes = []string{"tfd:", "inotify ", "fanotify ", "lock:"}

// ParseFDInfo parses /proc/PID/fdinfo/FD. The pos and flags lines are
// required; mnt_id and ino are optional (older kernels lack ino).
func ParseFDInfo(b []byte) (FDInfo, error) {
	fi := FDInfo{Fields: map[string]string{}}
	var seenPos, seenFlags bool
	for n, line := range lines(b) {
		if len(line) == 0 {
			continue
		}
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok || isRecord(line) {
			fi.Lines = append(fi.Lines, string(line))
			continue
		}
		if _, dup := fi.Fields[string(key)]; dup {
			fi.Lines = append(fi.Lines, string(line))
			continue
		}
		v := trimSpace(val)
		fi.Fields[string(key)] = string(v)
		var p numParser
		switch string(key) {
		case "pos":
			fi.Pos, seenPos = p.int64("pos", v), true
		case "flags":
			fi.Flags, seenFlags = uint32(p.uint("flags", v, 8, 32)), true
		case "mnt_id":
			fi.MntID = p.int("mnt_id", v)
		case "ino":
			fi.Ino = p.u64("ino", v)
		}
		if p.err != nil {
			return FDInfo{}, parseErr("fdinfo", n, line, p.err)
		}
	}
	switch {
	case !seenPos:
		return FDInfo{}, parseErr("fdinfo", 0, nil, errors.New("no pos line"))
	case !seenFlags:
		return FDInfo{}, parseErr("fdinfo", 0, nil, errors.New("no flags line"))
	}
	return fi, nil
}

func isRecord(line []byte) bool {
	for _, p := range recordPrefixes {
		if bytes.HasPrefix(line, []byte(p)) {
			return true
		}
	}
	return false
}

// EpollItem is one watch of an epoll file:
//
//	tfd:        5 events:       19 data:                5  pos:0 ino:8e3 sdev:f
type EpollItem struct {
	TFD    int    // the watched descriptor, in the process that added it
	Events uint32 // EPOLL* event mask, including EPOLLET, EPOLLONESHOT, ...
	Data   uint64
	Pos    int64  // file position of the watched file
	Ino    uint64 // inode of the watched file
	SDev   uint64 // the kernel's s_dev of its filesystem: major<<20 | minor
}

// EpollItems parses the "tfd:" lines of an epoll file's fdinfo.
func (f FDInfo) EpollItems() ([]EpollItem, error) {
	var out []EpollItem
	for _, line := range f.Lines {
		if !strings.HasPrefix(line, "tfd:") {
			continue
		}
		kv, err := parseRecord([]byte(line))
		if err != nil {
			return nil, parseErr("fdinfo", 0, []byte(line), err)
		}
		var p numParser
		var it EpollItem
		it.TFD = p.int("tfd", kv.need(&p, "tfd"))
		it.Events = p.hex32("events", kv.need(&p, "events"))
		it.Data = p.hex64("data", kv.need(&p, "data"))
		if v, ok := kv.get("pos"); ok {
			it.Pos = p.int64("pos", v)
		}
		if v, ok := kv.get("ino"); ok {
			it.Ino = p.hex64("ino", v)
		}
		if v, ok := kv.get("sdev"); ok {
			it.SDev = p.hex64("sdev", v)
		}
		if p.err != nil {
			return nil, parseErr("fdinfo", 0, []byte(line), p.err)
		}
		out = append(out, it)
	}
	return out, nil
}

// InotifyWatch is one watch of an inotify file:
//
//	inotify wd:2 ino:13 sdev:fe00000 mask:80000002 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:1300000000000000
//
// The file handle, for open_by_handle_at(2), is absent when the filesystem
// cannot export one.
type InotifyWatch struct {
	WD           int
	Ino          uint64
	SDev         uint64 // the kernel's s_dev: major<<20 | minor
	Mask         uint32 // IN_* mask as given to inotify_add_watch
	IgnoredMask  uint32
	FHandleBytes int
	FHandleType  int
	FHandle      []byte
}

// InotifyWatches parses the "inotify wd:" lines of an inotify file's fdinfo.
// All numbers on these lines are hexadecimal, the watch descriptor too.
func (f FDInfo) InotifyWatches() ([]InotifyWatch, error) {
	var out []InotifyWatch
	for _, line := range f.Lines {
		if !strings.HasPrefix(line, "inotify ") {
			continue
		}
		kv, err := parseRecord([]byte(line))
		if err != nil {
			return nil, parseErr("fdinfo", 0, []byte(line), err)
		}
		var p numParser
		var w InotifyWatch
		w.WD = int(p.hex32("wd", kv.need(&p, "wd")))
		w.Ino = p.hex64("ino", kv.need(&p, "ino"))
		w.SDev = p.hex64("sdev", kv.need(&p, "sdev"))
		w.Mask = p.hex32("mask", kv.need(&p, "mask"))
		if v, ok := kv.get("ignored_mask"); ok {
			w.IgnoredMask = p.hex32("ignored_mask", v)
		}
		if v, ok := kv.get("fhandle-bytes"); ok {
			w.FHandleBytes = int(p.hex32("fhandle-bytes", v))
			w.FHandleType = int(int32(p.hex32("fhandle-type", kv.need(&p, "fhandle-type"))))
			w.FHandle = p.hexBytes("f_handle", kv.need(&p, "f_handle"))
			if p.err == nil && len(w.FHandle) != w.FHandleBytes {
				p.err = fmt.Errorf("f_handle has %d bytes, fhandle-bytes says %d", len(w.FHandle), w.FHandleBytes)
			}
		}
		if p.err != nil {
			return nil, parseErr("fdinfo", 0, []byte(line), p.err)
		}
		out = append(out, w)
	}
	return out, nil
}

// Eventfd is the state of an eventfd.
type Eventfd struct {
	Count     uint64
	ID        int
	Semaphore bool
}

// Eventfd parses the eventfd-count (hexadecimal), eventfd-id and
// eventfd-semaphore lines.
func (f FDInfo) Eventfd() (Eventfd, error) {
	var p numParser
	var e Eventfd
	e.Count = p.hex64("eventfd-count", f.need(&p, "eventfd-count"))
	if v, ok := f.Fields["eventfd-id"]; ok {
		e.ID = p.int("eventfd-id", []byte(v))
	}
	if v, ok := f.Fields["eventfd-semaphore"]; ok {
		e.Semaphore = p.bool("eventfd-semaphore", []byte(v))
	}
	if p.err != nil {
		return Eventfd{}, parseErr("fdinfo", 0, nil, p.err)
	}
	return e, nil
}

// Timespec is a time as fdinfo prints it: "(sec, nsec)".
type Timespec struct{ Sec, Nsec uint64 }

// Timerfd is the state of a timerfd. Value is the time left until the next
// expiry, relative even for an absolute timer.
type Timerfd struct {
	ClockID      int
	Ticks        uint64 // expirations not yet read
	SettimeFlags uint32 // TFD_TIMER_* of the last timerfd_settime
	Value        Timespec
	Interval     Timespec
}

// Timerfd parses the clockid, ticks, "settime flags" (octal), it_value and
// it_interval lines.
func (f FDInfo) Timerfd() (Timerfd, error) {
	var p numParser
	var t Timerfd
	t.ClockID = p.int("clockid", f.need(&p, "clockid"))
	t.Ticks = p.u64("ticks", f.need(&p, "ticks"))
	t.SettimeFlags = uint32(p.uint("settime flags", f.need(&p, "settime flags"), 8, 32))
	t.Value = p.timespec("it_value", f.need(&p, "it_value"))
	t.Interval = p.timespec("it_interval", f.need(&p, "it_interval"))
	if p.err != nil {
		return Timerfd{}, parseErr("fdinfo", 0, nil, p.err)
	}
	return t, nil
}

// Signalfd parses the sigmask line of a signalfd: bit n-1 stands for signal n.
func (f FDInfo) Signalfd() (uint64, error) {
	var p numParser
	m := p.hex64("sigmask", f.need(&p, "sigmask"))
	if p.err != nil {
		return 0, parseErr("fdinfo", 0, nil, p.err)
	}
	return m, nil
}

// need returns the field key, or records its absence.
func (f FDInfo) need(p *numParser, key string) []byte {
	v, ok := f.Fields[key]
	if !ok && p.err == nil {
		p.err = fmt.Errorf("no %s line", key)
	}
	return []byte(v)
}

// timespec parses "(sec, nsec)".
func (p *numParser) timespec(what string, v []byte) Timespec {
	in, ok := bytes.CutPrefix(v, []byte("("))
	if ok {
		in, ok = bytes.CutSuffix(in, []byte(")"))
	}
	sec, nsec, ok2 := bytes.Cut(in, []byte(","))
	if !ok || !ok2 {
		p.fail(what, v)
		return Timespec{}
	}
	return Timespec{Sec: p.u64(what, trimSpace(sec)), Nsec: p.u64(what, trimSpace(nsec))}
}

// hexBytes parses a run of two-digit hexadecimal bytes.
func (p *numParser) hexBytes(what string, v []byte) []byte {
	if len(v)%2 != 0 {
		p.fail(what, v)
		return nil
	}
	out := make([]byte, len(v)/2)
	for i := range out {
		out[i] = byte(p.uint(what, v[2*i:2*i+2], 16, 8))
	}
	return out
}

// record holds the key:value pairs of one record line.
type record []struct{ k, v []byte }

// parseRecord splits a record line such as
//
//	tfd:        5 events:       19 data:                5  pos:0 ino:8e3 sdev:f
//	inotify wd:2 ino:13 sdev:fe00000 mask:80000002 ignored_mask:0
//
// into pairs. A token "key:" takes the next token as its value, a token
// "key:value" is split at its colon, and a bare word may only come first.
// Absent keys are the callers' business.
func parseRecord(line []byte) (record, error) {
	var r record
	first := true
	for tok, rest := nextField(line); len(tok) > 0; tok, rest = nextField(rest) {
		k, v, ok := bytes.Cut(tok, []byte(":"))
		switch {
		case !ok && first:
		case !ok:
			return nil, errors.New("stray word " + quote(tok))
		case len(k) == 0:
			return nil, errors.New("empty key")
		case len(v) == 0:
			v, rest = nextField(rest) // empty at the end of the line
			fallthrough
		default:
			r = append(r, struct{ k, v []byte }{k, v})
		}
		first = false
	}
	return r, nil
}

func (r record) get(key string) ([]byte, bool) {
	for _, kv := range r {
		if string(kv.k) == key {
			return kv.v, true
		}
	}
	return nil, false
}

func (r record) need(p *numParser, key string) []byte {
	v, ok := r.get(key)
	if !ok && p.err == nil {
		p.err = fmt.Errorf("no %s", key)
	}
	return v
}
