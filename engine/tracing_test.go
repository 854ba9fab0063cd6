package engine

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
)

// TestFanOutTracesFailover: a group's read is a span with one child per
// replica tried, named by its redacted URL; a failed replica's span says
// so and the group's span records the failover to the next.
func TestFanOutTracesFailover(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	f, _ := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "a", URLs: []string{"http://u:secret@bad-1", "http://good-1"}})
	for range 2 { // round-robin starts on each replica in turn
		ctx, root := tp.Tracer("test").Start(context.Background(), "request")
		if _, _, err := fanOut(ctx, f, nil, "read", nil, answer); err != nil {
			t.Fatal(err)
		}
		root.End()
	}
	var groups, replicas []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "group read":
			groups = append(groups, s)
		case "replica read":
			replicas = append(replicas, s)
		}
	}
	if len(groups) != 2 || len(replicas) != 3 {
		t.Fatalf("%d group and %d replica spans, want 2 and 3 (one read failed over)", len(groups), len(replicas))
	}
	failovers := 0
	for _, g := range groups {
		for _, e := range g.Events() {
			if e.Name == "failover" {
				failovers++
			}
		}
	}
	if failovers != 1 {
		t.Errorf("%d failover events, want 1", failovers)
	}
	for _, r := range replicas {
		var replica string
		for _, a := range r.Attributes() {
			if a.Key == "replica" {
				replica = a.Value.AsString()
			}
		}
		if strings.Contains(replica, "secret") {
			t.Errorf("replica %q: the password is not redacted", replica)
		}
		failed := r.Status().Code == codes.Error
		if failed != strings.Contains(replica, "bad") {
			t.Errorf("replica %s: span failed=%v", replica, failed)
		}
		parent := r.Parent().SpanID()
		if parent != groups[0].SpanContext().SpanID() && parent != groups[1].SpanContext().SpanID() {
			t.Errorf("replica %s: span is not a child of a group read", replica)
		}
	}
}
