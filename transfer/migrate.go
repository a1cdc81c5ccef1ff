package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/sock"
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
	// CommitWait: how long the target keeps its frozen copy waiting for
	// the commit, and (twice that) how long the source tries to learn the
	// outcome of a commit before it gives up in doubt. 0: 30 s.
	CommitWait time.Duration
	// ReadyWait bounds the target's restore after the image is sent. 0: 10 min.
	ReadyWait time.Duration
	// PreCopy, if set, copies memory while the tree runs before the
	// freeze (see ckpt.DumpOptions.PreCopy).
	PreCopy *ckpt.PreCopyOptions
}

func (o *MigrateOptions) commitWait() time.Duration {
	if o.CommitWait > 0 {
		return o.CommitWait
	}
	return defaultCommitWait
}

func (o *MigrateOptions) readyWait() time.Duration {
	if o.ReadyWait > 0 {
		return o.ReadyWait
	}
	return 10 * time.Minute
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
	FrozenMS    int64  `json:"frozen_ms"`   // from the freeze to the target's word that its copy runs
	TotalMS     int64  `json:"total_ms"`    // from the first connection to done
	RestoreMS   int64  `json:"restore_ms"`  // the target's restore
	Uploaded    bool   `json:"uploaded"`    // relocate was copied to the target
	TimeNS      bool   `json:"timens"`      // restored in a time namespace continuing the clocks
	Unconfirmed bool   `json:"unconfirmed"` // the target did not say it finished (its post-restore hook)
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
	beats    chan struct{} // closed to stop the heartbeats
	id       string        // the migration's, once it has one
	prepared bool          // the target said READY: it holds a frozen copy
	idle     time.Duration // the longest silence await accepts (0: any)
	lastDiag *lineTail     // the target's last stderr line, for errors
	started  bool          // relocate receive runs (and removes its upload)
}

// startReceive connects, brings relocate to the target if needed and
// starts `relocate receive` there.
func startReceive(ctx context.Context, dest string, o *MigrateOptions) (_ *session, err error) {
	done := phase(ctx, "connect")
	c, err := Dial(ctx, dest, o.SSH)
	done(&err)
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
	done = phase(ctx, "upload")
	s.remote, err = prepareRemote(ctx, c)
	done(&err)
	if err != nil {
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
		forwardTarget(ctx, stderr, s.lastDiag)
	}()
	if err := s.sess.Start(s.remote.receiveCommand()); err != nil {
		return nil, fmt.Errorf("%s: start relocate receive: %w", c.Dest, err)
	}
	s.started = true
	ok = true
	return s, nil
}

// await waits for the next message from the target, at most timeout (0:
// no limit) and, once the target beats, never longer than s.idle without
// hearing from it: a dead link says nothing at all.
func (s *session) await(ctx context.Context, timeout time.Duration) (message, error) {
	var t <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		t = tm.C
	}
	var idle <-chan time.Time
	var it *time.Timer
	if s.idle > 0 {
		it = time.NewTimer(s.idle)
		defer it.Stop()
		idle = it.C
	}
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				return message{}, s.gone()
			}
			if m.Type == msgBeat {
				if it != nil {
					it.Reset(s.idle)
				}
				continue
			}
			if m.Type == msgError {
				return m, &targetError{m.Error}
			}
			return m, nil
		case <-idle:
			return message{}, fmt.Errorf("%s: nothing from the target for %s: the link is down", s.client.Dest, s.idle)
		case <-t:
			return message{}, fmt.Errorf("%s: no answer from the target in %s", s.client.Dest, timeout)
		case <-ctx.Done():
			return message{}, ctx.Err()
		}
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
	confirmed := false
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				// Ended: cleanly if it said so (a relocate that died
				// may have left a frozen copy).
				return confirmed
			}
			confirmed = confirmed || m.Type == msgAborted || m.Type == msgError
		case <-deadline:
			return false
		}
	}
}

func (s *session) close() {
	if s.beats != nil {
		close(s.beats)
		s.beats = nil
	}
	// The target's last stderr lines (its log of why it refused or
	// failed) may still be on their way: they end when it exits.
	if s.started && s.errDone != nil {
		_ = s.stdin.Close()
		select {
		case <-s.errDone:
		case <-time.After(2 * time.Second):
		}
	}
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

// handshake sends the survey and returns the target's problems, and the
// paths among them that it lacks.
func (s *session) handshake(ctx context.Context, h *hello) (problems, missing []string, err error) {
	if err := s.frames.sendJSON(frameHello, h); err != nil {
		return nil, nil, fmt.Errorf("%s: send survey: %w", s.client.Dest, err)
	}
	if !h.CheckOnly && s.beats == nil {
		s.beats = make(chan struct{})
		go s.frames.heartbeat(s.beats)
	}
	m, err := s.await(ctx, time.Minute)
	if err != nil {
		return nil, nil, err
	}
	if m.Type != msgHello {
		return nil, nil, fmt.Errorf("protocol: expected hello from the target, got %q", m.Type)
	}
	return m.Problems, m.Missing, nil
}

// handshakeTries bounds how often a handshake is asked again after a
// refusal for files the tree held only for a moment.
const handshakeTries = 3

// handshakeFresh runs the handshake of h (with a session from connect), and runs
// it again, in a new session and with a new survey of pid, while the
// target refuses only for paths it lacks that the tree no longer holds: a
// temporary file open during the survey and renamed since (the survey
// reads a tree that runs on). The session returned is open, whatever the
// error.
func handshakeFresh(ctx context.Context, s *session, pid int, h *hello, connect func() (*session, error)) (_ *session, problems []string, err error) {
	for try := 1; ; try++ {
		var missing []string
		problems, missing, err = s.handshake(ctx, h)
		if err != nil || len(problems) == 0 || len(missing) < len(problems) || try == handshakeTries || pid <= 0 {
			return s, problems, err
		}
		fresh, ferr := ckpt.SurveyTree(pid)
		if ferr != nil || !fresh.Gone(missing) {
			return s, problems, err
		}
		logFrom(ctx).Info("the target lacks files the tree no longer holds; asking again", "paths", missing)
		next, serr := connect()
		if serr != nil {
			return s, problems, err
		}
		s.close()
		s, h.Survey = next, fresh
	}
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
	connect := func() (*session, error) { return startReceive(ctx, dest, &o) }
	s, err := connect()
	if err != nil {
		return nil, err
	}
	source, _ := os.Hostname()
	s, problems, err = handshakeFresh(ctx, s, pid, &hello{Protocol: ProtocolVersion, Version: o.Producer, Source: source,
		Survey: survey, CheckOnly: true, TimeNS: !o.NoTimeNS, PIDNS: o.PIDNS}, connect)
	defer s.close()
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
	log := logFrom(ctx)
	o.Progress.Set("checking the target", 0)
	done := phase(ctx, "survey")
	survey, err := ckpt.SurveyTree(pid)
	done(&err)
	if err != nil {
		return nil, err
	}
	if len(survey.Unmovable) > 0 {
		log.Info("refused here", "problems", survey.Unmovable)
		return nil, &RefusedError{Dest: dest, Err: fmt.Errorf("%s", strings.Join(survey.Unmovable, "; "))}
	}
	id := newID()
	connect := func() (*session, error) {
		s, err := startReceive(ctx, dest, &o)
		if err == nil {
			s.id = id
		}
		return s, err
	}
	s, err := connect()
	if err != nil {
		return nil, &RefusedError{Dest: dest, Err: err}
	}
	source, _ := os.Hostname()
	h := &hello{Protocol: ProtocolVersion, Version: o.Producer, Source: source, Survey: survey, TimeNS: !o.NoTimeNS, PIDNS: o.PIDNS,
		Hooks: map[string]string{HookPreRestore: o.Hooks[HookPreRestore], HookPreRestoreUndo: o.Hooks[HookPreRestoreUndo],
			HookPostRestore: o.Hooks[HookPostRestore]},
		ID: id, CommitMS: o.commitWait().Milliseconds(), IdleMS: max(o.commitWait(), 3*beatEvery).Milliseconds(),
		Fault: os.Getenv("RELOCATE_FAULT_TARGET")}
	done = phase(ctx, "handshake")
	s, problems, err := handshakeFresh(ctx, s, pid, h, connect)
	defer s.close()
	done(&err)
	if err != nil {
		return nil, &RefusedError{Dest: s.client.Dest, Err: err}
	}
	if len(problems) > 0 {
		log.Info("refused by the target", "problems", problems)
		_ = s.stdin.Close()
		return nil, &RefusedError{Dest: s.client.Dest, Problems: problems}
	}
	// The target beats from here on; either side gives up on a silent
	// peer after idle, and a write stuck that long (a dead link, the SSH
	// window full) closes the connection.
	s.idle = time.Duration(h.IdleMS) * time.Millisecond
	s.frames.stall, s.frames.onStall = s.idle, func() { s.client.Close() }
	endFreeze := phase(ctx, "freeze")
	var endStream func(*error)

	res := &MigrateResult{PID: pid, Dest: s.client.Dest, Uploaded: s.remote.uploaded}
	var cp *ckpt.Checkpoint
	flt := parseFault(os.Getenv("RELOCATE_FAULT"))
	dopts := ckpt.DumpOptions{
		Log:            logFrom(ctx),
		UnixDisconnect: o.UnixDisconnect,
		Progress:       o.Progress,
		Producer:       o.Producer,
		Unlock:         true,
		PreCopy:        o.PreCopy,
		Frozen: func(c *ckpt.Checkpoint) error {
			cp = c
			endFreeze(nil)
			endStream = phase(ctx, "stream")
			if rb := o.Hooks[HookRollback]; rb != "" {
				// If this relocate dies before its decision (the tree
				// runs on when ptrace ends), its guard runs the rollback.
				sock.GuardHook(id+"-rollback", rb, hookEnv(HookRollback, c, source, s.client.Dest))
			}
			return runHook(ctx, HookPostDump, o.Hooks[HookPostDump], hookEnv(HookPostDump, c, source, s.client.Dest), o.Stderr)
		},
	}
	if strings.HasPrefix(flt.step, "stream") {
		if o.Progress == nil {
			o.Progress = &ckpt.Progress{}
			dopts.Progress = o.Progress
		}
		s.frames.fault, s.frames.prog = flt, o.Progress
	}
	defer sock.GuardForget(id + "-rollback") // whatever the outcome, this relocate saw to it
	flt.at("before-stream")
	f, err := ckpt.DumpTx(ctx, pid, s.frames, dopts)
	if err != nil {
		// The dump resumed the tree already.
		return nil, s.rollBack(ctx, pid, err, cp, source, &o)
	}
	if o.Hooks[HookRollback] != "" {
		f.OnRollback(func() error {
			// The hook must run even after ^C: it puts the address back.
			return runHook(context.WithoutCancel(ctx), HookRollback, o.Hooks[HookRollback], hookEnv(HookRollback, cp, source, s.client.Dest), o.Stderr)
		})
	}
	// Phase 1: the target restores and holds its copy frozen.
	rollback := func(cause error) error {
		err := s.rollBack(ctx, pid, cause, nil, source, &o)
		if rerr := f.Rollback(); rerr != nil {
			return &RolledBackError{PID: pid, Err: errors.Join(cause, rerr)}
		}
		return err
	}
	if err := s.frames.send(frameEnd, nil); err != nil {
		return nil, rollback(fmt.Errorf("%s: send: %w", s.client.Dest, err))
	}
	if endStream != nil {
		endStream(nil)
	}
	o.Progress.Set("restoring on the target", 0)
	endRestore := phase(ctx, "restore")
	m, err := s.await(ctx, o.readyWait())
	if err == nil && m.Type != msgReady {
		err = fmt.Errorf("protocol: expected ready from the target, got %q", m.Type)
	}
	endRestore(&err)
	if err != nil {
		return nil, rollback(err)
	}
	ready, readyAt := m, time.Now()
	s.prepared = true
	flt.at("ready")
	if err := ctx.Err(); err != nil {
		return nil, rollback(err)
	}

	// The decision point: record it, hold the copy here so that it stays
	// frozen whatever happens to this process, and commit.
	plan, err := f.Plan()
	var l *recordLock
	if err == nil {
		l, _, err = lockRecord(id)
	}
	if err != nil {
		return nil, rollback(err)
	}
	defer l.unlock()
	sshOpts := o.SSH
	rec := &record{ID: id, Role: "source", State: stateCommitting, Held: plan, PID: pid, Dest: dest, SSH: &sshOpts,
		Other: s.client.Dest, Holder: os.Getpid(), HolderStart: selfStart()}
	if o.Hooks[HookRollback] != "" && cp != nil {
		rec.Undo, rec.Env = o.Hooks[HookRollback], hookEnv(HookRollback, cp, source, s.client.Dest)
	}
	if err := l.save(rec); err != nil {
		return nil, rollback(err)
	}
	sock.GuardForget(id + "-rollback") // the record has it now: a held copy must not be rolled back blindly
	if _, err := f.Hold(); err != nil {
		_ = l.remove()
		return nil, rollback(err)
	}
	logFrom(ctx).Debug("step", "step", "commit: recorded and held", "duration", time.Since(readyAt).Round(time.Microsecond))
	o.Progress.Set("committing", 0)
	endCommit := phase(ctx, "commit")
	sendErr := s.frames.send(frameCommit, nil)
	flt.at("commit")
	var ans message
	err = sendErr
	if err == nil {
		// A ^C now cannot take the commit back: wait for the answer anyway.
		ans, err = s.await(context.WithoutCancel(ctx), o.commitWait()+beatEvery)
	}
	forget := func() { _ = s.frames.send(frameForget, nil) }
	if err != nil || (ans.Type != msgRunning && ans.Type != msgAborted) {
		// In doubt: ask the target again (a new connection) until our
		// deadline; its record says what it did.
		if err == nil {
			err = fmt.Errorf("protocol: expected running from the target, got %q", ans.Type)
		}
		ans.Type, forget, err = s.askAgain(ctx, rec, &o, err)
		if err != nil {
			return nil, err
		}
	}
	if ans.Type == msgAborted {
		err := errors.Join(f.Rollback(), l.remove())
		return nil, &RolledBackError{PID: pid, Err: errors.Join(errors.New("the target gave up its copy before the commit reached it"), err)}
	}
	// The process was nowhere running from the freeze until now (the
	// target resumed its copy just before it said so): that is the
	// downtime, not the kill of the copy here that follows.
	downtime := f.FrozenFor()
	logFrom(ctx).Debug("step", "step", "commit: answered", "duration", time.Since(readyAt).Round(time.Microsecond))
	flt.at("before-kill")
	if err := f.Commit(); err != nil {
		logFrom(ctx).Warn(fmt.Sprintf("kill the copy here: %v", err))
	}
	endCommit(nil)
	flt.at("after-kill")
	forget()
	_ = l.remove()
	dres := f.Result
	res.Processes, res.Threads = dres.Processes, dres.Threads
	res.BytesRaw, res.BytesSent, res.FrozenMS = dres.BytesRaw, s.frames.sent, downtime.Milliseconds()
	res.RestoreMS, res.TimeNS, res.TargetPID = ready.RestoreMS, ready.TimeNSUsed, ready.PID
	res.PreCopy = dres.PreCopy
	_ = s.stdin.Close()
	if m, err := s.await(ctx, 30*time.Second); err != nil || m.Type != msgDone {
		res.Unconfirmed = true
		log.Info("the target did not confirm the end", "dest", res.Dest)
	}
	endCommit(nil)
	res.TotalMS = time.Since(start).Milliseconds()
	return res, nil
}

// askAgain settles a commit whose answer did not come: it asks the
// target (new connections) until the in-doubt deadline. It returns
// msgRunning or msgAborted, or an InDoubtError with the copy here left
// frozen and recorded.
func (s *session) askAgain(ctx context.Context, rec *record, o *MigrateOptions, cause error) (string, func(), error) {
	deadline := time.Now().Add(2 * o.commitWait())
	for {
		out, forget, err := askTarget(context.WithoutCancel(ctx), rec, "commit", o.Stderr)
		if err == nil {
			return out, forget, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", nil, &InDoubtError{ID: rec.ID, PID: rec.PID, Dest: s.client.Dest, Err: cause}
		}
		time.Sleep(time.Second)
	}
}

// askTarget asks the target of a recorded migration what became of its
// copy, with the source's decision ("commit", "abort"). It returns
// msgRunning (then call forget once the copy here is dead) or msgAborted.
func askTarget(ctx context.Context, rec *record, decision string, stderr io.Writer) (string, func(), error) {
	o := &MigrateOptions{Stderr: stderr}
	if rec.SSH != nil {
		o.SSH = *rec.SSH
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := startReceive(ctx, rec.Dest, o)
	if err != nil {
		return "", nil, err
	}
	source, _ := os.Hostname()
	if err := s.frames.sendJSON(frameHello, &hello{Protocol: ProtocolVersion, Source: source, Resolve: rec.ID, Decision: decision}); err != nil {
		s.close()
		return "", nil, err
	}
	m, err := s.await(ctx, 30*time.Second)
	if err == nil && m.Type == msgHello {
		m, err = s.await(ctx, 30*time.Second)
	}
	if err != nil {
		s.close()
		return "", nil, err
	}
	switch m.Type {
	case msgRunning:
		return msgRunning, func() {
			_ = s.frames.send(frameForget, nil)
			_ = s.stdin.Close()
			_, _ = s.await(context.Background(), 10*time.Second)
			s.close()
		}, nil
	case msgAborted:
		s.close()
		return msgAborted, nil, nil
	}
	s.close()
	return "", nil, fmt.Errorf("%s: the copy there is still waiting for its own relocate's decision", rec.Dest)
}

// InDoubtError: the commit was sent but its outcome is unknown. The copy
// here is frozen; `relocate resolve ID` settles it.
type InDoubtError struct {
	ID   string
	PID  int
	Dest string
	Err  error
}

func (e *InDoubtError) Error() string {
	return fmt.Sprintf("%v; in doubt: pid %d is frozen here and may run on %s; settle it with: relocate resolve %s (or --commit|--abort if %s cannot be reached)",
		e.Err, e.PID, e.Dest, e.ID, e.Dest)
}
func (e *InDoubtError) Unwrap() error { return e.Err }

// rollBack finishes a migration that failed after the freeze: the dump has
// already resumed the source tree; the target is told to clean up and the
// rollback hook runs.
func (s *session) rollBack(ctx context.Context, pid int, cause error, cp *ckpt.Checkpoint, source string, o *MigrateOptions) error {
	logFrom(ctx).Info("rolling back", "pid", pid, "error", oneLine(cause))
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
	// A target that reported its own failure has cleaned up already.
	var te *targetError
	reported := errors.As(cause, &te)
	// Before READY a target never holds a copy that outlives it (a
	// half-restored tree dies with its relocate).
	if !s.abort(reason) && !reported && s.prepared {
		logFrom(ctx).Warn(fmt.Sprintf("the target did not confirm its cleanup; a frozen copy of pid %d may be left there: run relocate resolve %s on %s", pid, s.id, s.client.Dest))
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
