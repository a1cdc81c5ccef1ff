package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/relocate/relocate/ckpt"
)

// MigrateOptions tune Migrate.
type MigrateOptions struct {
	SSH      SSHOptions
	Hooks    map[string]string // by hook name (HookPostDump, ...)
	NoTimeNS bool              // restore in the target's own clocks
	PIDNS    bool              // restore in a new PID namespace on the target
	// UnixDisconnect: unix connections to sockets outside the tree arrive
	// closed (see ckpt.DumpOptions).
	UnixDisconnect bool
	Progress       *ckpt.Progress // may be nil
	Producer       string         // version string for the image header
	// Stderr receives what the target and the hooks print for a human.
	Stderr io.Writer
	// PreCopy, if set, copies memory while the tree runs before the
	// freeze (see ckpt.DumpOptions.PreCopy).
	PreCopy *ckpt.PreCopyOptions
}

// MigrateResult summarises a migration.
type MigrateResult struct {
	PID         int    `json:"pid"`
	TargetPID   int    `json:"target_pid"` // the root's PID as the target sees it (differs with --pidns)
	Dest        string `json:"dest"`
	Processes   int    `json:"processes"`
	Threads     int    `json:"threads"`
	BytesRaw    int64  `json:"bytes_raw"`   // memory the tree had
	BytesSent   int64  `json:"bytes_sent"`  // image bytes on the wire
	FrozenMS    int64  `json:"frozen_ms"`   // source frozen until killed
	TotalMS     int64  `json:"total_ms"`    // from the first connection to done
	RestoreMS   int64  `json:"restore_ms"`  // the target's restore
	Uploaded    bool   `json:"uploaded"`    // relocate was copied to the target
	TimeNS      bool   `json:"timens"`      // restored in a time namespace continuing the clocks
	Unconfirmed bool   `json:"unconfirmed"` // the target did not confirm the commit (see the warning)
	// PreCopy: the rounds copied while the tree ran, if it was pre-copied.
	PreCopy *ckpt.PreCopyResult `json:"precopy,omitempty"`
}

// RefusedError: the migration was refused before anything was frozen.
type RefusedError struct {
	Dest     string
	Problems []string
	Err      error // when the target could not even be asked
}

func (e *RefusedError) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s cannot take the process: %s", e.Dest, strings.Join(e.Problems, "; "))
}
func (e *RefusedError) Unwrap() error { return e.Err }

// RolledBackError: the migration failed after the freeze; the source tree
// was resumed and the target cleaned up.
type RolledBackError struct {
	PID int
	Err error
}

func (e *RolledBackError) Error() string {
	return fmt.Sprintf("%v; rolled back: pid %d runs on here as before", e.Err, e.PID)
}
func (e *RolledBackError) Unwrap() error { return e.Err }

// session is one run of `relocate receive` on the target.
type session struct {
	client   *Client
	sess     *ssh.Session
	frames   *frameWriter
	stdin    io.WriteCloser
	msgs     <-chan message
	remote   *remoteBinary
	errDone  chan struct{} // the target's stderr is drained
	lastDiag *lineTail     // the target's last stderr line, for errors
	started  bool          // relocate receive runs (and removes its upload)
}

// startReceive connects, brings relocate to the target if needed and
// starts `relocate receive` there.
func startReceive(ctx context.Context, dest string, o *MigrateOptions) (*session, error) {
	c, err := Dial(ctx, dest, o.SSH)
	if err != nil {
		return nil, err
	}
	s := &session{client: c}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if s.remote, err = prepareRemote(ctx, c); err != nil {
		return nil, fmt.Errorf("%s: %w", c.Dest, err)
	}
	if s.sess, err = c.NewSession(); err != nil {
		return nil, fmt.Errorf("%s: open session: %w", c.Dest, err)
	}
	if s.stdin, err = s.sess.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := s.sess.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := s.sess.StderrPipe()
	if err != nil {
		return nil, err
	}
	s.frames = &frameWriter{w: s.stdin}
	s.msgs = readMessages(stdout)
	s.errDone = make(chan struct{})
	s.lastDiag = &lineTail{}
	go func() {
		defer close(s.errDone)
		forwardLines(stderr, o.Stderr, s.lastDiag)
	}()
	if err := s.sess.Start(s.remote.receiveCommand()); err != nil {
		return nil, fmt.Errorf("%s: start relocate receive: %w", c.Dest, err)
	}
	s.started = true
	ok = true
	return s, nil
}

// await waits for the next message from the target.
func (s *session) await(ctx context.Context, timeout time.Duration) (message, error) {
	var t <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		t = tm.C
	}
	select {
	case m, ok := <-s.msgs:
		if !ok {
			return message{}, s.gone()
		}
		if m.Type == msgError {
			return m, &targetError{m.Error}
		}
		return m, nil
	case <-t:
		return message{}, fmt.Errorf("%s: no answer from the target in %s", s.client.Dest, timeout)
	case <-ctx.Done():
		return message{}, ctx.Err()
	}
}

// targetError is the target's own account of its failure.
type targetError struct{ msg string }

func (e *targetError) Error() string { return "target: " + e.msg }

// targetError waits (bounded) for an error message from the target.
func (s *session) targetError(wait time.Duration) (message, bool) {
	deadline := time.After(wait)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				return message{}, false
			}
			if m.Type == msgError {
				return m, true
			}
		case <-deadline:
			return message{}, false
		}
	}
}

// gone explains a target that stopped talking.
func (s *session) gone() error {
	<-s.errDone
	if d := s.lastDiag.get(); d != "" {
		return fmt.Errorf("%s: relocate receive ended: %s", s.client.Dest, d)
	}
	return fmt.Errorf("%s: the connection to the target was lost", s.client.Dest)
}

// abort tells the target to give up, and waits (bounded) for it to have
// cleaned up. It reports whether the target confirmed.
func (s *session) abort(reason string) bool {
	_ = s.frames.send(frameAbort, []byte(reason))
	_ = s.stdin.Close()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-s.msgs:
			if !ok {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func (s *session) close() {
	if s.sess != nil {
		s.sess.Close()
	}
	// A receiver that started deleted its upload itself; only one that
	// never ran leaves it (and a dead link would only make us wait).
	if s.remote != nil && !s.started {
		s.remote.cleanup(s.client)
	}
	s.client.Close()
}

// handshake sends the survey and returns the target's problems.
func (s *session) handshake(ctx context.Context, h *hello) ([]string, error) {
	if err := s.frames.sendJSON(frameHello, h); err != nil {
		return nil, fmt.Errorf("%s: send survey: %w", s.client.Dest, err)
	}
	m, err := s.await(ctx, time.Minute)
	if err != nil {
		return nil, err
	}
	if m.Type != msgHello {
		return nil, fmt.Errorf("protocol: expected hello from the target, got %q", m.Type)
	}
	return m.Problems, nil
}

// Check runs the handshake of a migration of pid to dest without freezing
// anything, and returns what would fail there. pid 0 checks the target
// alone: root, kernel features, CPU.
func Check(ctx context.Context, pid int, dest string, o MigrateOptions) (problems []string, err error) {
	survey := &ckpt.Survey{}
	if pid > 0 {
		if survey, err = ckpt.SurveyTree(pid); err != nil {
			return nil, err
		}
	} else {
		here := ckpt.SurveyHere()
		survey = &here
	}
	s, err := startReceive(ctx, dest, &o)
	if err != nil {
		return nil, err
	}
	defer s.close()
	source, _ := os.Hostname()
	problems, err = s.handshake(ctx, &hello{Protocol: ProtocolVersion, Version: o.Producer, Source: source,
		Survey: survey, CheckOnly: true, TimeNS: !o.NoTimeNS, PIDNS: o.PIDNS})
	_ = s.stdin.Close()
	return problems, err
}

// Migrate moves pid's tree to dest: survey, handshake, then freeze, stream
// and restore at once; the source tree dies only after the target reports
// its copy running. Any failure after the freeze resumes the source
// (RolledBackError); a refusal before it leaves the source untouched
// (RefusedError).
func Migrate(ctx context.Context, pid int, dest string, o MigrateOptions) (*MigrateResult, error) {
	start := time.Now()
	o.Progress.Set("checking the target", 0)
	survey, err := ckpt.SurveyTree(pid)
	if err != nil {
		return nil, err
	}
	if len(survey.Unmovable) > 0 {
		return nil, &RefusedError{Dest: dest, Err: fmt.Errorf("%s", strings.Join(survey.Unmovable, "; "))}
	}
	s, err := startReceive(ctx, dest, &o)
	if err != nil {
		return nil, &RefusedError{Dest: dest, Err: err}
	}
	defer s.close()
	source, _ := os.Hostname()
	h := &hello{Protocol: ProtocolVersion, Version: o.Producer, Source: source, Survey: survey, TimeNS: !o.NoTimeNS, PIDNS: o.PIDNS,
		Hooks: map[string]string{HookPreRestore: o.Hooks[HookPreRestore], HookPostRestore: o.Hooks[HookPostRestore]}}
	problems, err := s.handshake(ctx, h)
	if err != nil {
		return nil, &RefusedError{Dest: s.client.Dest, Err: err}
	}
	if len(problems) > 0 {
		_ = s.stdin.Close()
		return nil, &RefusedError{Dest: s.client.Dest, Problems: problems}
	}

	res := &MigrateResult{PID: pid, Dest: s.client.Dest, Uploaded: s.remote.uploaded}
	var cp *ckpt.Checkpoint
	var running message
	dopts := ckpt.DumpOptions{
		UnixDisconnect: o.UnixDisconnect,
		Progress:       o.Progress,
		Producer:       o.Producer,
		Unlock:         true,
		PreCopy:        o.PreCopy,
		Frozen: func(c *ckpt.Checkpoint) error {
			cp = c
			return runHook(ctx, HookPostDump, o.Hooks[HookPostDump], hookEnv(HookPostDump, c, source, s.client.Dest), o.Stderr)
		},
		Commit: func() error {
			if err := s.frames.send(frameEnd, nil); err != nil {
				return fmt.Errorf("%s: send: %w", s.client.Dest, err)
			}
			o.Progress.Set("restoring on the target", 0)
			m, err := s.await(ctx, 0)
			if err != nil {
				return err
			}
			if m.Type != msgRunning {
				return fmt.Errorf("protocol: expected running from the target, got %q", m.Type)
			}
			running = m
			// The point of no return: from here on the target keeps its
			// tree, and this one dies.
			return s.frames.send(frameCommit, nil)
		},
	}
	// A failed write into the channel means the target is gone: say why.
	dres, err := ckpt.Dump(ctx, pid, s.frames, dopts)
	if err != nil {
		return nil, s.rollBack(ctx, pid, err, cp, source, &o)
	}
	res.Processes, res.Threads = dres.Processes, dres.Threads
	res.BytesRaw, res.BytesSent, res.FrozenMS = dres.BytesRaw, s.frames.sent, dres.FrozenMS
	res.RestoreMS, res.TimeNS, res.TargetPID = running.RestoreMS, running.TimeNSUsed, running.PID
	res.PreCopy = dres.PreCopy
	_ = s.stdin.Close()
	if m, err := s.await(ctx, 30*time.Second); err != nil || m.Type != msgDone {
		res.Unconfirmed = true
	}
	res.TotalMS = time.Since(start).Milliseconds()
	return res, nil
}

// rollBack finishes a migration that failed after the freeze: the dump has
// already resumed the source tree; the target is told to clean up and the
// rollback hook runs.
func (s *session) rollBack(ctx context.Context, pid int, cause error, cp *ckpt.Checkpoint, source string, o *MigrateOptions) error {
	if ctx.Err() == nil && s.frames.failed() {
		// A write to the target failed: it may have said why it stopped
		// reading; if not, the link is gone.
		if m, ok := s.targetError(3 * time.Second); ok {
			cause = &targetError{m.Error}
		} else {
			cause = s.gone()
		}
	}
	reason := oneLine(cause)
	if ctx.Err() != nil {
		reason = "interrupted at the source"
	}
	if !s.abort(reason) {
		fmt.Fprintf(o.Stderr, "relocate: warning: the target did not confirm its cleanup; check %s for a leftover pid %d\n", s.client.Dest, pid)
	}
	if cp != nil && o.Hooks[HookRollback] != "" {
		// The hook must run even after ^C: it puts the address back.
		hctx := context.WithoutCancel(ctx)
		if err := runHook(hctx, HookRollback, o.Hooks[HookRollback], hookEnv(HookRollback, cp, source, s.client.Dest), o.Stderr); err != nil {
			cause = errors.Join(cause, err)
		}
	}
	return &RolledBackError{PID: pid, Err: cause}
}

// lineTail remembers the last non-empty line written through it.
// Written by one goroutine, read after it ended.
type lineTail struct{ last string }

func (t *lineTail) set(s string) { t.last = s }
func (t *lineTail) get() string  { return t.last }

// forwardLines copies the target's stderr to w, line by line, prefixed,
// and keeps the last line.
func forwardLines(r io.Reader, w io.Writer, tail *lineTail) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) != "" {
			tail.set(line)
		}
		if w != nil {
			fmt.Fprintf(w, "relocate: target: %s\n", line)
		}
	}
}
