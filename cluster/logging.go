package cluster

import (
	"context"
	"log/slog"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
)

// NewActorSystem builds an actor system that logs through logger (with
// component=protoactor) instead of Proto.Actor's default tint handler on
// stderr. Proto.Actor logs every dead letter and every supervised panic at
// Info; those are routine here (late replies after a timeout, restarts that
// the cluster logs itself at Warn), so they are demoted to Debug, as is the
// Error it logs for connections closed by an orderly shutdown.
func NewActorSystem(logger *slog.Logger) *actor.ActorSystem {
	if logger == nil {
		logger = slog.Default()
	}
	base := slog.New(demoteHandler{inner: logger.Handler()}).With("component", "protoactor")
	return actor.NewActorSystem(actor.WithLoggerFactory(func(system *actor.ActorSystem) *slog.Logger {
		return base.With("system", system.ID)
	}))
}

// noisyInfo are Proto.Actor's Info messages that are Debug for Courier.
var noisyInfo = map[string]bool{
	"[DeadLetter]":              true,
	"[ACTOR] Recovering":        true,
	"EndpointReader is closing": true,
}

// demoteHandler lowers routine records to Debug and passes the rest on.
type demoteHandler struct{ inner slog.Handler }

func (h demoteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// routine reports records that are noise for Courier: dead letters and
// supervised restarts at Info, and the Error Proto.Actor logs when a
// connection ends in an orderly shutdown (this node's or a peer's).
func routine(r slog.Record) bool {
	switch r.Level {
	case slog.LevelInfo:
		return noisyInfo[r.Message]
	case slog.LevelError:
		if r.Message != "EndpointWriter lost connection" {
			return false
		}
		closing := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				msg := a.Value.String()
				closing = strings.Contains(msg, "client connection is closing") || strings.Contains(msg, "graceful_stop")
			}
			return !closing
		})
		return closing
	}
	return false
}

func (h demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	if routine(r) {
		if !h.inner.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		d := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool { d.AddAttrs(a); return true })
		r = d
	}
	return h.inner.Handle(ctx, r)
}

func (h demoteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteHandler{inner: h.inner.WithAttrs(as)}
}

func (h demoteHandler) WithGroup(name string) slog.Handler {
	return demoteHandler{inner: h.inner.WithGroup(name)}
}
