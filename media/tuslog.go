package media

import (
	"context"
	"log/slog"

	xslog "golang.org/x/exp/slog"
)

// tusLogger hands tusd (which logs through golang.org/x/exp/slog) a logger
// that forwards its warnings and errors to ours. Its Info lines (every
// request and response) are dropped: a busy node would log each chunk.
// tusd logs methods, paths, upload ids and its own messages, never request
// bodies; the path and the client's X-Request-ID are dropped too, so no
// client-supplied bytes reach the log (upload ids are validated before
// tusd sees them).
func tusLogger(l *slog.Logger) *xslog.Logger {
	return xslog.New(tusHandler{log: l.With("component", "media/tusd")})
}

type tusHandler struct {
	log   *slog.Logger
	attrs []any
}

func (h tusHandler) Enabled(_ context.Context, l xslog.Level) bool { return l >= xslog.LevelWarn }

func (h tusHandler) Handle(ctx context.Context, r xslog.Record) error {
	args := append([]any(nil), h.attrs...)
	r.Attrs(func(a xslog.Attr) bool {
		if !clientSupplied(a.Key) {
			args = append(args, a.Key, a.Value.String())
		}
		return true
	})
	h.log.Log(ctx, slog.Level(r.Level), r.Message, args...)
	return nil
}

func (h tusHandler) WithAttrs(as []xslog.Attr) xslog.Handler {
	attrs := append([]any(nil), h.attrs...)
	for _, a := range as {
		if !clientSupplied(a.Key) {
			attrs = append(attrs, a.Key, a.Value.String())
		}
	}
	return tusHandler{log: h.log, attrs: attrs}
}

func (h tusHandler) WithGroup(string) xslog.Handler { return h }

// clientSupplied names the attributes of tusd's logs that carry raw
// request bytes.
func clientSupplied(key string) bool { return key == "path" || key == "requestId" }
