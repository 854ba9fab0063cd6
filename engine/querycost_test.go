package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
)

// costTestStorage holds series counters of 60 samples each, one every 15 s.
func costTestStorage(tb testing.TB, series int) storage.Storage {
	db := teststorage.New(tb)
	app := db.Appender(context.Background())
	for i := range series {
		ls := labels.FromStrings("__name__", "requests_total", "pod", fmt.Sprintf("p%d", i), "namespace", fmt.Sprintf("ns%d", i%4))
		for j := range 240 {
			if _, err := app.Append(0, ls, int64(j)*15_000, float64(j*(i+1))); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		tb.Fatal(err)
	}
	return db
}

// TestQueryCostOnlyWithALimit: Prometheus' query-cost accounting (a
// context check and a count per sample) runs only for a query that carries
// a samples limit; without one the query runs on the engine that keeps no
// account, as one Prometheus does by default, and a limit is still
// enforced when given. Which engine ran shows in the engines' own metrics.
func TestQueryCostOnlyWithALimit(t *testing.T) {
	db := costTestStorage(t, 20)
	reg := prometheus.NewRegistry()
	ng := NewPromQL(DefaultConfig(), reg, nil)
	t.Cleanup(func() { _ = ng.Close() })
	evaluated := func(accounting string) uint64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "prometheus_engine_query_duration_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				var cost, slice string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "query_cost":
						cost = l.GetValue()
					case "slice":
						slice = l.GetValue()
					}
				}
				if cost == accounting && slice == "inner_eval" {
					return m.GetSummary().GetSampleCount()
				}
			}
		}
		return 0
	}
	const qs = `sum by (namespace) (rate(requests_total[1m]))`
	run := func(opts promql.QueryOpts) *promql.Result {
		t.Helper()
		q, err := ng.NewRangeQuery(context.Background(), db, opts, qs, time.UnixMilli(0), time.UnixMilli(3_585_000), 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Close)
		return q.Exec(context.Background())
	}
	plain := run(nil)
	if plain.Err != nil {
		t.Fatal(plain.Err)
	}
	if off, on := evaluated("off"), evaluated("enforced"); off != 1 || on != 0 {
		t.Errorf("without a limit: evaluated %d times without the account, %d with it; want 1 and 0", off, on)
	}
	generous := run(promql.NewPrometheusQueryOptsWithLimits(false, 0, 0, 1<<40, 0, nil))
	if generous.Err != nil {
		t.Fatal(generous.Err)
	}
	if off, on := evaluated("off"), evaluated("enforced"); off != 1 || on != 1 {
		t.Errorf("with a limit: evaluated %d times without the account, %d with it; want 1 and 1", off, on)
	}
	if plain.Value.String() != generous.Value.String() {
		t.Error("the same query answers differently with and without the account")
	}
	tight := run(promql.NewPrometheusQueryOptsWithLimits(false, 0, 0, 100, 0, nil))
	var tooMany promql.ErrTooManySamplesRead
	if !errors.As(tight.Err, &tooMany) {
		t.Errorf("a limit of 100 samples: %v; want ErrTooManySamplesRead", tight.Err)
	}
}

// BenchmarkQueryCost compares one query evaluated without a samples limit
// (the plain engine) and with one (the engine keeping Prometheus' cost
// account): the ratio is what the accounting costs every query that does
// not need it.
func BenchmarkQueryCost(b *testing.B) {
	db := costTestStorage(b, 500)
	ng := NewPromQL(DefaultConfig(), nil, nil)
	b.Cleanup(func() { _ = ng.Close() })
	for _, tc := range []struct {
		name string
		opts promql.QueryOpts
	}{{"no_limit", nil}, {"with_limit", promql.NewPrometheusQueryOptsWithLimits(false, 0, 0, 1<<40, 0, nil)}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				q, err := ng.NewRangeQuery(context.Background(), db, tc.opts, `sum by (namespace) (rate(requests_total[1m]))`, time.UnixMilli(0), time.UnixMilli(3_585_000), 15*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if res := q.Exec(context.Background()); res.Err != nil {
					b.Fatal(res.Err)
				}
				q.Close()
			}
		})
	}
}
