package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/redis/go-redis/v9"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// The test data: two days of 15s scrapes ending at dataEnd, which is also
// "now" for the engine under test unless a test moves its clock.
var (
	dataStart = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	dataEnd   = dataStart.Add(48 * time.Hour)
	scrape    = 15 * time.Second

	testDB *teststorage.TestStorage
)

func TestMain(m *testing.M) {
	redis.SetLogger(redisLog{slog.New(slog.DiscardHandler)}) // the tests kill Redis on purpose
	db, err := teststorage.NewWithError()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	db.DisableCompactions()
	if err := fillTestData(db); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testDB = db
	code := m.Run()
	_ = db.Close()
	os.Exit(code)
}

// fillTestData writes counters with a reset, classic and native histograms,
// gauges holding awkward floats, a series with a gap, one that starts late and
// one that ends with a staleness marker.
func fillTestData(db storage.Appendable) error {
	rng := rand.New(rand.NewPCG(1, 2))
	app := db.Appender(context.Background())
	n := 0
	add := func(ls labels.Labels, t time.Time, v float64) error {
		n++
		if n%50000 == 0 {
			if err := app.Commit(); err != nil {
				return err
			}
			app = db.Appender(context.Background())
		}
		_, err := app.Append(0, ls, t.UnixMilli(), v)
		return err
	}
	addH := func(ls labels.Labels, t time.Time, h *histogram.FloatHistogram) error {
		n++
		_, err := app.AppendHistogram(0, ls, t.UnixMilli(), nil, h)
		return err
	}

	counters := map[string]float64{}
	buckets := []string{"0.1", "0.5", "1", "+Inf"}
	special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 1e-300, 5e-324, math.MaxFloat64, -1e300}
	native := map[string]*histogram.FloatHistogram{}
	for i, t := 0, dataStart; !t.After(dataEnd); i, t = i+1, t.Add(scrape) {
		since := t.Sub(dataStart)
		for _, inst := range []string{"i0", "i1", "i2", "i3"} {
			for _, code := range []string{"200", "500"} {
				ls := labels.FromStrings("__name__", "http_requests_total", "job", "api", "instance", inst, "code", code)
				k := ls.String()
				if code == "500" {
					counters[k] += float64(rng.IntN(3))
				} else {
					counters[k] += float64(rng.IntN(20))
				}
				if inst == "i1" && code == "200" && since == 20*time.Hour {
					counters[k] = 0 // counter reset
				}
				if err := add(ls, t, counters[k]); err != nil {
					return err
				}
			}
			up := 1.0
			if inst == "i2" && since >= 30*time.Hour && since < 31*time.Hour {
				up = 0
			}
			gap := inst == "i3" && since >= 40*time.Hour && since < 41*time.Hour
			if !gap {
				if err := add(labels.FromStrings("__name__", "up", "job", "api", "instance", inst), t, up); err != nil {
					return err
				}
			}
			cum := 0.0
			for _, le := range buckets {
				cum += float64(rng.IntN(5))
				ls := labels.FromStrings("__name__", "request_duration_seconds_bucket", "job", "api", "instance", inst, "le", le)
				counters[ls.String()] += cum
				if err := add(ls, t, counters[ls.String()]); err != nil {
					return err
				}
			}
			sumL := labels.FromStrings("__name__", "request_duration_seconds_sum", "job", "api", "instance", inst)
			counters[sumL.String()] += rng.Float64() * 3
			if err := add(sumL, t, counters[sumL.String()]); err != nil {
				return err
			}
		}
		dbL := labels.FromStrings("__name__", "http_requests_total", "job", "db", "instance", "d0", "code", "200")
		counters[dbL.String()] += float64(rng.IntN(7))
		if err := add(dbL, t, counters[dbL.String()]); err != nil {
			return err
		}
		for _, room := range []string{"a", "b"} {
			v := 20 + 5*math.Sin(float64(i)/300) + rng.Float64()/3
			if room == "b" && i%97 == 0 {
				v = special[(i/97)%len(special)]
			}
			if err := add(labels.FromStrings("__name__", "temperature", "room", room), t, v); err != nil {
				return err
			}
		}
		if since <= 10*time.Hour {
			ls := labels.FromStrings("__name__", "early_series", "job", "api")
			v := float64(i)
			if since == 10*time.Hour {
				v = math.Float64frombits(value.StaleNaN)
			}
			if err := add(ls, t, v); err != nil {
				return err
			}
		}
		if since >= 45*time.Hour {
			if err := add(labels.FromStrings("__name__", "late_series", "job", "api"), t, float64(i%11)); err != nil {
				return err
			}
		}
		for _, inst := range []string{"i0", "i1"} {
			ls := labels.FromStrings("__name__", "rpc_latency_seconds", "job", "api", "instance", inst)
			h := native[inst]
			if h == nil {
				h = &histogram.FloatHistogram{
					Schema: 0, ZeroThreshold: 1e-3,
					PositiveSpans:   []histogram.Span{{Offset: -2, Length: 3}, {Offset: 1, Length: 2}},
					PositiveBuckets: make([]float64, 5),
					NegativeSpans:   []histogram.Span{{Offset: 0, Length: 1}},
					NegativeBuckets: make([]float64, 1),
				}
			}
			h = h.Copy()
			h.CounterResetHint = histogram.NotCounterReset
			for b := range h.PositiveBuckets {
				d := float64(rng.IntN(4))
				h.PositiveBuckets[b] += d
				h.Count += d
				h.Sum += d * math.Pow(2, float64(b-2))
			}
			if rng.IntN(3) == 0 {
				h.NegativeBuckets[0]++
				h.Count++
				h.Sum -= 0.7
			}
			if rng.IntN(4) == 0 {
				h.ZeroCount++
				h.Count++
			}
			native[inst] = h
			if err := addH(ls, t, h); err != nil {
				return err
			}
		}
	}
	return app.Commit()
}

func newPromEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		Logger:                   slog.New(slog.DiscardHandler),
		Timeout:                  2 * time.Minute,
		MaxSamples:               50e6,
		NoStepSubqueryIntervalFn: func(int64) int64 { return 60000 },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		Parser:                   parser.NewParser(parser.Options{EnableExperimentalFunctions: true}),
	})
}

// span is one execution of the wrapped engine.
type span struct{ start, end time.Time }

// countingEngine records every query the cache executes on the real engine.
type countingEngine struct {
	next *promql.Engine
	mu   sync.Mutex
	runs []span
}

func (c *countingEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	qry, err := c.next.NewInstantQuery(ctx, q, opts, qs, ts)
	if err != nil {
		return nil, err
	}
	return &countingQuery{Query: qry, c: c, s: span{ts, ts}}, nil
}

func (c *countingEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	qry, err := c.next.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil {
		return nil, err
	}
	return &countingQuery{Query: qry, c: c, s: span{start, end}}, nil
}

// take returns and forgets the recorded runs.
func (c *countingEngine) take() []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.runs
	c.runs = nil
	return r
}

type countingQuery struct {
	promql.Query
	c *countingEngine
	s span
}

func (q *countingQuery) Exec(ctx context.Context) *promql.Result {
	q.c.mu.Lock()
	q.c.runs = append(q.c.runs, q.s)
	q.c.mu.Unlock()
	return q.Query.Exec(ctx)
}

// fixture is a cache in front of a counting engine, with its own registry
// and a clock the test moves.
type fixture struct {
	t       testing.TB
	raw     *promql.Engine
	counter *countingEngine
	cache   *Engine
	store   Store
	reg     *prometheus.Registry
	now     time.Time
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.SplitInterval = model.Duration(time.Hour)
	return cfg
}

func newFixture(t testing.TB, cfg Config, store Store) *fixture {
	return newScopedFixture(t, cfg, nil, store)
}

func newScopedFixture(t testing.TB, cfg Config, scope Scope, store Store) *fixture {
	raw := newPromEngine()
	f := &fixture{t: t, raw: raw, counter: &countingEngine{next: raw}, store: store, reg: prometheus.NewRegistry(), now: dataEnd}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	f.cache = newEngine(cfg, f.counter, scope, store, cfg.Backend, f.reg, logger)
	f.cache.now = func() time.Time { return f.now }
	t.Cleanup(func() { _ = f.cache.Close() })
	return f
}

func newMemoryFixture(t testing.TB) *fixture {
	return newFixture(t, testConfig(), NewMemoryStore(DefaultMaxBytes))
}

// rangeQuery runs a range query through the cache and directly on the
// engine, and fails unless both answers are identical.
func (f *fixture) rangeQuery(ctx context.Context, qs string, start, end time.Time, step time.Duration) *promql.Result {
	f.t.Helper()
	got, d := f.compare(ctx, qs, start, end, step)
	if d != "" {
		f.t.Fatal(d)
	}
	return got
}

// compare is rangeQuery for goroutines: it reports instead of failing.
func (f *fixture) compare(ctx context.Context, qs string, start, end time.Time, step time.Duration) (*promql.Result, string) {
	got, err := tryRange(ctx, f.cache, qs, start, end, step)
	if err != nil {
		return nil, err.Error()
	}
	want, err := tryRange(ctx, f.raw, qs, start, end, step)
	if err != nil {
		return nil, err.Error()
	}
	if d := diffResult(want, got); d != "" {
		return got, fmt.Sprintf("%s [%s, %s] step %s: cached answer differs: %s", qs, start.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano), step, d)
	}
	return got, ""
}

func execRange(t testing.TB, ctx context.Context, e QueryEngine, qs string, start, end time.Time, step time.Duration) *promql.Result {
	t.Helper()
	res, err := tryRange(ctx, e, qs, start, end, step)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func tryRange(ctx context.Context, e QueryEngine, qs string, start, end time.Time, step time.Duration) (*promql.Result, error) {
	q, err := e.NewRangeQuery(ctx, testDB, promql.NewPrometheusQueryOpts(false, 0, nil), qs, start, end, step)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", qs, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	// Detach the answer from the query's memory before Close recycles it.
	return &promql.Result{Err: res.Err, Warnings: res.Warnings, Value: deepCopy(res.Value)}, nil
}

func execInstant(t testing.TB, ctx context.Context, e QueryEngine, qs string, ts time.Time) *promql.Result {
	t.Helper()
	q, err := e.NewInstantQuery(ctx, testDB, promql.NewPrometheusQueryOpts(false, 0, nil), qs, ts)
	if err != nil {
		t.Fatalf("%s: %v", qs, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	return &promql.Result{Err: res.Err, Warnings: res.Warnings, Value: deepCopy(res.Value)}
}

func (f *fixture) counterValue(name string, lvs ...string) float64 {
	f.t.Helper()
	return metricValue(f.t, f.reg, name, lvs...)
}

// metricValue reads one sample of a registry; label values are given as
// name, value pairs.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, lvs ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(lvs); i += 2 {
				if labelValue(m, lvs[i]) != lvs[i+1] {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func withPolicy(p *tenancy.Policy) context.Context {
	return tenancy.NewContext(context.Background(), p)
}

// diffResult describes the first difference between two answers, comparing
// floats by their bits (so NaN equals the same NaN) and telling nil and
// empty slices apart; "" means identical.
func diffResult(want, got *promql.Result) string {
	if (want.Err == nil) != (got.Err == nil) || (want.Err != nil && want.Err.Error() != got.Err.Error()) {
		return fmt.Sprintf("error %v, want %v", got.Err, want.Err)
	}
	if w, g := annotationKeys(want.Warnings), annotationKeys(got.Warnings); !slices.Equal(w, g) {
		return fmt.Sprintf("annotations %q, want %q", g, w)
	}
	return diffValue(want.Value, got.Value)
}

func annotationKeys(a annotations.Annotations) []string {
	var ks []string
	for k := range a {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func diffValue(want, got parser.Value) string {
	switch w := want.(type) {
	case promql.Matrix:
		g, ok := got.(promql.Matrix)
		if !ok {
			return fmt.Sprintf("type %T, want %T", got, want)
		}
		if (w == nil) != (g == nil) {
			return fmt.Sprintf("matrix nil=%v, want nil=%v", g == nil, w == nil)
		}
		if len(w) != len(g) {
			return fmt.Sprintf("%d series, want %d (got %v, want %v)", len(g), len(w), seriesNames(g), seriesNames(w))
		}
		for i := range w {
			if d := diffSeries(w[i], g[i]); d != "" {
				return fmt.Sprintf("series %d %s: %s", i, w[i].Metric, d)
			}
		}
	case promql.Vector:
		g, ok := got.(promql.Vector)
		if !ok || len(w) != len(g) || (w == nil) != (g == nil) {
			return fmt.Sprintf("vector %v, want %v", got, want)
		}
		for i := range w {
			if !labels.Equal(w[i].Metric, g[i].Metric) || w[i].T != g[i].T || w[i].DropName != g[i].DropName ||
				math.Float64bits(w[i].F) != math.Float64bits(g[i].F) || diffHistogram(w[i].H, g[i].H) != "" {
				return fmt.Sprintf("sample %d: %v, want %v", i, g[i], w[i])
			}
		}
	case promql.Scalar:
		g, ok := got.(promql.Scalar)
		if !ok || g.T != w.T || math.Float64bits(g.V) != math.Float64bits(w.V) {
			return fmt.Sprintf("scalar %v, want %v", got, want)
		}
	case promql.String:
		if got != want {
			return fmt.Sprintf("string %v, want %v", got, want)
		}
	case nil:
		if got != nil {
			return fmt.Sprintf("value %v, want nil", got)
		}
	default:
		return fmt.Sprintf("unexpected type %T", want)
	}
	return ""
}

func seriesNames(m promql.Matrix) []string {
	var s []string
	for _, x := range m {
		s = append(s, x.Metric.String())
	}
	return s
}

func diffSeries(w, g promql.Series) string {
	if !labels.Equal(w.Metric, g.Metric) {
		return fmt.Sprintf("labels %s", g.Metric)
	}
	if w.DropName != g.DropName {
		return "DropName differs"
	}
	if (w.Floats == nil) != (g.Floats == nil) || len(w.Floats) != len(g.Floats) {
		return fmt.Sprintf("%d floats (nil=%v), want %d (nil=%v); got %v..., want %v...", len(g.Floats), g.Floats == nil, len(w.Floats), w.Floats == nil, head(g.Floats), head(w.Floats))
	}
	for i := range w.Floats {
		if w.Floats[i].T != g.Floats[i].T || math.Float64bits(w.Floats[i].F) != math.Float64bits(g.Floats[i].F) {
			return fmt.Sprintf("float %d: %v, want %v", i, g.Floats[i], w.Floats[i])
		}
	}
	if (w.Histograms == nil) != (g.Histograms == nil) || len(w.Histograms) != len(g.Histograms) {
		return fmt.Sprintf("%d histograms, want %d", len(g.Histograms), len(w.Histograms))
	}
	for i := range w.Histograms {
		if w.Histograms[i].T != g.Histograms[i].T {
			return fmt.Sprintf("histogram %d at %d, want %d", i, g.Histograms[i].T, w.Histograms[i].T)
		}
		if d := diffHistogram(w.Histograms[i].H, g.Histograms[i].H); d != "" {
			return fmt.Sprintf("histogram %d: %s", i, d)
		}
	}
	return ""
}

func head(p []promql.FPoint) []promql.FPoint { return p[:min(3, len(p))] }

func diffHistogram(w, g *histogram.FloatHistogram) string {
	if (w == nil) != (g == nil) {
		return "nil-ness differs"
	}
	if w == nil {
		return ""
	}
	fb := math.Float64bits
	if w.CounterResetHint != g.CounterResetHint || w.Schema != g.Schema || fb(w.ZeroThreshold) != fb(g.ZeroThreshold) ||
		fb(w.ZeroCount) != fb(g.ZeroCount) || fb(w.Count) != fb(g.Count) || fb(w.Sum) != fb(g.Sum) {
		return fmt.Sprintf("%v, want %v", g, w)
	}
	if !sameSpans(w.PositiveSpans, g.PositiveSpans) || !sameSpans(w.NegativeSpans, g.NegativeSpans) ||
		!sameFloats(w.PositiveBuckets, g.PositiveBuckets) || !sameFloats(w.NegativeBuckets, g.NegativeBuckets) ||
		!sameFloats(w.CustomValues, g.CustomValues) {
		return fmt.Sprintf("buckets %v, want %v", g, w)
	}
	return ""
}

func sameSpans(a, b []histogram.Span) bool { return (a == nil) == (b == nil) && slices.Equal(a, b) }

func sameFloats(a, b []float64) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}
