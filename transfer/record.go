package transfer

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt"
)

// A migration's state record: one small file per migration and host
// under /run/relocate (0600, in a 0700 directory; /run is cleared at boot,
// as are the processes it speaks of), written before each step that a
// crash could leave undecided, and removed once the outcome is settled.
// It lets `relocate resolve ID` find a frozen copy and what became of the
// other side; no daemon watches it.

// Record states.
const (
	// source: its copy is frozen (or about to be) and the commit was
	// decided: it may have been sent. The copy dies only once the target
	// is known to run.
	stateCommitting = "committing"
	// target: its copy is restored and frozen, waiting for the commit.
	statePrepared = "prepared"
	// target: its copy was resumed on the source's commit.
	stateRunning = "running"
)

type record struct {
	ID          string      `json:"id"`
	Role        string      `json:"role"` // "source" or "target"
	State       string      `json:"state"`
	Held        *ckpt.Held  `json:"held"`
	PID         int         `json:"pid"`              // the tree's root as the image names it
	Dest        string      `json:"dest,omitempty"`   // source: how to reach the target
	SSH         *SSHOptions `json:"ssh,omitempty"`    // source: with these options
	Other       string      `json:"other,omitempty"`  // the other host's name
	Holder      int         `json:"holder,omitempty"` // the relocate that holds the copy
	HolderStart uint64      `json:"holder_start,omitempty"`
	// Deadline: target: a commit after it is refused; the copy is aborted.
	Deadline time.Time `json:"deadline,omitempty"`
	// Undo: the hook that takes back what ran before the commit, run by a
	// resolve that gives up this copy (target: pre-restore-undo) or resumes
	// it (source: rollback).
	Undo string   `json:"undo,omitempty"`
	Env  []string `json:"env,omitempty"` // for the hook
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// newID names a migration.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recordDir is where records live; RELOCATE_RUN_DIR moves it (tests).
func recordDir() string {
	if d := os.Getenv("RELOCATE_RUN_DIR"); d != "" {
		return d
	}
	return "/run/relocate"
}

// recordLock is a record opened and locked (flock) against concurrent
// settling: the relocate holding the copy and a `resolve` never act at once.
type recordLock struct {
	id   string
	path string
	f    *os.File
}

// lockRecord locks the record of id, creating the lock file if needed,
// and returns the record (nil if there is none).
func lockRecord(id string) (*recordLock, *record, error) {
	if !idPattern.MatchString(id) {
		return nil, nil, fmt.Errorf("%q is not a migration id (16 hex digits)", id)
	}
	dir := recordDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("state records: %w", err)
	}
	path := filepath.Join(dir, id+".json")
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("state record: %w", err)
	}
	// Bounded: the relocate holding it settles within its deadlines.
	for i := 0; ; i++ {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || i >= 1200 {
			f.Close()
			return nil, nil, fmt.Errorf("state record %s: lock: %w (another relocate is settling migration %s)", path, err, id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	l := &recordLock{id: id, path: path, f: f}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return l, nil, nil
	}
	if err != nil {
		l.unlock()
		return nil, nil, fmt.Errorf("state record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.ID != id || r.Held == nil {
		l.unlock()
		return nil, nil, fmt.Errorf("state record %s is damaged: %v", path, err)
	}
	return l, &r, nil
}

// save writes r in place of the record (a new file renamed over it).
func (l *recordLock) save(r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state record: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, l.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state record %s: %w", l.path, err)
	}
	return nil
}

// remove deletes the record: the migration is settled.
func (l *recordLock) remove() error {
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state record: %w", err)
	}
	os.Remove(l.path + ".lock")
	return nil
}

func (l *recordLock) unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// holderAlive reports whether the relocate that wrote r still runs.
func (r *record) holderAlive() bool {
	if r.Holder == 0 {
		return false
	}
	st, err := ckpt.StartTime(r.Holder)
	return err == nil && st == r.HolderStart
}

// selfStart is this process's start time, to recognise it in a record.
func selfStart() uint64 {
	st, _ := ckpt.StartTime(os.Getpid())
	return st
}
