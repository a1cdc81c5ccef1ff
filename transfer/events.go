package transfer

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strings"
	"time"
)

// transfer reports what it does as log records, never as text for a
// terminal: the caller's logger (carried by the context, see WithLog)
// decides what reaches the user and what goes to a log file.
//
// Levels: Debug and Info are the account of a migration (phases with
// their durations, refusals and why); LevelOutput is what the target or a
// hook printed for the user; Warn is something the user must act on.

// LevelOutput is the level of lines the target printed for the user.
const LevelOutput = slog.Level(2)

type logKey struct{}

// WithLog returns ctx carrying log for Migrate, Check and Receive.
func WithLog(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, log)
}

// LogFrom is ctx's logger (a discarding one if it has none).
func LogFrom(ctx context.Context) *slog.Logger { return logFrom(ctx) }

func logFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// Phase logs the start of a step (of a migration, or a dump or restore the
// command line runs) on ctx's logger; the returned func logs its end with
// its duration and, if *err is set, the failure.
func Phase(ctx context.Context, name string) func(err *error) { return phase(ctx, name) }

func phase(ctx context.Context, name string) func(err *error) {
	log := logFrom(ctx)
	start := time.Now()
	log.Debug("phase start", "phase", name)
	return func(err *error) {
		d := time.Since(start).Round(time.Microsecond)
		if err != nil && *err != nil {
			log.Info("phase failed", "phase", name, "duration", d, "error", oneLine(*err))
			return
		}
		log.Info("phase done", "phase", name, "duration", d)
	}
}

// TargetLogPrefix starts the lines of the target's stderr that are its
// log rather than words for the user: the source files them in its own
// log (so a failure on the target can be read at the source).
const TargetLogPrefix = "relocate-log: "

// TargetLogHandler is the handler `relocate receive` logs with: every
// record, one line each, prefixed with TargetLogPrefix, on w (its stderr,
// which the source reads).
func TargetLogHandler(w io.Writer) slog.Handler {
	return slog.NewTextHandler(&prefixWriter{w: w, prefix: TargetLogPrefix}, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // the source stamps it
			}
			return a
		},
	})
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// forwardTarget reads the target's stderr: its log lines go to the log
// (source="target"), the others, for the user, at LevelOutput. The last
// line for the user is kept for errors.
func forwardTarget(ctx context.Context, r io.Reader, tail *lineTail) {
	log := logFrom(ctx)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, TargetLogPrefix); ok {
			log.Debug("target log", "line", rest)
			continue
		}
		if strings.TrimSpace(line) != "" {
			tail.set(line)
		}
		log.Log(ctx, LevelOutput, line, "from", "target")
	}
}

// Expected marks the failures of a migration that are answers, not bugs
// (see ckpt.ExpectedError): the host could not be reached, the target
// refused, a hook failed, the migration was rolled back.
func (e *DialError) Expected() bool       { return true }
func (e *RefusedError) Expected() bool    { return true }
func (e *RolledBackError) Expected() bool { return true }
func (e *HookError) Expected() bool       { return true }
func (e *targetError) Expected() bool     { return true }
