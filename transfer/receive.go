package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/relocate/relocate/ckpt"
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
	fr := newFrameReader(in)
	mw := &messageWriter{w: out}
	fail := func(err error) error {
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
	if err := json.Unmarshal(payload, &h); err != nil || h.Survey == nil {
		return fail(fmt.Errorf("protocol: bad hello from the source: %v", err))
	}
	if h.Protocol != ProtocolVersion {
		return fail(fmt.Errorf("protocol %d here, %d at the source: use the same relocate on both sides", ProtocolVersion, h.Protocol))
	}
	problems := h.Survey.Check(h.PIDNS)
	if h.TimeNS {
		if _, err := os.Stat("/proc/self/ns/time"); err != nil {
			problems = append(problems, "this kernel has no time namespaces (use --no-timens)")
		}
	}
	if err := mw.send(message{Type: msgHello, Protocol: ProtocolVersion, Problems: problems}); err != nil {
		return err
	}
	if len(problems) > 0 || h.CheckOnly {
		return nil
	}

	target, _ := os.Hostname()
	var cp *ckpt.Checkpoint
	opts := ckpt.RestoreOptions{
		TimeNS: h.TimeNS,
		PIDNS:  h.PIDNS,
		BeforeNet: func(c *ckpt.Checkpoint) error {
			cp = c
			return runHook(ctx, HookPreRestore, h.Hooks[HookPreRestore], hookEnv(HookPreRestore, c, h.Source, target), errw)
		},
		Confirm: func(res *ckpt.RestoreResult) error {
			if cp != nil {
				env := hookEnv(HookPostRestore, cp, h.Source, target)
				if err := runHook(ctx, HookPostRestore, h.Hooks[HookPostRestore], env, errw); err != nil {
					return err
				}
			}
			err := mw.send(message{Type: msgRunning, PID: res.PID, Processes: res.Processes, Threads: res.Threads,
				BytesRead: res.BytesRead, RestoreMS: res.Duration.Milliseconds(), TimeNSUsed: h.TimeNS})
			if err != nil {
				return fmt.Errorf("tell the source: %w", err)
			}
			// Only the source may decide now: it resumes its own tree
			// unless it commits.
			return fr.decision()
		},
	}
	if _, err := ckpt.Restore(ctx, fr, opts); err != nil {
		var ab *abortedError
		if errors.As(err, &ab) {
			return err // the source knows why
		}
		return fail(err)
	}
	return mw.send(message{Type: msgDone})
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
