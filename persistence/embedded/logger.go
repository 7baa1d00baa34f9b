package embedded

import (
	"context"
	"fmt"
	"log/slog"
)

// pebbleLogger routes Pebble's logs to slog. Pebble's Infof reports routine
// events (WAL recovery, compactions) that would drown a service log, so they
// go to Debug.
type pebbleLogger struct {
	log *slog.Logger
}

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf must not return: Pebble calls it when continuing could corrupt
// data. Panicking instead of os.Exit keeps the stack and lets deferred
// cleanups in the caller's goroutine run.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "fatal", true)
	panic("pebble: " + msg)
}
