package ckpt

import (
	"log/slog"
	"time"
)

// step logs, at debug level on log (if any), how long the step name of a
// dump or restore took, when the returned func is called.
func step(log *slog.Logger, name string) func() {
	if log == nil {
		return func() {}
	}
	start := time.Now()
	return func() {
		log.Debug("step", "step", name, "duration", time.Since(start).Round(time.Microsecond))
	}
}

func logDebug(log *slog.Logger, msg string, args ...any) {
	if log != nil {
		log.Debug(msg, args...)
	}
}
