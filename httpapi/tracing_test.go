package httpapi

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func spanContext(t *testing.T, sampled bool) context.Context {
	t.Helper()
	tid, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	if err != nil {
		t.Fatal(err)
	}
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags}))
}

// recording continues the trace in ctx with a span of a real SDK provider
// that samples as the caller says.
func recording(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(ctx, "request")
	t.Cleanup(func() { span.End() })
	return ctx
}

// TestDurationExemplar: a sampled request's duration carries its trace ID
// as the exemplar of its bucket; an unsampled or untraced one carries none,
// nor one the proxy does not trace itself (its spans are nowhere).
func TestDurationExemplar(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"sampled", recording(t, spanContext(t, true)), "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"not sampled", recording(t, spanContext(t, false)), ""},
		{"caller's sampled trace, tracing off", spanContext(t, true), ""},
		{"no trace", context.Background(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newServerMetrics().duration
			observeWithTrace(tc.ctx, h.WithLabelValues("/api/v1/query"), 0.3)
			var m dto.Metric
			if err := h.WithLabelValues("/api/v1/query").(prometheus.Metric).Write(&m); err != nil {
				t.Fatal(err)
			}
			if got := m.GetHistogram().GetSampleCount(); got != 1 {
				t.Fatalf("%d observations, want 1", got)
			}
			got := ""
			for _, b := range m.GetHistogram().GetBucket() {
				if e := b.GetExemplar(); e != nil {
					if b.GetUpperBound() < 0.3 || e.GetValue() != 0.3 {
						t.Errorf("exemplar %v in bucket le=%v", e, b.GetUpperBound())
					}
					for _, l := range e.GetLabel() {
						if l.GetName() == "trace_id" {
							got = l.GetValue()
						}
					}
				}
			}
			if got != tc.want {
				t.Errorf("exemplar trace_id %q, want %q", got, tc.want)
			}
		})
	}
}
