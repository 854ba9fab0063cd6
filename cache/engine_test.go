package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/stats"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// atFixed is a fixed @ timestamp inside the test data.
var atFixed = fmt.Sprint(dataStart.Add(30 * time.Hour).Unix())

// suite covers the constructs whose answers must survive splitting and
// stitching unchanged.
var suite = []string{
	`rate(http_requests_total[5m])`,
	`sum by (code) (rate(http_requests_total[5m]))`,
	`increase(http_requests_total{job="api"}[1h])`,
	`resets(http_requests_total[1h])`,
	`histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))`,
	`histogram_quantile(0.5, sum(rate(rpc_latency_seconds[5m])))`,
	`sum by (instance) (rate(rpc_latency_seconds[5m]))`,
	`rpc_latency_seconds`,
	`histogram_count(rate(rpc_latency_seconds[10m]))`,
	`topk(3, rate(http_requests_total[5m]))`,
	`bottomk(2, sum by (instance) (rate(http_requests_total[5m])))`,
	`max_over_time(rate(http_requests_total[5m])[30m:1m])`,
	`avg_over_time(temperature[10m:45s])`,
	`rate(http_requests_total[5m] offset 1h)`,
	`rate(http_requests_total[5m] offset -10m)`,
	`http_requests_total @ ` + atFixed,
	`rate(http_requests_total[5m] @ ` + atFixed + `) / on(instance, code, job) rate(http_requests_total[5m])`,
	`absent(nonexistent_metric{job="x"})`,
	`absent(up{instance="i3"})`,
	`absent_over_time(late_series[5m])`,
	`label_replace(rate(http_requests_total[5m]), "svc", "$1-x", "job", "(.*)")`,
	`up == 0 and on(instance) rate(http_requests_total{code="500"}[5m]) >= 0`,
	`up or on() vector(0)`,
	`rate(http_requests_total[5m]) unless on(instance) up == 0`,
	`scalar(sum(up))`,
	`time()`,
	`time() - timestamp(up)`,
	`temperature`,
	`-temperature * 2`,
	`deriv(temperature[15m])`,
	`quantile_over_time(0.9, temperature[20m])`,
	`changes(up[15m])`,
	`early_series`,
	`late_series`,
	`count_over_time(up[10m])`,
	`stddev by (job) (rate(http_requests_total[5m]))`,
	`sort_desc(sum by (instance) (rate(http_requests_total[5m])))`,
	`vector(1)`,
	`rate(temperature[5m])`, // an info annotation: answered, never stored
}

type gridCase struct {
	name       string
	start, end time.Time
	step       time.Duration
	split      time.Duration // 0: the test default, 1h
}

var gridCases = []gridCase{
	{"step15s", dataEnd.Add(-6 * time.Hour), dataEnd.Add(-3 * time.Minute), 15 * time.Second, 0},
	{"step60s+7s", dataEnd.Add(-6*time.Hour + 7*time.Second), dataEnd.Add(-3 * time.Minute), time.Minute, 0},
	{"step37s+sub-ms", dataEnd.Add(-5*time.Hour + 13*time.Second + 500500*time.Microsecond), dataEnd.Add(-150 * time.Second), 37 * time.Second, 0},
	{"step5m-over-24h", dataEnd.Add(-24*time.Hour + time.Minute), dataEnd.Add(-2 * time.Minute), 5 * time.Minute, 0},
	// Old data: a series ending with a staleness marker, a counter reset.
	{"step20s-old-split7m", dataStart.Add(8*time.Hour + 3*time.Second), dataStart.Add(21 * time.Hour), 20 * time.Second, 7 * time.Minute},
	// Extents of a single point.
	{"step2m-split1m", dataEnd.Add(-3 * time.Hour), dataEnd.Add(-5 * time.Minute), 2 * time.Minute, time.Minute},
}

// TestRangeSuiteExact: cold, warm and partly cached answers all equal the
// engine's own answer, bit for bit, on several grids.
func TestRangeSuiteExact(t *testing.T) {
	ctx := context.Background()
	for _, gc := range gridCases {
		t.Run(gc.name, func(t *testing.T) {
			cfg := testConfig()
			if gc.split != 0 {
				cfg.SplitInterval = model.Duration(gc.split)
			}
			f := newFixture(t, cfg, NewMemoryStore(DefaultMaxBytes))
			for _, qs := range suite {
				cold := f.rangeQuery(ctx, qs, gc.start, gc.end, gc.step)
				runs := f.counter.take()
				if len(runs) != 1 || !runs[0].start.Equal(gc.start) || !runs[0].end.Equal(gc.end) {
					t.Fatalf("%s: cold runs %v, want one over the whole range", qs, runs)
				}
				stored := len(cold.Warnings) == 0

				f.rangeQuery(ctx, qs, gc.start, gc.end, gc.step)
				runs = f.counter.take()
				// A query reading past its evaluation time (negative offset)
				// settles later: only that tail may run again.
				lead := time.Duration(queryShape(t, qs).lead) * time.Millisecond
				tail := f.now.Add(-time.Minute - lead)
				if stored && len(runs) != 0 && (lead == 0 || len(runs) != 1 || !runs[0].start.After(tail)) {
					t.Fatalf("%s: warm query ran the engine %v", qs, runs)
				}
				if !stored && len(runs) != 1 {
					t.Fatalf("%s: annotated answer: runs %v, want one", qs, runs)
				}

				// Earlier start on the same grid: only the new head is computed
				// (with an unsettled tail, one run covers head to tail).
				wider := gc.start.Add(-40 * gc.step)
				f.rangeQuery(ctx, qs, wider, gc.end, gc.step)
				runs = f.counter.take()
				if stored && lead == 0 && (len(runs) != 1 || !runs[0].end.Before(gc.start)) {
					t.Fatalf("%s: wider query runs %v, want one ending before %s", qs, runs, gc.start)
				}
			}
		})
	}
}

// TestSlidingWindow: a dashboard refresh moves start and end by one step;
// the engine runs once, over the points that were not settled before.
func TestSlidingWindow(t *testing.T) {
	ctx := context.Background()
	f := newMemoryFixture(t)
	step := 30 * time.Second
	f.now = dataEnd.Add(-2 * time.Hour)
	end := f.now
	start := end.Add(-6 * time.Hour)
	qs := `sum by (code) (rate(http_requests_total[5m]))`

	f.rangeQuery(ctx, qs, start, end, step)
	if runs := f.counter.take(); len(runs) != 1 {
		t.Fatalf("cold runs %v", runs)
	}
	for i := 1; i <= 5; i++ {
		settled := f.cache.cutoff(0) // what the previous refresh could store
		f.now = f.now.Add(step)
		start, end = start.Add(step), end.Add(step)
		f.rangeQuery(ctx, qs, start, end, step)
		runs := f.counter.take()
		if len(runs) != 1 {
			t.Fatalf("refresh %d: runs %v, want one", i, runs)
		}
		// The run starts at the first grid point after what was settled.
		g, _ := newGrid(start, end, step, time.Hour)
		wantFrom := g.floor(settled) + g.step
		if got := runs[0].start.UnixMilli(); got != wantFrom || !runs[0].end.Equal(end) {
			t.Fatalf("refresh %d: run %v, want [%d, %s]", i, runs[0], wantFrom, end)
		}
		if n := runs[0].end.Sub(runs[0].start); n > 2*time.Minute {
			t.Fatalf("refresh %d: run covers %s, want only the fresh tail", i, n)
		}
	}
}

// TestHoleInTheMiddle: cached points on both sides of a missing span are
// stitched around one run over the hole.
func TestHoleInTheMiddle(t *testing.T) {
	ctx := context.Background()
	f := newMemoryFixture(t)
	step := 45 * time.Second
	base := dataEnd.Add(-20 * time.Hour)
	for _, qs := range suite {
		early := f.rangeQuery(ctx, qs, base, base.Add(3*time.Hour), step)
		f.rangeQuery(ctx, qs, base.Add(7*time.Hour), base.Add(10*time.Hour), step)
		f.counter.take()
		f.rangeQuery(ctx, qs, base, base.Add(10*time.Hour), step)
		runs := f.counter.take()
		if len(early.Warnings) > 0 {
			continue
		}
		if len(runs) != 1 || !runs[0].start.After(base.Add(3*time.Hour)) || !runs[0].end.Before(base.Add(7*time.Hour)) {
			t.Fatalf("%s: runs %v, want one inside the hole", qs, runs)
		}
	}
}

// TestEntryOutsideNeed: an extent's entry that covers only other points of
// the extent than the query needs is no help, and must not widen the run.
func TestEntryOutsideNeed(t *testing.T) {
	ctx := context.Background()
	f := newMemoryFixture(t)
	step := 30 * time.Second
	hour := dataEnd.Add(-10 * time.Hour) // an extent boundary: extents are whole hours here
	qs := `sum by (code) (rate(http_requests_total[5m]))`
	at := func(m int) time.Time { return hour.Add(time.Duration(m) * time.Minute) }

	// Entry after the need: [40m, 50m] cached, then [5m, 20m] asked.
	f.rangeQuery(ctx, qs, at(40), at(50), step)
	f.rangeQuery(ctx, qs, at(5), at(20), step)
	// Entry before the need: the clock at 30m stores up to 29m, then at 45m
	// [32m, 44m] is asked.
	f.now = at(30)
	f.rangeQuery(ctx, qs, at(10), at(30), step)
	f.now = at(45)
	f.counter.take()
	f.rangeQuery(ctx, qs, at(32), at(44), step)
	if runs := f.counter.take(); len(runs) != 1 || !runs[0].start.Equal(at(32)) || !runs[0].end.Equal(at(44)) {
		t.Fatalf("runs %v, want one over exactly the query", runs)
	}
}

// TestRandomWindows: random windows on a few grids, with the clock moving
// on, always answer exactly what the engine answers.
func TestRandomWindows(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(21, 22))
	queries := []string{
		`sum by (code) (rate(http_requests_total[5m]))`,
		`up`,
		`late_series`,
		`sum(rate(rpc_latency_seconds[5m]))`,
		`rate(http_requests_total[5m] offset -2m)`,
		`max_over_time(temperature[7m:20s])`,
	}
	for _, split := range []time.Duration{time.Minute, 7 * time.Minute, time.Hour} {
		cfg := testConfig()
		cfg.SplitInterval = model.Duration(split)
		f := newFixture(t, cfg, NewMemoryStore(DefaultMaxBytes))
		f.now = dataEnd.Add(-6 * time.Hour)
		for range 400 {
			f.now = f.now.Add(time.Duration(rng.IntN(90)) * time.Second)
			step := []time.Duration{15 * time.Second, 30 * time.Second, 45 * time.Second}[rng.IntN(3)]
			offset := time.Duration(rng.IntN(2)) * 7 * time.Second
			end := f.now.Add(-time.Duration(rng.IntN(40)) * time.Minute).Truncate(step).Add(offset)
			start := end.Add(-time.Duration(1+rng.IntN(180)) * step)
			f.rangeQuery(ctx, queries[rng.IntN(len(queries))], start, end.Add(time.Duration(rng.IntN(3))*time.Second), step)
		}
		if hits := f.counterValue("prometheus_proxy_cache_requests_total", "result", "hit"); hits == 0 {
			t.Fatalf("split %s: no hits", split)
		}
	}
}

// TestFreshness: nothing after now - max_freshness is stored, instant queries
// at recent times are not cached, old ones are.
func TestFreshness(t *testing.T) {
	ctx := context.Background()
	f := newMemoryFixture(t)
	step := 15 * time.Second
	end := f.now
	start := end.Add(-3 * time.Hour)
	qs := `rate(http_requests_total[5m])`
	f.rangeQuery(ctx, qs, start, end, step)
	f.counter.take()

	// Every stored extent ends at or before the cutoff.
	cutoff := f.now.Add(-time.Minute).UnixMilli()
	ms := f.store.(*MemoryStore)
	for el := ms.ll.Front(); el != nil; el = el.Next() {
		it := el.Value.(*memoryItem)
		ext, err := decodeExtent(it.value[headerLen : len(it.value)-trailerLen])
		if err != nil {
			t.Fatal(err)
		}
		if ext.to > cutoff {
			t.Fatalf("stored extent [%d, %d] reaches past the cutoff %d", ext.from, ext.to, cutoff)
		}
	}

	// Same query again: only the unsettled tail runs.
	f.rangeQuery(ctx, qs, start, end, step)
	runs := f.counter.take()
	if len(runs) != 1 || runs[0].start.UnixMilli() <= cutoff-step.Milliseconds() || !runs[0].end.Equal(end) {
		t.Fatalf("runs %v, want one over the last minute", runs)
	}

	// Instant queries.
	for _, tc := range []struct {
		at     time.Time
		cached bool
	}{
		{f.now, false},
		{f.now.Add(-30 * time.Second), false},
		{f.now.Add(-2 * time.Minute), true},
		{f.now.Add(-20 * time.Hour), true},
	} {
		for i := range 2 {
			got := execInstant(t, ctx, f.cache, qs, tc.at)
			want := execInstant(t, ctx, f.raw, qs, tc.at)
			if d := diffResult(want, got); d != "" {
				t.Fatalf("instant at %s: %s", tc.at, d)
			}
			runs := f.counter.take()
			if wantRuns := 1; i == 1 && tc.cached {
				wantRuns = 0
				if len(runs) != wantRuns {
					t.Fatalf("instant at %s (2nd): runs %v, want %d", tc.at, runs, wantRuns)
				}
			} else if len(runs) != wantRuns {
				t.Fatalf("instant at %s (#%d): runs %v, want %d", tc.at, i, runs, wantRuns)
			}
		}
	}

	// A clock moved forward makes older answers cacheable.
	f.now = f.now.Add(time.Hour)
	f.rangeQuery(ctx, qs, start, end, step)
	f.counter.take()
	f.rangeQuery(ctx, qs, start, end, step)
	if runs := f.counter.take(); len(runs) != 0 {
		t.Fatalf("after an hour: runs %v, want none", runs)
	}
}

// TestInstantSuite: instant answers of every value type round-trip exactly.
func TestInstantSuite(t *testing.T) {
	ctx := context.Background()
	f := newMemoryFixture(t)
	at := dataStart.Add(30*time.Hour + 7*time.Second)
	queries := append([]string{`http_requests_total[2m]`, `"a string"`, `42`, `rpc_latency_seconds[1m]`}, suite...)
	for _, qs := range queries {
		for i := range 2 {
			got := execInstant(t, ctx, f.cache, qs, at)
			want := execInstant(t, ctx, f.raw, qs, at)
			if d := diffResult(want, got); d != "" {
				t.Fatalf("%s (#%d): %s", qs, i, d)
			}
			runs := f.counter.take()
			if i == 1 && len(got.Warnings) == 0 && len(runs) != 0 {
				t.Fatalf("%s: warm instant query ran the engine", qs)
			}
		}
	}
}

// TestNotSplit: answers that depend on the query's own range are never
// split or cached.
func TestNotSplit(t *testing.T) {
	ctx := context.Background()
	f := newMemoryFixture(t)
	start, end, step := dataEnd.Add(-4*time.Hour), dataEnd.Add(-10*time.Minute), time.Minute
	for _, qs := range []string{
		`rate(http_requests_total[5m] @ start())`,
		`http_requests_total @ end()`,
		`max_over_time(up[10m:1m] @ end())`,
		`up * start()`,
		`rate(http_requests_total[range()])`,
		`vector(step())`,
	} {
		for range 2 {
			f.rangeQuery(ctx, qs, start, end, step)
			runs := f.counter.take()
			if len(runs) != 1 || !runs[0].start.Equal(start) || !runs[0].end.Equal(end) {
				t.Fatalf("%s: runs %v, want the whole range every time", qs, runs)
			}
		}
	}
	if v := f.counterValue("prometheus_proxy_cache_skipped_total", "reason", "range_dependent"); v != 12 {
		t.Fatalf("skipped{range_dependent} = %v, want 12", v)
	}
}

// filterQueryable drops the series the request's policy does not allow, as
// the proxy's storage does.
type filterQueryable struct{}

func (filterQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := testDB.Querier(mint, maxt)
	return filterQuerier{q}, err
}

type filterQuerier struct{ storage.Querier }

func (f filterQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	p := tenancy.FromContext(ctx)
	return &filterSet{SeriesSet: f.Querier.Select(ctx, sortSeries, hints, ms...), p: p}
}

type filterSet struct {
	storage.SeriesSet
	p *tenancy.Policy
}

func (s *filterSet) Next() bool {
	for s.SeriesSet.Next() {
		if s.p.Matches(s.At().Labels()) {
			return true
		}
	}
	return false
}

func policy(ns, fp string, ms ...*labels.Matcher) *tenancy.Policy {
	return &tenancy.Policy{Namespace: ns, Fingerprint: fp, Rules: []tenancy.Rule{{Matchers: ms}}}
}

// TestTenantsNeverShare: the same query from tenants with different rules
// gets each tenant's own answer, cold and warm; a changed rule set (new
// fingerprint) is answered afresh at once.
func TestTenantsNeverShare(t *testing.T) {
	f := newMemoryFixture(t)
	start, end, step := dataEnd.Add(-3*time.Hour), dataEnd.Add(-5*time.Minute), 30*time.Second
	qs := `sum by (job) (rate(http_requests_total[5m]))`
	tenants := []*tenancy.Policy{
		policy("team-a", "fp-a", labels.MustNewMatcher(labels.MatchEqual, "job", "api")),
		policy("team-b", "fp-b", labels.MustNewMatcher(labels.MatchEqual, "job", "db")),
		policy("team-a", "fp-a2", labels.MustNewMatcher(labels.MatchEqual, "instance", "i0")), // team-a's rules changed
		nil, // no tenancy: sees everything
	}
	run := func(p *tenancy.Policy) *promql.Result {
		ctx := withPolicy(p)
		got := runOn(t, ctx, f.cache, qs, start, end, step)
		want := runOn(t, ctx, f.raw, qs, start, end, step)
		if d := diffResult(want, got); d != "" {
			t.Fatalf("policy %v: %s", p, d)
		}
		return got
	}
	var answers []string
	for _, p := range tenants {
		answers = append(answers, run(p).Value.String())
		if runs := f.counter.take(); len(runs) != 1 {
			t.Fatalf("policy %v cold: runs %v, want 1", p, runs)
		}
	}
	for i := range answers {
		for j := range i {
			if answers[i] == answers[j] {
				t.Fatalf("tenants %d and %d got the same answer", i, j)
			}
		}
	}
	for _, p := range tenants {
		run(p)
		if runs := f.counter.take(); len(runs) != 0 {
			t.Fatalf("policy %v warm: runs %v, want 0", p, runs)
		}
	}
	// An admin sees what an unrestricted request sees and shares its entries.
	run(&tenancy.Policy{Namespace: "monitoring", Admin: true})
	if runs := f.counter.take(); len(runs) != 0 {
		t.Fatalf("admin: runs %v, want 0", runs)
	}
	// A restricted policy without a fingerprint cannot be keyed: not cached.
	for range 2 {
		run(policy("team-c", "", labels.MustNewMatcher(labels.MatchEqual, "job", "api")))
		if runs := f.counter.take(); len(runs) != 1 {
			t.Fatalf("no fingerprint: runs %v, want 1", runs)
		}
	}
}

func runOn(t *testing.T, ctx context.Context, e QueryEngine, qs string, start, end time.Time, step time.Duration) *promql.Result {
	t.Helper()
	q, err := e.NewRangeQuery(ctx, filterQueryable{}, promql.NewPrometheusQueryOpts(false, 0, nil), qs, start, end, step)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	return &promql.Result{Warnings: res.Warnings, Value: deepCopy(res.Value)}
}

// TestBadEntriesAreMisses: corrupt, foreign and old-version entries are
// ignored (counted) and the answer is still exact.
func TestBadEntriesAreMisses(t *testing.T) {
	ctx := context.Background()
	start, end, step := dataEnd.Add(-3*time.Hour), dataEnd.Add(-5*time.Minute), 30*time.Second
	qs := `sum by (instance) (rate(rpc_latency_seconds[5m]))`
	damage := map[string]func(ms *MemoryStore){
		"flipped byte": func(ms *MemoryStore) {
			for _, el := range ms.items {
				it := el.Value.(*memoryItem)
				it.value = append([]byte(nil), it.value...)
				it.value[len(it.value)/2] ^= 0x40
			}
		},
		"truncated": func(ms *MemoryStore) {
			for _, el := range ms.items {
				it := el.Value.(*memoryItem)
				it.value = it.value[:len(it.value)-7]
			}
		},
		"foreign": func(ms *MemoryStore) { // every key holds another key's value
			var vals [][]byte
			var items []*memoryItem
			for _, el := range ms.items {
				it := el.Value.(*memoryItem)
				items = append(items, it)
				vals = append(vals, it.value)
			}
			for i, it := range items {
				it.value = vals[(i+1)%len(vals)]
			}
		},
		"old version": func(ms *MemoryStore) { // well formed, checksum right, version 0
			for _, el := range ms.items {
				it := el.Value.(*memoryItem)
				b := append([]byte(nil), it.value[:len(it.value)-trailerLen]...)
				b[4] = 0
				it.value = seal(b)
			}
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			f := newMemoryFixture(t)
			f.rangeQuery(ctx, qs, start, end, step)
			f.counter.take()
			ms := f.store.(*MemoryStore)
			if ms.Len() < 2 {
				t.Fatalf("only %d entries stored", ms.Len())
			}
			fn(ms)
			f.rangeQuery(ctx, qs, start, end, step)
			if runs := f.counter.take(); len(runs) != 1 || !runs[0].start.Equal(start) {
				t.Fatalf("runs %v, want one over the whole range", runs)
			}
			if v := f.counterValue("prometheus_proxy_cache_errors_total", "op", "decode"); v < 2 {
				t.Fatalf("decode errors = %v", v)
			}
			// The damaged entries were replaced.
			f.rangeQuery(ctx, qs, start, end, step)
			if runs := f.counter.take(); len(runs) != 0 {
				t.Fatalf("after repair: runs %v", runs)
			}
		})
	}
}

// TestSingleflight: identical concurrent misses run the engine once.
func TestSingleflight(t *testing.T) {
	f := newMemoryFixture(t)
	start, end, step := dataEnd.Add(-24*time.Hour), dataEnd.Add(-5*time.Minute), 15*time.Second
	qs := `max_over_time(rate(http_requests_total[5m])[30m:15s])`
	want := execRange(t, context.Background(), f.raw, qs, start, end, step)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			got := execRange(t, context.Background(), f.cache, qs, start, end, step)
			if d := diffResult(want, got); d != "" {
				errs <- d
			}
		})
	}
	wg.Wait()
	close(errs)
	for d := range errs {
		t.Fatal(d)
	}
	if runs := f.counter.take(); len(runs) >= 8 {
		t.Fatalf("%d runs for 8 identical concurrent queries", len(runs))
	}
}

// TestDisabled: a disabled cache hands queries straight through.
func TestDisabled(t *testing.T) {
	raw := newPromEngine()
	e, err := New(Config{}, raw, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.NewRangeQuery(context.Background(), testDB, nil, "up", dataStart, dataStart.Add(time.Hour), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, ok := q.(*query); ok {
		t.Fatal("disabled cache wrapped the query")
	}
}

// TestConstructionErrors: bad queries fail when built, as without the cache.
func TestConstructionErrors(t *testing.T) {
	f := newMemoryFixture(t)
	for _, qs := range []string{`rate(`, `up[5m]`, `foo{`} {
		_, errRaw := f.raw.NewRangeQuery(context.Background(), testDB, nil, qs, dataStart, dataStart.Add(time.Hour), time.Minute)
		_, err := f.cache.NewRangeQuery(context.Background(), testDB, nil, qs, dataStart, dataStart.Add(time.Hour), time.Minute)
		if err == nil || errRaw == nil || err.Error() != errRaw.Error() {
			t.Fatalf("%s: error %v, want %v", qs, err, errRaw)
		}
	}
}

// TestStats: the API renders Stats() for stats=all; it must be usable.
func TestStats(t *testing.T) {
	f := newMemoryFixture(t)
	for range 2 {
		q, err := f.cache.NewRangeQuery(context.Background(), testDB, nil, "up", dataEnd.Add(-time.Hour), dataEnd.Add(-10*time.Minute), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		q.Exec(context.Background())
		s := q.Stats()
		if s == nil || s.Timers == nil || s.Samples == nil {
			t.Fatalf("stats %+v", s)
		}
		if qs := stats.NewQueryStats(s); qs == nil {
			t.Fatal("no query stats")
		}
		if q.Statement() == nil || !strings.Contains(q.String(), "up") {
			t.Fatal("statement or string missing")
		}
		q.Close()
	}
}

func queryShape(t *testing.T, qs string) shape {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(qs)
	if err != nil {
		t.Fatal(err)
	}
	return inspect(expr)
}
