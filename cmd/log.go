package cmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/relocate/relocate/transfer"
)

// cliHandler turns the library's log records into relocate's voice on
// stderr, by verbosity, and into time-stamped lines in --log-file:
//
//	warnings                     always: "relocate: warning: ..."
//	what the target printed      always: "relocate: target: ..."
//	Info (phases and timings,    with -v: "relocate: ..."
//	refusals and why)
//	Debug (the target's own log, with -vv
//	phase starts)
//
// The log file gets every record.
type cliHandler struct {
	mu      *sync.Mutex
	stderr  io.Writer
	file    io.Writer // nil without --log-file
	verbose int
	attrs   []slog.Attr
	phase   *phaseTracker
}

func newCLIHandler(stderr, file io.Writer, verbose int, phase *phaseTracker) *cliHandler {
	return &cliHandler{mu: &sync.Mutex{}, stderr: stderr, file: file, verbose: verbose, phase: phase}
}

// Enabled: every record, for the phase tracker.
func (h *cliHandler) Enabled(context.Context, slog.Level) bool { return true }

// phaseTracker remembers the last phase begun: the one a failure happened
// in, for the --json error object.
type phaseTracker struct {
	mu   sync.Mutex
	name string
}

func (p *phaseTracker) saw(r slog.Record) {
	if p == nil || r.Message != "phase start" {
		return
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "phase" {
			p.mu.Lock()
			p.name = a.Value.String()
			p.mu.Unlock()
			return false
		}
		return true
	})
}

func (p *phaseTracker) last() string {
	if p == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.name
}

func (h *cliHandler) toStderr(l slog.Level) bool {
	switch {
	case l >= slog.LevelWarn || l == transfer.LevelOutput:
		return true
	case l >= slog.LevelInfo:
		return h.verbose >= 1
	}
	return h.verbose >= 2
}

func (h *cliHandler) Handle(_ context.Context, r slog.Record) error {
	h.phase.saw(r)
	if h.file == nil && !h.toStderr(r.Level) {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if a.Key == "from" {
			return true
		}
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " \t\"=") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, v)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	line := oneLineString(b.String())
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file != nil {
		level := r.Level.String()
		if r.Level == transfer.LevelOutput {
			level = "OUTPUT"
		}
		fmt.Fprintf(h.file, "%s %s %s\n", r.Time.Format("2006-01-02T15:04:05.000000Z07:00"), level, line)
	}
	if !h.toStderr(r.Level) {
		return nil
	}
	switch {
	case r.Level >= slog.LevelWarn:
		fmt.Fprintf(h.stderr, "relocate: warning: %s\n", line)
	case r.Level == transfer.LevelOutput:
		fmt.Fprintf(h.stderr, "relocate: target: %s\n", r.Message)
	default:
		fmt.Fprintf(h.stderr, "relocate: %s\n", line)
	}
	return nil
}

func (h *cliHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *cliHandler) WithGroup(string) slog.Handler { return h }

func oneLineString(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// openLog sets up the logger of the run: on stderr by -v, and in the
// --log-file (appended, mode 0600).
func (g *globals) openLog(stderr io.Writer) error {
	var file io.Writer
	if g.logFile != "" {
		f, err := os.OpenFile(g.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return usageError{fmt.Errorf("--log-file: %w", err)}
		}
		g.closeLog = f.Close
		file = f
		fmt.Fprintf(f, "%s INFO start %s args=%q\n", time.Now().Format("2006-01-02T15:04:05.000000Z07:00"), versionLine(), os.Args[1:])
	}
	g.log = slog.New(newCLIHandler(stderr, file, g.verbose, g.phase))
	return nil
}

// logger is the run's logger (a silent one before the flags are parsed).
func (g *globals) logger() *slog.Logger {
	if g.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.log
}
