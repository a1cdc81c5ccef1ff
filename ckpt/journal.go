package ckpt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A service that systemd started has its stdout and stderr connected to
// journald: a unix stream socket to /run/systemd/journal/stdout, opened
// with a short header (identifier, priority, ...) that journald keeps in
// a state file under streams/. Such a connection leads outside the tree;
// it is recorded as external, with what journald knew of it, and the
// restore connects a new stream to the journal of the restoring host with
// the same header (target "journal", the default for it there), so the
// service's lines go on under the same identifier.

// JournalStream is what a journald stdout stream was opened with.
type JournalStream struct {
	Identifier       string `json:"identifier"`
	Priority         int    `json:"priority"`
	LevelPrefix      bool   `json:"level_prefix,omitempty"`
	ForwardToSyslog  bool   `json:"forward_to_syslog,omitempty"`
	ForwardToKmsg    bool   `json:"forward_to_kmsg,omitempty"`
	ForwardToConsole bool   `json:"forward_to_console,omitempty"`
}

// journalDir is journald's runtime directory; RELOCATE_JOURNAL_DIR
// replaces it (tests run a journald stand-in elsewhere).
func journalDir() string {
	if d := os.Getenv("RELOCATE_JOURNAL_DIR"); d != "" {
		return d
	}
	return "/run/systemd/journal"
}

// journalStdout is the path services' stdout streams connect to.
func journalStdout() string { return filepath.Join(journalDir(), "stdout") }

// journalAvailable reports whether a journal listens here.
func journalAvailable() bool {
	st, err := os.Stat(journalStdout())
	return err == nil && st.Mode()&os.ModeSocket != 0
}

// readJournalStream reads journald's state file of the stream whose
// server end is socket inode peer; comm names the stream when journald
// kept no identifier.
func readJournalStream(peer uint64, comm string) *JournalStream {
	js := &JournalStream{Identifier: comm, Priority: 6}
	var st unix.Stat_t
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return js
	}
	err = unix.Fstat(s, &st)
	unix.Close(s)
	if err != nil {
		return js
	}
	// journald names it by the server socket's st_dev (sockfs, the same
	// for every socket) and inode.
	b, err := os.ReadFile(filepath.Join(journalDir(), "streams", fmt.Sprintf("%d:%d", st.Dev, peer)))
	if err != nil {
		return js
	}
	parseJournalState(b, js)
	return js
}

// parseJournalState fills js from a journald stream state file
// (KEY=VALUE lines; the identifier C-escaped).
func parseJournalState(b []byte, js *JournalStream) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		n, nerr := strconv.Atoi(v)
		switch k {
		case "IDENTIFIER":
			if id, err := strconv.Unquote(`"` + strings.ReplaceAll(v, `"`, `\"`) + `"`); err == nil && validIdentifier(id) {
				js.Identifier = id
			}
		case "PRIORITY":
			if nerr == nil && n >= 0 && n <= 7 {
				js.Priority = n
			}
		case "LEVEL_PREFIX":
			js.LevelPrefix = nerr == nil && n != 0
		case "FORWARD_TO_SYSLOG":
			js.ForwardToSyslog = nerr == nil && n != 0
		case "FORWARD_TO_KMSG":
			js.ForwardToKmsg = nerr == nil && n != 0
		case "FORWARD_TO_CONSOLE":
			js.ForwardToConsole = nerr == nil && n != 0
		}
	}
}

// validIdentifier: one header line of printable text.
func validIdentifier(s string) bool {
	if len(s) > 256 {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// header is the stream header journald reads first (see
// systemd's journald-stream.c): identifier, unit (empty: journald takes
// it from the sender's cgroup), priority and four flags, a line each.
func (js *JournalStream) header() []byte {
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return fmt.Appendf(nil, "%s\n\n%d\n%d\n%d\n%d\n%d\n", js.Identifier, js.Priority,
		b(js.LevelPrefix), b(js.ForwardToSyslog), b(js.ForwardToKmsg), b(js.ForwardToConsole))
}

// connectJournal opens a stdout stream to this host's journal as js.
func connectJournal(js *JournalStream) (int, error) {
	if js == nil || !validIdentifier(js.Identifier) || js.Priority < 0 || js.Priority > 7 {
		return -1, errors.New("no valid journal stream header")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: journalStdout()})
	if err == nil {
		err = unix.Shutdown(fd, unix.SHUT_RD) // as systemd does: it only writes
	}
	if err == nil {
		_, err = unix.Write(fd, js.header())
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("journal at %s: %w", journalStdout(), err)
	}
	return fd, nil
}
