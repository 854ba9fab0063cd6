package cache

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/teststorage"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// The benchmark data: 200 instances with request counters and classic
// histogram buckets (1,400 series), 26 hours of 15s scrapes.
var (
	benchEnd  = time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC)
	benchOnce sync.Once
	benchDB   *teststorage.TestStorage
)

func benchStorage(b *testing.B) storage.Queryable {
	benchOnce.Do(func() {
		// Two-hour blocks as in Prometheus, so that a short query touches
		// only the chunks of its own time range.
		db, err := teststorage.NewWithError(func(o *tsdb.Options) {
			o.MinBlockDuration = (2 * time.Hour).Milliseconds()
			o.MaxBlockDuration = (2 * time.Hour).Milliseconds()
		})
		if err != nil {
			b.Fatal(err)
		}
		db.DisableCompactions()
		rng := rand.New(rand.NewPCG(5, 6))
		app := db.Appender(context.Background())
		type ser struct {
			ls     labels.Labels
			ref    storage.SeriesRef
			v      float64
			bucket bool // a bucket grows by at least what the one below it grew
		}
		var all []*ser
		for i := range 200 {
			inst := fmt.Sprintf("pod-%03d", i)
			for _, code := range []string{"200", "500"} {
				all = append(all, &ser{ls: labels.FromStrings("__name__", "http_requests_total", "job", "api", "instance", inst, "code", code)})
			}
			for j, le := range []string{"0.05", "0.1", "0.5", "1", "+Inf"} {
				all = append(all, &ser{ls: labels.FromStrings("__name__", "request_duration_seconds_bucket", "job", "api", "instance", inst, "le", le), bucket: j > 0})
			}
		}
		n := 0
		for t := benchEnd.Add(-26 * time.Hour); !t.After(benchEnd); t = t.Add(scrape) {
			inc := 0.0
			for _, s := range all {
				if !s.bucket {
					inc = 0
				}
				inc += float64(rng.IntN(20))
				s.v += inc
				ref, err := app.Append(s.ref, s.ls, t.UnixMilli(), s.v)
				if err != nil {
					b.Fatal(err)
				}
				s.ref = ref
				if n++; n%200000 == 0 {
					if err := app.Commit(); err != nil {
						b.Fatal(err)
					}
					app = db.Appender(context.Background())
				}
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
		if err := db.Compact(context.Background()); err != nil {
			b.Fatal(err)
		}
		benchDB = db
	})
	return benchDB
}

type panel struct {
	qs     string
	window time.Duration
	step   time.Duration
}

// dashboard is a typical service dashboard: rates, error ratios, latency
// quantiles, top talkers, over 6h at 30s and two of them over 24h at 2m.
var dashboard = []panel{
	{`sum by (code) (rate(http_requests_total[5m]))`, 6 * time.Hour, 30 * time.Second},
	{`sum(rate(http_requests_total{code="500"}[5m])) / sum(rate(http_requests_total[5m]))`, 6 * time.Hour, 30 * time.Second},
	{`histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m])))`, 6 * time.Hour, 30 * time.Second},
	{`histogram_quantile(0.5, sum by (le, instance) (rate(request_duration_seconds_bucket[5m])))`, 6 * time.Hour, 30 * time.Second},
	{`topk(5, sum by (instance) (rate(http_requests_total[5m])))`, 6 * time.Hour, 30 * time.Second},
	{`max_over_time(sum(rate(http_requests_total[5m]))[30m:1m])`, 6 * time.Hour, 30 * time.Second},
	{`sum by (code) (rate(http_requests_total[5m]))`, 24 * time.Hour, 2 * time.Minute},
	{`histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m])))`, 24 * time.Hour, 2 * time.Minute},
}

// runDashboard runs every panel ending at end, as Grafana does on a refresh.
func runDashboard(b *testing.B, e QueryEngine, q storage.Queryable, end time.Time) {
	ctx := context.Background()
	for _, p := range dashboard {
		qry, err := e.NewRangeQuery(ctx, q, promql.NewPrometheusQueryOpts(false, 0, nil), p.qs, end.Add(-p.window), end, p.step)
		if err != nil {
			b.Fatal(err)
		}
		if res := qry.Exec(ctx); res.Err != nil {
			b.Fatal(res.Err)
		}
		qry.Close()
	}
}

func benchCache(b *testing.B, split time.Duration, store Store, now *time.Time) *Engine {
	cfg := testConfig()
	cfg.SplitInterval = model.Duration(split)
	e := newEngine(cfg, newPromEngine(), nil, store, "bench", prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	e.now = func() time.Time { return *now }
	return e
}

// BenchmarkDashboard compares one dashboard load: without the cache, with an
// empty cache (cold), with every extent cached but the unsettled last minute
// (warm), with everything settled (warm-settled), and a refresh 30s later.
func BenchmarkDashboard(b *testing.B) {
	q := benchStorage(b)
	now := benchEnd
	b.Run("uncached", func(b *testing.B) {
		e := newPromEngine()
		for b.Loop() {
			runDashboard(b, e, q, now)
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			e := benchCache(b, DefaultSplitInterval, NewMemoryStore(DefaultMaxBytes), &now)
			runDashboard(b, e, q, now)
		}
	})
	b.Run("warm", func(b *testing.B) {
		e := benchCache(b, DefaultSplitInterval, NewMemoryStore(DefaultMaxBytes), &now)
		runDashboard(b, e, q, now)
		for b.Loop() {
			runDashboard(b, e, q, now)
		}
		b.ReportMetric(float64(len(dashboard))*float64(b.N)/b.Elapsed().Seconds(), "queries/s")
	})
	b.Run("warm-settled", func(b *testing.B) {
		e := benchCache(b, DefaultSplitInterval, NewMemoryStore(DefaultMaxBytes), &now)
		end := now.Add(-2 * time.Minute)
		runDashboard(b, e, q, end)
		for b.Loop() {
			runDashboard(b, e, q, end)
		}
		b.ReportMetric(float64(len(dashboard))*float64(b.N)/b.Elapsed().Seconds(), "queries/s")
	})
	b.Run("refresh", func(b *testing.B) {
		clock := now.Add(-12 * time.Hour)
		e := benchCache(b, DefaultSplitInterval, NewMemoryStore(DefaultMaxBytes), &clock)
		runDashboard(b, e, q, clock)
		for b.Loop() {
			clock = clock.Add(30 * time.Second)
			runDashboard(b, e, q, clock)
		}
	})
}

// timedEngine adds up the time spent executing the wrapped engine's queries.
type timedEngine struct {
	next *promql.Engine
	mu   sync.Mutex
	busy time.Duration
}

func (t *timedEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	qry, err := t.next.NewInstantQuery(ctx, q, opts, qs, ts)
	return &timedQuery{Query: qry, t: t}, err
}

func (t *timedEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	qry, err := t.next.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil {
		return nil, err
	}
	return &timedQuery{Query: qry, t: t}, nil
}

type timedQuery struct {
	promql.Query
	t *timedEngine
}

func (q *timedQuery) Exec(ctx context.Context) *promql.Result {
	began := time.Now()
	res := q.Query.Exec(ctx)
	q.t.mu.Lock()
	q.t.busy += time.Since(began)
	q.t.mu.Unlock()
	return res
}

// meteredStore counts what goes through a store.
type meteredStore struct {
	Store
	mu                  sync.Mutex
	keysRead, bytesRead int
	bytesWritten        int
}

func (m *meteredStore) Get(ctx context.Context, keys ...string) ([][]byte, error) {
	vals, err := m.Store.Get(ctx, keys...)
	m.mu.Lock()
	m.keysRead += len(keys)
	for _, v := range vals {
		m.bytesRead += len(v)
	}
	m.mu.Unlock()
	return vals, err
}

func (m *meteredStore) Set(ctx context.Context, ttl time.Duration, entries ...Entry) error {
	m.mu.Lock()
	for _, e := range entries {
		m.bytesWritten += len(e.Value)
	}
	m.mu.Unlock()
	return m.Store.Set(ctx, ttl, entries...)
}

// BenchmarkSplitInterval measures what a refresh costs in the steady state
// of a dashboard that has been open all day, for several extent lengths:
// each refresh reads every extent of the windows, runs the engine on the
// unsettled tail and rewrites the extent holding the cutoff.
func BenchmarkSplitInterval(b *testing.B) {
	q := benchStorage(b)
	redisAddr := e2eutil.StartRedis(b).Addr
	for _, backend := range []string{BackendMemory, BackendRedis} {
		for _, split := range []time.Duration{10 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour} {
			b.Run(fmt.Sprintf("%s/split=%s", backend, model.Duration(split)), func(b *testing.B) {
				var store Store = NewMemoryStore(1 << 30)
				if backend == BackendRedis {
					rs, err := NewRedisStore(RedisConfig{Addresses: []string{redisAddr}, Timeout: model.Duration(time.Second)})
					if err != nil {
						b.Fatal(err)
					}
					store = rs
					_ = rs.client.FlushAll(context.Background()).Err()
				}
				clock := benchEnd.Add(-time.Hour)
				ms := &meteredStore{Store: store}
				te := &timedEngine{next: newPromEngine()}
				cfg := testConfig()
				cfg.SplitInterval = model.Duration(split)
				e := newEngine(cfg, te, nil, ms, "bench", prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
				e.now = func() time.Time { return clock }
				defer func() { _ = e.Close() }()
				// A day of history, as if the dashboard had been open since.
				ctx := context.Background()
				for _, p := range dashboard {
					qry, err := e.NewRangeQuery(ctx, q, nil, p.qs, clock.Add(-p.window-24*time.Hour+time.Hour), clock, p.step)
					if err != nil {
						b.Fatal(err)
					}
					qry.Exec(ctx)
					qry.Close()
				}
				*ms = meteredStore{Store: store}
				te.busy = 0
				for b.Loop() {
					clock = clock.Add(30 * time.Second)
					if clock.After(benchEnd) {
						clock = benchEnd.Add(-time.Hour)
					}
					runDashboard(b, e, q, clock)
				}
				n := float64(b.N)
				// The cache's own share: everything but the engine's runs.
				b.ReportMetric((float64(b.Elapsed())-float64(te.busy))/n/1e6, "cache-ms/op")
				b.ReportMetric(float64(te.busy)/n/1e6, "engine-ms/op")
				b.ReportMetric(float64(ms.keysRead)/n, "keys/op")
				b.ReportMetric(float64(ms.bytesRead)/n/1024, "KiB-read/op")
				b.ReportMetric(float64(ms.bytesWritten)/n/1024, "KiB-written/op")
			})
		}
	}
}
