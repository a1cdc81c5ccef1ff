package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/sock"
)

// Receive is the target side of a migration (`relocate receive`, started
// by the source over SSH): it checks the source's survey, restores the
// image that follows, runs the target's hooks, reports the tree running and
// keeps it only if the source commits. in and out are the SSH channel;
// errw reaches the user on the source (hook output).
//
// Whatever goes wrong, the target is left as it was found: a restore that
// fails cleans up after itself, and a tree that already ran is killed
// without a word on its connections.
func Receive(ctx context.Context, in io.Reader, out, errw io.Writer) error {
	growPipe(in)
	var idle *idleReader
	if f, ok := in.(*os.File); ok {
		idle = &idleReader{f: f}
		idle.idle.Store(int64(time.Minute))
		in = idle
	}
	fr := newFrameReader(in)
	mw := &messageWriter{w: out}
	log := logFrom(ctx)
	fail := func(err error) error {
		log.Info("failed", "error", oneLine(err))
		_ = mw.send(message{Type: msgError, Error: oneLine(err)})
		return err
	}
	kind, payload, err := fr.next()
	if err != nil {
		return fail(err)
	}
	var h hello
	if kind != frameHello {
		return fail(fmt.Errorf("protocol: the source began with a %q frame", kind))
	}
	if err := json.Unmarshal(payload, &h); err == nil && h.Resolve != "" && h.Protocol == ProtocolVersion {
		return resolveHere(ctx, fr, mw, h.Resolve, h.Decision, errw)
	}
	if err := json.Unmarshal(payload, &h); err != nil || h.Survey == nil {
		return fail(fmt.Errorf("protocol: bad hello from the source: %v", err))
	}
	if h.Protocol != ProtocolVersion {
		return fail(fmt.Errorf("protocol %d here, %d at the source: use the same relocate on both sides", ProtocolVersion, h.Protocol))
	}
	problems, missing := h.Survey.Check(h.PIDNS)
	if h.TimeNS {
		if _, err := os.Stat("/proc/self/ns/time"); err != nil {
			problems = append(problems, "this kernel has no time namespaces (use --no-timens)")
		}
	}
	log.Info("survey checked", "source", h.Source, "root", h.Survey.Root, "ids", len(h.Survey.IDs), "problems", problems)
	if err := mw.send(message{Type: msgHello, Protocol: ProtocolVersion, Problems: problems, Missing: missing}); err != nil {
		return err
	}
	if len(problems) > 0 || h.CheckOnly {
		return nil
	}

	if idle != nil && h.IdleMS > 0 {
		idle.idle.Store(h.IdleMS * int64(time.Millisecond))
	}
	// Beat while the migration lasts: the source tells a target busy
	// restoring from a dead link.
	stopBeats := make(chan struct{})
	defer close(stopBeats)
	go func() {
		t := time.NewTicker(beatEvery)
		defer t.Stop()
		for {
			select {
			case <-stopBeats:
				return
			case <-t.C:
				if mw.send(message{Type: msgBeat}) != nil {
					return
				}
			}
		}
	}()
	if !idPattern.MatchString(h.ID) {
		return fail(fmt.Errorf("protocol: the source sent no migration id"))
	}
	return receiveTx(ctx, fr, mw, &h, errw)
}

// receiveTx is the target's side of the commit (see commit.go).
func receiveTx(ctx context.Context, fr *frameReader, mw *messageWriter, h *hello, errw io.Writer) error {
	fail := func(err error) error {
		_ = mw.send(message{Type: msgError, Error: oneLine(err)})
		return err
	}
	flt := parseFault(h.Fault)
	target, _ := os.Hostname()
	var env []string
	var cp *ckpt.Checkpoint
	undo := ""
	runUndo := func() error {
		if undo == "" {
			return nil
		}
		uenv := append(slices.Clone(env), "RELOCATE_HOOK="+HookPreRestoreUndo)
		return runHook(context.WithoutCancel(ctx), HookPreRestoreUndo, undo, uenv, errw)
	}
	opts := ckpt.RestoreOptions{
		Log:    logFrom(ctx),
		TimeNS: h.TimeNS,
		PIDNS:  h.PIDNS,
		BeforeNet: func(c *ckpt.Checkpoint) (func() error, error) {
			cp = c
			env = hookEnv(HookPreRestore, c, h.Source, target)
			if err := runHook(ctx, HookPreRestore, h.Hooks[HookPreRestore], env, errw); err != nil {
				return nil, err
			}
			undo = h.Hooks[HookPreRestoreUndo] // from now on it has something to undo
			if undo != "" {
				// If this relocate dies before the copy is held and recorded.
				sock.GuardHook(h.ID+"-undo", undo, append(slices.Clone(env), "RELOCATE_HOOK="+HookPreRestoreUndo))
			}
			return func() error { defer sock.GuardForget(h.ID + "-undo"); return runUndo() }, nil
		},
	}
	commitWait := time.Duration(h.CommitMS) * time.Millisecond
	if commitWait <= 0 {
		commitWait = defaultCommitWait
	}
	rec := &record{ID: h.ID, Role: "target", State: statePrepared, Other: h.Source,
		Holder: os.Getpid(), HolderStart: selfStart()}
	opts.Holding = func(held *ckpt.Held) error {
		l, _, err := lockRecord(h.ID)
		if err != nil {
			return err
		}
		defer l.unlock()
		rec.Held, rec.PID, rec.Undo, rec.Env = held, held.Procs[0].PID, undo, env
		rec.Deadline = time.Now().Add(commitWait)
		if err := l.save(rec); err != nil {
			return err
		}
		sock.GuardForget(h.ID + "-undo") // the record has it now
		return nil
	}
	flt.at("restore")
	done := phase(ctx, "restore")
	p, err := ckpt.RestoreTx(ctx, fr, opts)
	done(&err)
	if err != nil {
		if rec.Held != nil {
			if l, _, lerr := lockRecord(h.ID); lerr == nil {
				_ = l.remove()
				l.unlock()
			}
		}
		var ab *abortedError
		if errors.As(err, &ab) {
			_ = mw.send(message{Type: msgAborted}) // cleaned up: the source may resume
			return err
		}
		return fail(err)
	}
	res := p.Result
	ready := message{Type: msgReady, PID: res.PID, Processes: res.Processes, Threads: res.Threads,
		BytesRead: res.BytesRead, RestoreMS: res.Duration.Milliseconds(), TimeNSUsed: h.TimeNS}
	sendErr := mw.send(ready)
	flt.at("ready")

	// Wait for the decision, never past the deadline.
	decided := make(chan error, 1)
	go func() { decided <- fr.decision() }()
	timer := time.NewTimer(time.Until(rec.Deadline))
	defer timer.Stop()
	commit := false
	if sendErr == nil {
		select {
		case err := <-decided:
			commit = err == nil
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	if commit {
		flt.at("commit")
	}
	// Settle under the record's lock: a resolve may have come first.
	l, cur, err := lockRecord(h.ID)
	if err != nil {
		return fail(err)
	}
	defer l.unlock()
	switch {
	case cur == nil:
		// A resolve aborted the copy meanwhile.
		_ = mw.send(message{Type: msgAborted})
		return errors.New("the migration was aborted by relocate resolve")
	case cur.State == stateRunning:
		commit = true // a resolve committed meanwhile
	case commit && time.Now().Before(cur.Deadline):
		cur.State = stateRunning
		if err := l.save(cur); err != nil {
			commit = false // cannot promise to remember it: do not resume
			break
		}
		if err := p.Resume(); err != nil {
			fmt.Fprintf(errw, "relocate: warning: resume the restored tree: %v\n", err)
		}
		flt.at("resumed")
	default:
		commit = false
	}
	if !commit {
		err := errors.Join(p.Abort(), l.remove())
		_ = mw.send(message{Type: msgAborted})
		if err != nil {
			return err
		}
		return errors.New("the migration was not committed: the frozen copy here was removed")
	}
	l.unlock()
	if err := mw.send(message{Type: msgRunning, PID: res.PID}); err != nil {
		return nil // the source learns it from the record (relocate resolve)
	}
	// After the commit, a failing post-restore hook can only warn.
	if cp == nil {
		cp = &ckpt.Checkpoint{Root: res.PID}
	}
	env = hookEnv(HookPostRestore, cp, h.Source, target)
	if err := runHook(ctx, HookPostRestore, h.Hooks[HookPostRestore], env, errw); err != nil {
		fmt.Fprintf(errw, "relocate: warning: %v (the process runs here anyway)\n", err)
	}
	// The source kills its copy, then says so: the record can go.
	if awaitForget(fr, 2*commitWait) {
		if l, _, err := lockRecord(h.ID); err == nil {
			_ = l.remove()
			l.unlock()
		}
	}
	return mw.send(message{Type: msgDone})
}

// defaultCommitWait is how long a prepared target waits for the commit.
const defaultCommitWait = 30 * time.Second

// awaitForget waits (bounded) for the source's FORGET.
func awaitForget(fr *frameReader, wait time.Duration) bool {
	got := make(chan bool, 1)
	go func() {
		kind, _, err := fr.next()
		got <- err == nil && kind == frameForget
	}()
	select {
	case ok := <-got:
		return ok
	case <-time.After(wait):
		return false
	}
}

// resolveHere answers a source's question about migration id's copy here
// and settles it with the source's decision.
func resolveHere(ctx context.Context, fr *frameReader, mw *messageWriter, id, decision string, errw io.Writer) error {
	out, err := settleTarget(ctx, id, decision, errw)
	if err != nil {
		_ = mw.send(message{Type: msgError, Error: oneLine(err)})
		return err
	}
	if err := mw.send(message{Type: out}); err != nil {
		return err
	}
	if out == msgRunning && awaitForget(fr, time.Minute) {
		if l, _, err := lockRecord(id); err == nil {
			_ = l.remove()
			l.unlock()
		}
	}
	return nil
}

// settleTarget settles the target's copy of migration id: decision
// "commit" resumes a prepared copy (unless past its deadline), "abort" or
// a deadline kills it; "" settles only a copy whose relocate is gone and
// whose deadline passed (abort: the source never kills its copy without
// a running answer). It returns msgRunning or msgAborted, or
// msgReady for a copy still waiting for its relocate's decision.
func settleTarget(ctx context.Context, id, decision string, errw io.Writer) (string, error) {
	l, r, err := lockRecord(id)
	if err != nil {
		return "", err
	}
	defer l.unlock()
	if r == nil {
		_ = l.remove()
		return msgAborted, nil
	}
	if r.Role != "target" {
		return "", fmt.Errorf("migration %s left its source here, not a target", id)
	}
	switch targetSettle(r.State, decision, time.Now().After(r.Deadline), r.holderAlive()) {
	case tgtRunning:
		if r.State == stateRunning {
			return msgRunning, nil
		}
		r.State = stateRunning
		if err := l.save(r); err != nil {
			return "", err
		}
		return msgRunning, r.Held.Resume()
	case tgtPrepared:
		return msgReady, nil
	}
	// The undo hook (the service address down) runs while the copy's
	// locks still hold its peers off, then the locks go.
	err = r.Held.Kill(false)
	if r.Undo != "" {
		err = errors.Join(err, runHook(context.WithoutCancel(ctx), HookPreRestoreUndo, r.Undo, r.Env, errw))
	}
	err = errors.Join(err, r.Held.Unlock())
	return msgAborted, errors.Join(err, l.remove())
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
