package httpapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// startRequestSpan starts the request's span, continuing the caller's trace
// when it sent a traceparent (Grafana does when its own tracing is on).
func (s *Server) startRequestSpan(c echo.Context, endpoint string) (context.Context, trace.Span) {
	r := c.Request()
	ctx := tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracing.Tracer().Start(ctx, r.Method+" "+endpoint,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", endpoint),
		))
	ctx = context.WithValue(ctx, requestSpanKey{}, span)
	return ctx, span
}

type requestSpanKey struct{}

// endRequestSpan records who asked and how it ended. The namespace is
// known only once the request was authenticated.
func endRequestSpan(span trace.Span, p *tenancy.Policy, code int) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	if p != nil {
		span.SetAttributes(attribute.String("tenant.namespace", tenantLabel(p)))
	}
	if code >= http.StatusInternalServerError {
		span.SetStatus(codes.Error, http.StatusText(code))
	}
}

// observeWithTrace observes v, with the request's trace ID as the
// exemplar when the proxy exports its trace: a slow bucket then leads to a
// trace. A caller's sampled traceparent alone is not enough: with tracing
// off the proxy's span only passes the caller's IDs on.
func observeWithTrace(ctx context.Context, o prometheus.Observer, v float64) {
	if traceID, _, sampled := tracing.IDs(ctx); sampled && trace.SpanFromContext(ctx).IsRecording() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": traceID})
			return
		}
	}
	o.Observe(v)
}

// encodingQuery starts the span of writing the answer once the engine is
// done, under the request's span: Prometheus' handler encodes and writes
// the answer, then closes the query, which ends the span.
type encodingQuery struct {
	promql.Query
	span trace.Span
}

func (q *encodingQuery) Exec(ctx context.Context) *promql.Result {
	res := q.Query.Exec(ctx)
	q.span = startEncodingSpan(ctx)
	return res
}

func (q *encodingQuery) Close() {
	q.Query.Close()
	if q.span != nil {
		q.span.End()
	}
}

func startEncodingSpan(ctx context.Context) trace.Span {
	parent, ok := ctx.Value(requestSpanKey{}).(trace.Span)
	if !ok || !parent.IsRecording() {
		return nil
	}
	_, span := tracing.StartSpan(trace.ContextWithSpan(ctx, parent), "encode response")
	return span
}
