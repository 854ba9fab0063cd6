package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// PushDown is a promql.QueryEngine that lets the backends evaluate what the
// planner proves they may (plan package), and Prometheus' engine in the
// proxy evaluate the rest over their answers. A query whose pushed parts
// cannot be answered exactly (a backend error, an annotation, a native
// histogram, a group down) is evaluated in the proxy as without push-down.
type PushDown struct {
	outcomes *prometheus.CounterVec
	ng       *promql.Engine
	fanout   *Fanout
	planner  *plan.Planner
	lookback time.Duration
	logger   *slog.Logger
}

// NewPushDown wraps ng. cfg is the engine config (validated).
func NewPushDown(ng *promql.Engine, f *Fanout, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*PushDown, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &PushDown{ng: ng, fanout: f, planner: plan.New(cfg.PushDown, Parser()), lookback: time.Duration(cfg.LookbackDelta), logger: logger}
	p.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prometheus_proxy_pushdown_queries_total",
		Help: "Queries with parts the backends may evaluate, by outcome: pushed (their answers used) or fallback (evaluated in the proxy: a backend could not answer exactly).",
	}, []string{"outcome"})
	if reg != nil {
		if err := reg.Register(p.outcomes); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// PlanGroups implements plan.Groups: a group's external and configured
// labels, which the proxy adds to every series of the group that does not
// store them (discovery's ApplyExternalLabels), and its replica labels,
// which it drops.
func (f *Fanout) PlanGroups() []plan.Group {
	gs := f.backends.Groups()
	out := make([]plan.Group, 0, len(gs))
	for _, g := range gs {
		out = append(out, plan.Group{Name: g.Name, Labels: g.ExternalLabels(), LabelsAdded: true, IsReplicaLabel: g.IsReplicaLabel})
	}
	return out
}

// Explain returns the plan for qs under the request's tenant.
func (p *PushDown) Explain(ctx context.Context, qs string) (*plan.Plan, error) {
	expr, err := Parser().ParseExpr(qs)
	if err != nil {
		return nil, err
	}
	return p.planner.Plan(expr, p.fanout.PlanGroups(), tenancy.FromContext(ctx)), nil
}

// ExplainQuery renders the plan of qs under the request's tenant: what
// each group would evaluate and why the rest stays in the proxy.
func (p *PushDown) ExplainQuery(ctx context.Context, qs string) (string, error) {
	pl, err := p.Explain(ctx, qs)
	if err != nil {
		return "", err
	}
	byName := p.groupsByName()
	for _, f := range pl.Fragments {
		for i, gq := range f.Queries {
			g := byName[gq.Group.Name]
			if gq.Skipped != "" || g == nil {
				continue
			}
			// What the query would be refused for at its execution.
			v, err := callGroup(ctx, p.fanout, g, callVersion, func(ctx context.Context, c *remote.Client) (string, error) { return c.Version(ctx) })
			switch {
			case err != nil:
				f.Queries[i].Refused = "its release could not be read: " + tenantSafe(ctx, err).Error()
			default:
				if ok, why := evaluatesAsProxy(v, gq.Query); !ok {
					f.Queries[i].Refused = why
				}
			}
		}
	}
	return pl.Explain(), nil
}

// groupsByName are the fan-out's groups as the plan names them.
func (p *PushDown) groupsByName() map[string]*discovery.Group {
	out := map[string]*discovery.Group{}
	for _, g := range p.fanout.backends.Groups() {
		out[g.Name] = g
	}
	return out
}

// NewInstantQuery implements promql.QueryEngine.
func (p *PushDown) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	orig, err := p.ng.NewInstantQuery(ctx, q, opts, qs, ts)
	if err != nil {
		return nil, err
	}
	return p.wrap(ctx, orig, q, opts, qs, evalRange{start: ts, end: ts}), nil
}

// NewRangeQuery implements promql.QueryEngine.
func (p *PushDown) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	orig, err := p.ng.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil {
		return nil, err
	}
	return p.wrap(ctx, orig, q, opts, qs, evalRange{start: start, end: end, step: step}), nil
}

type evalRange struct {
	start, end time.Time
	step       time.Duration // 0: instant
}

func (p *PushDown) wrap(ctx context.Context, orig promql.Query, q storage.Queryable, opts promql.QueryOpts, qs string, r evalRange) promql.Query {
	pl, err := p.Explain(ctx, qs)
	if err != nil || !pl.Pushed() {
		return orig
	}
	return &pushedQuery{relayQuery: relayQuery{Query: orig}, p: p, plan: pl, policy: tenancy.FromContext(ctx), q: q, opts: opts, r: r}
}

// pushedQuery runs the plan's fragments on the backends first; then either
// the rewritten query over their answers or, when a fragment cannot be
// answered exactly, the original query.
type pushedQuery struct {
	relayQuery // the original (Statement, String, the fallback); next: the rewritten query, once run
	p          *PushDown
	plan       *plan.Plan
	policy     *tenancy.Policy
	q          storage.Queryable
	opts       promql.QueryOpts
	r          evalRange
}

func (pq *pushedQuery) Exec(ctx context.Context) *promql.Result {
	answers, err := pq.p.fetch(ctx, pq.plan, pq.policy, pq.r, pq.lookback())
	if err != nil {
		if ctx.Err() != nil {
			// Over a budget (the budget cancels the request with its
			// limit) or the request's end: evaluating the query again in
			// the proxy would only spend more.
			return &promql.Result{Err: contextError(ctx, "push-down")}
		}
		level := slog.LevelDebug
		if errors.Is(err, errPolicyRecheck) {
			level = slog.LevelWarn
		}
		pq.p.logger.Log(ctx, level, "push-down not used", "query", pq.plan.Expr.String(), "reason", err.Error())
		pq.p.outcomes.WithLabelValues("fallback").Inc()
		return pq.Query.Exec(ctx)
	}
	rq := &pushedQueryable{Queryable: pq.q, answers: answers}
	var rewritten promql.Query
	if pq.r.step == 0 {
		rewritten, err = pq.p.ng.NewInstantQuery(ctx, rq, pq.opts, pq.plan.Expr.String(), pq.r.start)
	} else {
		rewritten, err = pq.p.ng.NewRangeQuery(ctx, rq, pq.opts, pq.plan.Expr.String(), pq.r.start, pq.r.end, pq.r.step)
	}
	if err != nil {
		// The rewritten query is the planner's own text: it must parse.
		pq.p.logger.Error("push-down: rewritten query refused", "query", pq.plan.Expr.String(), "err", err)
		return pq.Query.Exec(ctx)
	}
	pq.next = rewritten
	pq.p.outcomes.WithLabelValues("pushed").Inc()
	return rewritten.Exec(ctx)
}

func (pq *pushedQuery) lookback() time.Duration {
	if pq.opts != nil && pq.opts.LookbackDelta() > 0 {
		return pq.opts.LookbackDelta()
	}
	return pq.p.lookback
}

// engineRelease is the major.minor release of the Prometheus module the
// proxy's engine comes from (v0.316.x is Prometheus 3.16). Build info does
// not reach test binaries, so it is written here; TestEngineRelease fails
// when go.mod moves without it.
const engineRelease = "3.16"

// answerChangingFeatures are the backend feature flags under which the
// same PromQL answers differently from the proxy's engine, which runs with
// none of them: delayed name removal keeps __name__ through functions until
// the end of the evaluation; type-and-unit labels are kept or dropped by
// operators differently from release to release; start timestamps change
// rate, increase, irate and resets.
var answerChangingFeatures = []string{"promql-delayed-name-removal", "type-and-unit-labels", "use-start-timestamps"}

// answerChangingFeature returns the first of answerChangingFeatures in a
// backend's --enable-feature value (comma-separated, possibly bracketed),
// or "".
func answerChangingFeature(enabled string) string {
	for _, f := range strings.FieldsFunc(enabled, func(r rune) bool { return r == ',' || r == ' ' || r == '[' || r == ']' }) {
		if slices.Contains(answerChangingFeatures, f) {
			return f
		}
	}
	return ""
}

// errNotExact says why a fragment's answer is not used.
var errNotExact = errors.New("push-down answer not exact")

// fetch runs every fragment on every group it names, in parallel, and
// turns the answers into series for the synthetic selectors.
func (p *PushDown) fetch(ctx context.Context, pl *plan.Plan, policy *tenancy.Policy, r evalRange, lookback time.Duration) (map[string][]storage.Series, error) {
	byName := p.groupsByName()
	type job struct {
		f     *plan.Fragment
		gq    plan.GroupQuery
		spans [][2]int64
	}
	var jobs []job
	for _, f := range pl.Fragments {
		for _, gq := range f.Queries {
			if gq.Skipped != "" {
				// The tenant's rules meet the group's labels nowhere.
				p.fanout.skipGroup(ctx, gq.Group.Name, SkipTenantRules, gq.Skipped)
				continue
			}
			spans, err := selectorSpans(gq.Query, r, lookback)
			if err != nil {
				return nil, fmt.Errorf("%w: fragment %s: %w", errNotExact, f.ID, err)
			}
			jobs = append(jobs, job{f, gq, spans})
		}
	}
	results := make([][]storage.Series, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		g := byName[j.gq.Group.Name]
		if g == nil {
			return nil, fmt.Errorf("%w: group %s is gone", errNotExact, j.gq.Group.Name)
		}
		wg.Go(func() {
			defer func() {
				if rec := recover(); rec != nil {
					errs[i] = fmt.Errorf("internal error: %v", rec)
				}
			}()
			// A probe that finds series, or a query the backend refuses,
			// is the query's matter, not the replica's: an answer, not an
			// error that would fail over and count against its health.
			type answer struct {
				ans     *remote.QueryAnswer
				refused error
			}
			a, err := callGroup(ctx, p.fanout, g, callQuery, func(ctx context.Context, c *remote.Client) (answer, error) {
				v, err := c.Version(ctx)
				if err != nil {
					return answer{}, err
				}
				if ok, why := evaluatesAsProxy(v, j.gq.Query); !ok {
					return answer{refused: fmt.Errorf("%w: group %s %s", errNotExact, g.Name, why)}, nil
				}
				flags, err := c.Flags(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return answer{}, err
					}
					return answer{refused: fmt.Errorf("%w: group %s does not tell its feature flags (%w), and some change what a query answers", errNotExact, g.Name, err)}, nil
				}
				if f := answerChangingFeature(flags["enable-feature"]); f != "" {
					return answer{refused: fmt.Errorf("%w: group %s runs with --enable-feature=%s, which the proxy's engine does not, and its answers differ", errNotExact, g.Name, f)}, nil
				}
				// The probe and the query run at once; the answer waits
				// for the probe's verdict.
				var (
					found    []labels.Labels
					probeErr error
					probed   sync.WaitGroup
					mu       sync.Mutex
				)
				mint, maxt := probeWindow(j.spans)
				if len(j.gq.Probe) > 0 {
					probed.Go(func() {
						f, _, err := c.Series(ctx, mint, maxt, j.gq.Probe)
						mu.Lock()
						found, probeErr = f, cmp.Or(probeErr, err)
						mu.Unlock()
					})
				}
				// Each side of a mixed probe is answered by one series.
				mixed := make([][2]bool, len(j.gq.Mixed))
				for k, mp := range j.gq.Mixed {
					for side, sets := range [][][]*labels.Matcher{mp.Stored, mp.Lacking} {
						probed.Go(func() {
							f, _, err := c.SeriesLimit(ctx, mint, maxt, sets, 1)
							mu.Lock()
							mixed[k][side], probeErr = len(f) > 0, cmp.Or(probeErr, err)
							mu.Unlock()
						})
					}
				}
				ans, err := c.Query(ctx, remote.QueryParams{
					Query: j.gq.Query, Start: r.start.UnixMilli(), End: r.end.UnixMilli(), Step: r.step, LookbackDelta: lookback,
					Spans: j.spans,
				})
				probed.Wait()
				if probeErr != nil {
					return answer{}, probeErr
				}
				if len(found) > 0 {
					return answer{refused: fmt.Errorf("%w: group %s holds %s, which is not of the group's %s", errNotExact, g.Name, found[0], pl.Label)}, nil
				}
				for k, both := range mixed {
					if both[0] && both[1] {
						l := j.gq.Mixed[k].Label
						return answer{refused: fmt.Errorf("%w: group %s holds series storing its %s=%q beside series lacking %s, which the query matches or groups by", errNotExact, g.Name, l, g.ExternalLabels().Get(l), l)}, nil
					}
				}
				if apiErr := (*remote.APIError)(nil); errors.As(err, &apiErr) && apiErr.Code < 500 {
					return answer{refused: fmt.Errorf("%w: %w", errNotExact, err)}, nil
				}
				return answer{ans: ans}, err
			})
			if err == nil {
				err = a.refused
			}
			if err != nil {
				errs[i] = err
				return
			}
			results[i], errs[i] = fragmentSeries(j.f, j.gq.Group, a.ans, r)
			if errs[i] == nil && j.f.Recheck {
				errs[i] = recheck(j.f, j.gq.Group, results[i], policy)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := map[string][]storage.Series{}
	for i, j := range jobs {
		out[j.f.ID] = append(out[j.f.ID], results[i]...)
	}
	for id, ss := range out {
		slices.SortFunc(ss, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
		for k := 1; k < len(ss); k++ {
			if labels.Equal(ss[k-1].Labels(), ss[k].Labels()) {
				// Disjoint groups cannot answer the same series; if they
				// do, the groups are not what their labels say.
				return nil, fmt.Errorf("%w: fragment %s: two groups answered series %s", errNotExact, id, ss[k].Labels())
			}
		}
	}
	for _, f := range pl.Fragments {
		if f.Ranked != nil {
			if err := rankedDecided(f, out[f.ID]); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// rankedDecided checks a combined topk or bottomk (plan.Ranked): at every
// step, in every output group, no tie at the k-th value may decide which
// series win.
func rankedDecided(f *plan.Fragment, ss []storage.Series) error {
	r := f.Ranked
	type at struct {
		key string
		t   int64
	}
	competing := map[at][]float64{}
	for _, s := range ss {
		k := r.Key(s.Labels())
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			t, x := it.At()
			if !value.IsStaleNaN(x) {
				competing[at{k, t}] = append(competing[at{k, t}], x)
			}
		}
		if err := it.Err(); err != nil {
			return err
		}
	}
	for a, vals := range competing {
		if !r.Decided(vals) {
			return fmt.Errorf("%w: fragment %s: a tie at the %d-th value of %s decides which series win, and one Prometheus breaks ties by its storage's order", errNotExact, f.ID, r.K, a.key)
		}
	}
	return nil
}

// selectorSpans are the time spans each selector of query reads at r, as
// Prometheus' engine computes them for its Select hints (range, lookback,
// offsets, @ and subqueries included): what remote read would be asked, so
// max_query_length holds a pushed query to what it holds a read to.
func selectorSpans(query string, r evalRange, lookback time.Duration) ([][2]int64, error) {
	e, err := Parser().ParseExpr(query)
	if err != nil {
		return nil, err
	}
	if e, err = promql.PreprocessExpr(e, r.start, r.end, r.step); err != nil {
		return nil, err
	}
	var spans [][2]int64
	parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		// The selector with only what decides its span around it: the
		// range selector directly above it and the subqueries on its path.
		var chain parser.Expr = vs
		for i := len(path) - 1; i >= 0; i-- {
			switch p := path[i].(type) {
			case *parser.MatrixSelector:
				if i == len(path)-1 {
					m := *p
					m.VectorSelector = chain
					chain = &m
				}
			case *parser.SubqueryExpr:
				sq := *p
				sq.Expr = chain
				chain = &sq
			}
		}
		mint, maxt := promql.FindMinMaxTime(&parser.EvalStmt{Expr: chain, Start: r.start, End: r.end, Interval: r.step, LookbackDelta: lookback})
		spans = append(spans, [2]int64{mint, maxt})
		return nil
	})
	return spans, nil
}

// probeWindow is the time span a query whose selectors read spans reads:
// every series it could read has samples in it. No selector, no bounds.
func probeWindow(spans [][2]int64) (int64, int64) {
	if len(spans) == 0 {
		return math.MinInt64, math.MaxInt64
	}
	mint, maxt := spans[0][0], spans[0][1]
	for _, sp := range spans[1:] {
		mint, maxt = min(mint, sp[0]), max(maxt, sp[1])
	}
	return mint, maxt
}

// fragmentSeries turns one group's answer into series for the synthetic
// selector: the group's labels the fragment keeps added (as on any series
// read from it), its samples where the group answered, and a stale marker
// at the first step after each run of values where the group had none, so
// the proxy's engine never carries a value over to a later step by
// lookback. A series gets at most one marker per point: an answer of many
// short-lived series stays as small as it came (a marker at every step
// would make series × steps points of a few-point answer).
func fragmentSeries(f *plan.Fragment, g plan.Group, ans *remote.QueryAnswer, r evalRange) ([]storage.Series, error) {
	if ans.Histograms {
		return nil, fmt.Errorf("%w: group %s answered native histograms", errNotExact, g.Name)
	}
	if len(ans.Warnings) > 0 {
		// Annotations name positions in the query text, which differ in
		// the pushed query: the proxy's own evaluation says them right.
		return nil, fmt.Errorf("%w: group %s answered with annotations: %v", errNotExact, g.Name, ans.Warnings)
	}
	start, end := r.start.UnixMilli(), r.end.UnixMilli()
	step := r.step.Milliseconds()
	onStep := func(t int64) bool {
		if step == 0 {
			return t == start
		}
		return t >= start && t <= end && (t-start)%step == 0
	}
	out := make([]storage.Series, 0, len(ans.Series))
	for _, s := range ans.Series {
		b := labels.NewBuilder(s.Labels)
		for _, name := range f.Keep {
			if v := g.Labels.Get(name); v != "" {
				b.Set(name, v)
			}
		}
		if f.Combined {
			b.Set(plan.GroupLabel, g.Name)
		}
		samples := make([]chunks.Sample, 0, len(s.T)+1)
		for i, t := range s.T {
			if !onStep(t) || i > 0 && t <= s.T[i-1] {
				return nil, fmt.Errorf("%w: group %s answered samples off the query's steps", errNotExact, g.Name)
			}
			if i > 0 && t > s.T[i-1]+step {
				samples = append(samples, floatSample{t: s.T[i-1] + step, f: math.Float64frombits(value.StaleNaN)})
			}
			samples = append(samples, floatSample{t: t, f: s.F[i]})
		}
		if n := len(s.T); step > 0 && n > 0 && s.T[n-1] < end {
			samples = append(samples, floatSample{t: s.T[n-1] + step, f: math.Float64frombits(value.StaleNaN)})
		}
		out = append(out, storage.NewListSeries(b.Labels(), samples))
	}
	return out, nil
}

// errPolicyRecheck: a pushed answer held a series the tenant's rules do
// not admit. The planner's proof says it cannot happen; the answer is
// dropped and the query evaluated in the proxy.
var errPolicyRecheck = errors.New("pushed answer fails the tenant's rules")

// recheck applies the tenant's policy to a fragment's answer whose series
// keep every label the rules name (plan.Fragment.Recheck), the group's
// labels added where a series lacks them, as the proxy shows its series.
func recheck(f *plan.Fragment, g plan.Group, ss []storage.Series, policy *tenancy.Policy) error {
	var b labels.Builder
	for _, s := range ss {
		b.Reset(s.Labels())
		g.Labels.Range(func(l labels.Label) {
			if b.Get(l.Name) == "" {
				b.Set(l.Name, l.Value)
			}
		})
		if !policy.Matches(b.Labels()) {
			return fmt.Errorf("%w: %w: fragment %s: group %s answered %s", errNotExact, errPolicyRecheck, f.ID, g.Name, s.Labels())
		}
	}
	return nil
}

type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }

// pushedQueryable serves the synthetic selectors from the fragments'
// answers and everything else from the fan-out.
type pushedQueryable struct {
	storage.Queryable
	answers map[string][]storage.Series
}

func (q *pushedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	inner, err := q.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &pushedQuerier{Querier: inner, answers: q.answers}, nil
}

type pushedQuerier struct {
	storage.Querier
	answers map[string][]storage.Series
}

func (q *pushedQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	for _, m := range ms {
		if m.Name != plan.SelectorLabel {
			continue
		}
		// The other matchers pick a part of the fragment's answer
		// (plan.PartLabel).
		var out []storage.Series
		for _, s := range q.answers[m.Value] {
			if matchesAll(s.Labels(), ms, plan.SelectorLabel) {
				out = append(out, s)
			}
		}
		return &seriesList{series: out}
	}
	return q.Querier.Select(ctx, sortSeries, hints, ms...)
}

// matchesAll reports whether ls matches every matcher but those on skip.
func matchesAll(ls labels.Labels, ms []*labels.Matcher, skip string) bool {
	for _, m := range ms {
		if m.Name != skip && !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}
