package proc

import (
	"reflect"
	"strings"
	"testing"
)

// O_* and other flags from include/uapi, as fdinfo prints them.
const (
	oRDWR     = 0o2
	oWRONLY   = 0o1
	oAPPEND   = 0o2000
	oNONBLOCK = 0o4000
	oLARGE    = 0o100000
	oCLOEXEC  = 0o2000000

	epollIN      = 0x1
	epollOUT     = 0x4
	epollERR     = 0x8
	epollHUP     = 0x10
	epollRDHUP   = 0x2000
	epollONESHOT = 1 << 30
	epollET      = 1 << 31

	inModify  = 0x2
	inMovedTo = 0x80
	inCreate  = 0x100
	inDelete  = 0x200
	inOneshot = 0x80000000
)

func parseFixtureFDInfo(t *testing.T, name string) FDInfo {
	t.Helper()
	fi, err := ParseFDInfo(fixture(t, "fdinfo_"+name))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Fields["pos"] == "" || fi.Fields["flags"] == "" || fi.MntID < 0 || fi.Ino == 0 {
		t.Errorf("%s: common lines %+v", name, fi)
	}
	return fi
}

func TestParseFDInfoReal(t *testing.T) {
	// The kernel sets O_LARGEFILE on files opened by a 64-bit process.
	for _, tc := range []struct {
		name   string
		flags  uint32
		pos    int64
		fields []string
		lines  int
	}{
		{"pipe", 0, 0, nil, 0},
		{"memfd", oLARGE | oRDWR, 0, nil, 0},
		{"eventfd", oCLOEXEC | oNONBLOCK | oRDWR, 0, []string{"eventfd-count", "eventfd-id", "eventfd-semaphore"}, 0},
		{"epoll", oCLOEXEC | oRDWR, 0, nil, 3},
		{"inotify", oNONBLOCK, 0, nil, 2},
		{"fanotify", oNONBLOCK | oRDWR, 0, nil, 3},
		{"timerfd", oCLOEXEC | oRDWR, 0, []string{"clockid", "ticks", "settime flags", "it_value", "it_interval"}, 0},
		{"timerfd_abs", oRDWR, 0, []string{"clockid", "ticks", "settime flags", "it_value", "it_interval"}, 0},
		{"signalfd", oNONBLOCK | oRDWR, 0, []string{"sigmask"}, 0},
		{"pidfd", oCLOEXEC | oRDWR, 0, []string{"Pid", "NSpid"}, 0},
		{"flock", oLARGE | oAPPEND | oRDWR, 5, nil, 1},
		{"posixlock", oLARGE, 3, nil, 1},
	} {
		fi := parseFixtureFDInfo(t, tc.name)
		if fi.Flags != tc.flags || fi.Pos != tc.pos || len(fi.Lines) != tc.lines {
			t.Errorf("%s: flags %#o pos %d lines %q", tc.name, fi.Flags, fi.Pos, fi.Lines)
		}
		if len(fi.Fields) != 4+len(tc.fields) {
			t.Errorf("%s: fields %q", tc.name, fi.Fields)
		}
		for _, k := range tc.fields {
			if _, ok := fi.Fields[k]; !ok {
				t.Errorf("%s: no field %q in %q", tc.name, k, fi.Fields)
			}
		}
	}
	if fi := parseFixtureFDInfo(t, "flock"); !strings.HasPrefix(fi.Lines[0], "lock:\t1: FLOCK  ADVISORY  WRITE ") {
		t.Errorf("flock line %q", fi.Lines[0])
	}
	if fi := parseFixtureFDInfo(t, "fanotify"); !strings.HasPrefix(fi.Lines[0], "fanotify flags:") {
		t.Errorf("fanotify lines %q", fi.Lines)
	}
}

func TestEpollItemsReal(t *testing.T) {
	fi := parseFixtureFDInfo(t, "epoll")
	items, err := fi.EpollItems()
	if err != nil {
		t.Fatal(err)
	}
	// workload.c watches an eventfd and both ends of a pipe, whose data is
	// their descriptor.
	if len(items) != 3 {
		t.Fatalf("items %+v", items)
	}
	var eventfd, pipeIn, pipeOut EpollItem
	for _, it := range items {
		if it.Ino == 0 || it.SDev == 0 || it.Pos != 0 {
			t.Errorf("item %+v", it)
		}
		switch {
		case it.Events&epollET != 0:
			eventfd = it
		case it.Events&epollOUT != 0:
			pipeOut = it
		default:
			pipeIn = it
		}
	}
	if eventfd.Data != 0xdeadbeefcafe || eventfd.Events != epollET|epollIN|epollERR|epollHUP {
		t.Errorf("eventfd item %+v", eventfd)
	}
	if pipeOut.Data != uint64(pipeOut.TFD) || pipeOut.Events != epollOUT|epollERR|epollHUP {
		t.Errorf("pipe write item %+v", pipeOut)
	}
	if pipeIn.Data != uint64(pipeIn.TFD) || pipeIn.Events != epollONESHOT|epollRDHUP|epollIN|epollERR|epollHUP {
		t.Errorf("pipe read item %+v", pipeIn)
	}
	if pipeIn.Ino != pipeOut.Ino || pipeIn.TFD == pipeOut.TFD || eventfd.Ino == pipeIn.Ino {
		t.Errorf("inodes: %+v", items)
	}
	if none, err := parseFixtureFDInfo(t, "eventfd").EpollItems(); err != nil || len(none) != 0 {
		t.Errorf("eventfd has epoll items %v, %v", none, err)
	}
}

func TestInotifyWatchesReal(t *testing.T) {
	ws, err := parseFixtureFDInfo(t, "inotify").InotifyWatches()
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 {
		t.Fatalf("watches %+v", ws)
	}
	byWD := map[int]InotifyWatch{}
	for _, w := range ws {
		byWD[w.WD] = w
		if w.Ino == 0 || w.SDev == 0 || w.FHandleBytes != 8 || w.FHandleType != 1 || len(w.FHandle) != 8 || w.IgnoredMask != 0 {
			t.Errorf("watch %+v", w)
		}
	}
	if byWD[1].Mask != inCreate|inDelete|inMovedTo || byWD[2].Mask != inModify|inOneshot {
		t.Errorf("masks %+v", byWD)
	}
}

func TestFDInfoTypedReal(t *testing.T) {
	e, err := parseFixtureFDInfo(t, "eventfd").Eventfd()
	if err != nil || e.Count != 7 || !e.Semaphore {
		t.Errorf("eventfd %+v, %v", e, err)
	}
	tf, err := parseFixtureFDInfo(t, "timerfd").Timerfd()
	const clockRealtime, clockMonotonic = 0, 1
	if err != nil || tf.ClockID != clockMonotonic || tf.SettimeFlags != 0 || tf.Ticks != 0 ||
		tf.Interval != (Timespec{1, 500}) || tf.Value.Sec == 0 || tf.Value.Sec > 100 || tf.Value.Nsec >= 1e9 {
		t.Errorf("timerfd %+v, %v", tf, err)
	}
	abs, err := parseFixtureFDInfo(t, "timerfd_abs").Timerfd()
	const tfdTimerAbstime = 1
	if err != nil || abs.ClockID != clockRealtime || abs.SettimeFlags != tfdTimerAbstime || abs.Interval != (Timespec{}) || abs.Value.Sec == 0 {
		t.Errorf("absolute timerfd %+v, %v", abs, err)
	}
	mask, err := parseFixtureFDInfo(t, "signalfd").Signalfd()
	const sigUSR2, sigCHLD = 12, 17
	if err != nil || mask != sigbit(sigUSR2)|sigbit(sigCHLD) {
		t.Errorf("signalfd %x, %v", mask, err)
	}
	pipe := parseFixtureFDInfo(t, "pipe")
	if _, err := pipe.Eventfd(); err == nil {
		t.Error("a pipe parsed as an eventfd")
	}
	if _, err := pipe.Timerfd(); err == nil {
		t.Error("a pipe parsed as a timerfd")
	}
	if _, err := pipe.Signalfd(); err == nil {
		t.Error("a pipe parsed as a signalfd")
	}
}

func TestParseFDInfoUgly(t *testing.T) {
	in := "pos:\t-1\n" +
		"flags:\t037777777777\n" +
		"lock:\t1: POSIX  ADVISORY  WRITE 1 fe:00:2 0 EOF\n" +
		"lock:\t2: POSIX  ADVISORY  READ 1 fe:00:2 5 9\n" +
		"settime flags: 01\n" +
		"a line without colon\n" +
		"\n" +
		"it_value: (0, 0)\n" +
		"it_value: (1, 1)\n" +
		"tfd:        5 events:       19 data:                5  pos:0 ino:8e3 sdev:f\n" +
		"inotify wd:a ino:1 sdev:2 mask:3 ignored_mask:0 \n" +
		"inotify wd:b ino:ffffffffffffffff sdev:0 mask:80000000 ignored_mask:ff fhandle-bytes:0 fhandle-type:ffffffff f_handle:\n" +
		"fanotify flags:10 event-flags:0"
	fi, err := ParseFDInfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := FDInfo{
		Pos: -1, Flags: 0xffffffff,
		Fields: map[string]string{"pos": "-1", "flags": "037777777777", "settime flags": "01", "it_value": "(0, 0)"},
		Lines: []string{
			"lock:\t1: POSIX  ADVISORY  WRITE 1 fe:00:2 0 EOF",
			"lock:\t2: POSIX  ADVISORY  READ 1 fe:00:2 5 9",
			"a line without colon",
			"it_value: (1, 1)",
			"tfd:        5 events:       19 data:                5  pos:0 ino:8e3 sdev:f",
			"inotify wd:a ino:1 sdev:2 mask:3 ignored_mask:0 ",
			"inotify wd:b ino:ffffffffffffffff sdev:0 mask:80000000 ignored_mask:ff fhandle-bytes:0 fhandle-type:ffffffff f_handle:",
			"fanotify flags:10 event-flags:0",
		},
	}
	if !reflect.DeepEqual(fi, want) {
		t.Fatalf("got  %+v\nwant %+v", fi, want)
	}
	items, err := fi.EpollItems()
	if err != nil || !reflect.DeepEqual(items, []EpollItem{{TFD: 5, Events: 0x19, Data: 5, Ino: 0x8e3, SDev: 0xf}}) {
		t.Fatalf("items %+v, %v", items, err)
	}
	ws, err := fi.InotifyWatches()
	wantWS := []InotifyWatch{
		{WD: 10, Ino: 1, SDev: 2, Mask: 3},
		{WD: 11, Ino: 1<<64 - 1, Mask: 0x80000000, IgnoredMask: 0xff, FHandleType: -1, FHandle: []byte{}},
	}
	if err != nil || !reflect.DeepEqual(ws, wantWS) {
		t.Fatalf("watches %+v, %v", ws, err)
	}
}

func TestParseFDInfoErrors(t *testing.T) {
	for _, tc := range []struct {
		in     string
		line   int
		substr string
	}{
		{"", 0, "no pos line"},
		{"flags:\t02\n", 0, "no pos line"},
		{"pos:\t0\n", 0, "no flags line"},
		{"pos:\t0\nflags:\t08\n", 2, "bad flags"},
		{"pos:\tx\nflags:\t02\n", 1, "bad pos"},
		{"pos:\t0\nflags:\t02\nmnt_id:\t\n", 3, "bad mnt_id"},
		{"pos:\t0\nflags:\t02\nino:\t-1\n", 3, "bad ino"},
		{"pos:\t0\nflags:\t077777777777\n", 2, "bad flags"},
	} {
		_, err := ParseFDInfo([]byte(tc.in))
		wantParseError(t, err, "fdinfo", tc.line, tc.substr)
	}
}

func TestFDInfoRecordErrors(t *testing.T) {
	for _, tc := range []struct{ line, substr string }{
		{"tfd: 5 events: 19", "no data"},
		{"tfd: x events: 19 data: 5", "bad tfd"},
		{"tfd: 5 events: 100000000 data: 5", "bad events"},
		{"tfd: 5 events: 1 data: 5 pos:x", "bad pos"},
		{"tfd: 5 events: 1 data: 5 stray", "stray word"},
		{"tfd: 5 events: 1 data: 5 :3", "empty key"},
		{"inotify wd:1 ino:2 sdev:3", "no mask"},
		{"inotify wd:1 ino:2 sdev:3 mask:4 fhandle-bytes:2 fhandle-type:1 f_handle:abc", "bad f_handle"},
		{"inotify wd:1 ino:2 sdev:3 mask:4 fhandle-bytes:2 fhandle-type:1 f_handle:zz00", "bad f_handle"},
		{"inotify wd:1 ino:2 sdev:3 mask:4 fhandle-bytes:2 fhandle-type:1 f_handle:001122", "f_handle has 3 bytes, fhandle-bytes says 2"},
		{"inotify wd:1 ino:2 sdev:3 mask:4 fhandle-bytes:2 f_handle:0011", "no fhandle-type"},
	} {
		fi := FDInfo{Lines: []string{tc.line}}
		var err error
		if strings.HasPrefix(tc.line, "tfd:") {
			_, err = fi.EpollItems()
		} else {
			_, err = fi.InotifyWatches()
		}
		wantParseError(t, err, "fdinfo", 0, tc.substr)
	}
	for _, tc := range []struct {
		fields map[string]string
		substr string
	}{
		{map[string]string{"eventfd-count": "g"}, "bad eventfd-count"},
		{map[string]string{"eventfd-count": "1", "eventfd-semaphore": "2"}, "bad eventfd-semaphore"},
		{map[string]string{"clockid": "1", "ticks": "0", "settime flags": "0", "it_value": "(1, 2", "it_interval": "(0, 0)"}, "bad it_value"},
		{map[string]string{"clockid": "1", "ticks": "0", "settime flags": "0", "it_value": "(1 2)", "it_interval": "(0, 0)"}, "bad it_value"},
		{map[string]string{"clockid": "1", "ticks": "0", "settime flags": "0", "it_value": "(1, 2)", "it_interval": "(x, 0)"}, "bad it_interval"},
		{map[string]string{"clockid": "1", "ticks": "0", "settime flags": "9", "it_value": "(1, 2)", "it_interval": "(0, 0)"}, "bad settime flags"},
		{map[string]string{"clockid": "1", "ticks": "0", "it_value": "(1, 2)", "it_interval": "(0, 0)"}, "no settime flags line"},
	} {
		fi := FDInfo{Fields: tc.fields}
		var err error
		if _, ok := tc.fields["eventfd-count"]; ok {
			_, err = fi.Eventfd()
		} else {
			_, err = fi.Timerfd()
		}
		wantParseError(t, err, "fdinfo", 0, tc.substr)
	}
}
