package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/relocate/relocate/ckpt"
)

// Resolve settles migration id from this host's record (`relocate
// resolve`): decision "" asks the other side and follows the protocol's
// rule (see commit.go); "commit" or "abort" is the user's decision when
// the other side cannot be reached (it still asks first, and follows the
// target's answer when there is one). It returns what it did, in a line.
func Resolve(ctx context.Context, id, decision string, stderr io.Writer) (string, error) {
	l, r, err := lockRecord(id)
	if err != nil {
		return "", err
	}
	if r == nil {
		_ = l.remove()
		l.unlock()
		return "", ckpt.ExpectedError(fmt.Sprintf("no migration %s recorded on this host (settled already?)", id))
	}
	if r.Role == "target" {
		l.unlock()
		return settleHere(ctx, id, decision, stderr)
	}
	defer l.unlock()
	if r.holderAlive() {
		return "", fmt.Errorf("migration %s is still being settled by relocate pid %d", id, r.Holder)
	}
	ask := decision
	if ask == "" {
		ask = "commit" // the source decided to commit before it was in doubt
	}
	out, forget, err := askTarget(ctx, r, ask, stderr)
	if err != nil {
		out = ""
	}
	switch sourceSettle(out, decision) {
	case srcKilled:
		kerr := r.Held.Kill(true)
		if forget != nil {
			forget()
		}
		if kerr != nil {
			return "", kerr
		}
		return fmt.Sprintf("pid %d runs on %s; its frozen copy here was removed", r.PID, r.Other), l.remove()
	case srcResumed:
		if rerr := r.Held.Resume(); rerr != nil {
			return "", rerr
		}
		if r.Undo != "" {
			if herr := runHook(ctx, HookRollback, r.Undo, r.Env, stderr); herr != nil {
				fmt.Fprintf(stderr, "relocate: warning: %v\n", herr)
			}
		}
		return fmt.Sprintf("pid %d runs on here; %s has no copy", r.PID, r.Other), l.remove()
	}
	return "", fmt.Errorf("cannot reach %s: %w; when you know whether pid %d runs there, run relocate resolve %s --commit (it runs there) or --abort (it does not)", r.Other, err, r.PID, id)
}

// settleHere settles a target's record on its own host.
func settleHere(ctx context.Context, id, decision string, stderr io.Writer) (string, error) {
	out, err := settleTarget(ctx, id, decision, stderr)
	if err != nil {
		return "", err
	}
	switch out {
	case msgRunning:
		return fmt.Sprintf("migration %s: the copy here runs; on the source, relocate resolve %s removes the frozen one", id, id), nil
	case msgAborted:
		return fmt.Sprintf("migration %s: no copy here (aborted); on the source, relocate resolve %s resumes it", id, id), nil
	}
	return "", errors.New("the copy here is still waiting for its relocate's decision (wait for its deadline, or give --commit or --abort)")
}
