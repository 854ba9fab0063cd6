package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/promql"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// evalLoad evaluates `load` over the stream data's hour, a step a minute,
// and renders the matrix (or the error).
func evalLoad(t *testing.T, qe promql.QueryEngine, f *Fanout) (string, error) {
	t.Helper()
	start := time.Unix(streamStart, 0)
	q, err := qe.NewRangeQuery(context.Background(), f, nil, `load`, start, start.Add(time.Hour), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		return "", res.Err
	}
	return res.Value.String(), nil
}

// TestReEvaluatedAfterBreak: a group's answer that breaks off after some
// series reached the engine fails that evaluation; the query is evaluated
// once more with that replica tried last, and answers what the backend
// holds. A group with no other replica still fails, after one more try.
func TestReEvaluatedAfterBreak(t *testing.T) {
	prom := e2eutil.StartPrometheus(t, e2eutil.V3, strings.NewReader(streamData()), e2eutil.WithName("reeval"))
	ref, bodyBytes := countingFanout(t, prom.URL)
	ng := proxyEngine(t)
	want, err := evalLoad(t, ng, ref)
	if err != nil || strings.Count(want, "\n") < 40 {
		t.Fatalf("reference: %v\n%s", err, want)
	}
	// Half the answer's bytes: past the first series (the subtest checks
	// that without re-evaluation the query fails mid-stream).
	half := int(bodyBytes.Load()) / 2

	t.Run("other replica", func(t *testing.T) {
		cut := e2eutil.CloseMidStream(t, prom.URL, half)
		pair := discovery.StaticGroup{Name: "pair", URLs: []string{cut.URL, prom.URL}}
		plain, _ := newTestFanout(t, discovery.PartialWarn, pair) // round-robin starts at the cut replica
		defer plain.Close()
		if _, err := evalLoad(t, ng, plain); !errors.As(err, new(*StreamError)) {
			t.Fatalf("without re-evaluation: %v; want the query to fail mid-stream", err)
		}
		f, _ := newTestFanout(t, discovery.PartialWarn, pair)
		defer f.Close()
		reg := prometheus.NewRegistry()
		re, err := NewReEvaluating(ng, reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		requests := cut.Requests()
		got, err := evalLoad(t, re, f) // starts at the cut replica too
		if err != nil || got != want {
			t.Fatalf("re-evaluated answer differs from the backend's: %v\n%s\nwant\n%s", err, got, want)
		}
		if cut.Requests()-requests != 1 {
			t.Errorf("the cut replica was asked %d times; want once: the second evaluation tries it last", cut.Requests()-requests)
		}
		if n := testutil.ToFloat64(re.again); n != 1 {
			t.Errorf("prometheus_proxy_reevaluations_total = %v, want 1", n)
		}
	})
	t.Run("no other replica", func(t *testing.T) {
		cut := e2eutil.CloseMidStream(t, prom.URL, half)
		f, _ := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "single", URLs: []string{cut.URL}})
		defer f.Close()
		re, err := NewReEvaluating(ng, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = evalLoad(t, re, f)
		if se := (*StreamError)(nil); !errors.As(err, &se) || se.Group != "single" {
			t.Fatalf("err = %v; want the group's StreamError", err)
		}
		if cut.Cuts() != 2 {
			t.Errorf("%d cuts; want 2 (one per evaluation, no more)", cut.Cuts())
		}
	})
}

// TestOrderForContext: the replicas a previous evaluation saw break off go
// last, the others keep their order, and other groups are not touched.
func TestOrderForContext(t *testing.T) {
	rs := []*discovery.Replica{{URL: "http://a:9090/"}, {URL: "http://b:9090"}, {URL: "http://c:9090"}}
	ctx := withReplicaLast(context.Background(), "g", "http://a:9090")
	ctx = withReplicaLast(ctx, "other", "http://b:9090")
	var got []string
	for _, r := range orderForContext(ctx, "g", rs) {
		got = append(got, r.URL)
	}
	if strings.Join(got, " ") != "http://b:9090 http://c:9090 http://a:9090/" {
		t.Errorf("order %v", got)
	}
	if out := orderForContext(context.Background(), "g", rs); &out[0] != &rs[0] {
		t.Error("without a named replica the order is not the group's own")
	}
}

// TestCallsTryTheNamedReplicaLast: with a replica named in the context,
// every call of its group starts at another replica, whatever the
// round-robin's turn; the named one still answers when it is the only one.
func TestCallsTryTheNamedReplicaLast(t *testing.T) {
	f, _ := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "a", URLs: []string{"http://one", "http://two"}},
		discovery.StaticGroup{Name: "b", URLs: []string{"http://three"}})
	ctx := withReplicaLast(context.Background(), "a", "http://one")
	ctx = withReplicaLast(ctx, "b", "http://three")
	for range 4 { // round-robin starts on each replica of a in turn
		out, _, err := fanOut(ctx, f, nil, "read", nil, answer)
		if err != nil || strings.Join(out, " ") != "http://two http://three" {
			t.Fatalf("out=%v err=%v; want a's other replica and b's only one", out, err)
		}
	}
}
