package tracing

import (
	"context"
	"log/slog"
)

// LogHandler adds trace_id and span_id to every record logged with a
// context that holds a span (Logger.InfoContext and friends), so a log
// line of a traced request leads to its trace and back.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(logHandler); ok {
		return h
	}
	return logHandler{h}
}

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if traceID, spanID, _ := IDs(ctx); traceID != "" {
			r = r.Clone()
			r.AddAttrs(slog.String("trace_id", traceID), slog.String("span_id", spanID))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(attrs)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}
