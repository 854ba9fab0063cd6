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
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
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
	// groupEvals counts the groups' parts of pushed queries by who
	// evaluated them: the group's backend, or the proxy over its data.
	groupEvals *prometheus.CounterVec
	ng         *PromQL
	fanout     *Fanout
	planner    *plan.Planner
	lookback   time.Duration
	logger     *slog.Logger
	plans      planCache
	// minSamplesPerPoint is engine.push_down.min_samples_per_point.
	minSamplesPerPoint float64
	// foldLacking, per group and group label ("group\x00label"), says a
	// mixed probe's Lacking side is the one to fold into the query (see
	// mixedOrder). Bounded by the groups and their labels.
	foldLacking sync.Map
}

// NewPushDown wraps ng. cfg is the engine config (validated).
func NewPushDown(ng *PromQL, f *Fanout, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*PushDown, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &PushDown{ng: ng, fanout: f, planner: plan.New(cfg.PushDown, Parser()), lookback: time.Duration(cfg.LookbackDelta), logger: logger,
		minSamplesPerPoint: cfg.PushDown.MinSamplesPerPoint}
	p.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prometheus_proxy_pushdown_queries_total",
		Help: "Queries with parts the backends may evaluate, by outcome: pushed (their answers used), fallback (evaluated in the proxy: a backend could not answer exactly) or cheaper_in_proxy (evaluated in the proxy: the last pushed answers were about as large as what the backends read).",
	}, []string{"outcome"})
	p.groupEvals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prometheus_proxy_pushdown_group_queries_total",
		Help: "Groups' parts of pushed queries, by who evaluated them: backend (the group's Prometheus) or proxy (the proxy's engine over the group's data, read by remote read: the backend's release or flags evaluate differently).",
	}, []string{"evaluated_by"})
	if reg != nil {
		for _, c := range []prometheus.Collector{p.outcomes, p.groupEvals} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// PlanGroups implements plan.Groups: a group's external and configured
// labels, which the proxy adds to every series of the group that does not
// store them (discovery's ApplyExternalLabels), and its replica labels,
// which it drops.
func (f *Fanout) PlanGroups() []plan.Group {
	return planGroups(f.backends.Groups())
}

func planGroups(gs []*discovery.Group) []plan.Group {
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

// cachedPlan is the plan of qs under the request's tenant, from planCache
// when the same query was planned for the same rules and groups before.
func (p *PushDown) cachedPlan(ctx context.Context, qs string) (*cachedPlan, error) {
	policy := tenancy.FromContext(ctx)
	k, cacheable, pgs := p.planKey(qs, policy)
	if cacheable {
		if cp := p.plans.get(k); cp != nil {
			return cp, nil
		}
	}
	expr, err := Parser().ParseExpr(qs)
	if err != nil {
		return nil, err
	}
	pl := p.planner.Plan(expr, pgs, policy)
	cp := &cachedPlan{plan: pl, rewritten: pl.Expr.String()}
	if cacheable {
		p.plans.put(k, cp)
	}
	return cp, nil
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
			// What the execution would decide for the group: its release
			// and its feature flags, as evaluatedByProxy reads them.
			why, err := callGroup(ctx, p.fanout, g, callVersion, func(ctx context.Context, c *remote.Client) (string, error) {
				return evaluatedByProxy(ctx, c, evaluatesAsProxy, []string{gq.Query})
			})
			switch {
			case err != nil:
				f.Queries[i].Refused = "its release could not be read: " + tenantSafe(ctx, err).Error()
			case why != "":
				f.Queries[i].InProxy = why
			}
		}
	}
	out := pl.Explain()
	if cp := p.cachedOnly(ctx, qs); cp != nil {
		now := time.Now()
		for _, instant := range []bool{false, true} {
			kind := "range"
			if instant {
				kind = "instant"
			}
			if why := cp.notWorth(instant, p.minSamplesPerPoint, now); why != "" {
				out += "kept in proxy: " + kind + " queries: " + why + "\n"
			}
		}
	}
	return out, nil
}

// cachedOnly is the cached plan of qs under the request's tenant, or nil.
func (p *PushDown) cachedOnly(ctx context.Context, qs string) *cachedPlan {
	k, cacheable, _ := p.planKey(qs, tenancy.FromContext(ctx))
	if !cacheable {
		return nil
	}
	return p.plans.get(k)
}

// planKey is the plan cache's key for qs under policy over the groups as
// they are now, and those groups as the planner sees them.
func (p *PushDown) planKey(qs string, policy *tenancy.Policy) (planKey, bool, []plan.Group) {
	groups := p.fanout.backends.Groups()
	pgs := planGroups(groups)
	k, cacheable := planCacheKey(qs, policy, groups, pgs)
	return k, cacheable, pgs
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
	_, span := tracing.StartSpan(ctx, "plan")
	cp, err := p.cachedPlan(ctx, qs)
	if err == nil {
		planAttributes(span, cp.plan, nil)
	} else {
		planAttributes(span, nil, err)
	}
	span.End()
	if err != nil || !cp.plan.Pushed() {
		return orig
	}
	if why := cp.notWorth(r.step == 0, p.minSamplesPerPoint, time.Now()); why != "" {
		p.logger.DebugContext(ctx, "push-down not used", "query", cp.rewritten, "reason", why)
		trace.SpanFromContext(ctx).AddEvent("push-down not used", trace.WithAttributes(attribute.String("reason", why)))
		p.outcomes.WithLabelValues("cheaper_in_proxy").Inc()
		return orig
	}
	return &pushedQuery{relayQuery: relayQuery{Query: orig}, p: p, plan: cp, policy: tenancy.FromContext(ctx), q: q, opts: opts, r: r}
}

// pushedQuery runs the plan's fragments on the backends first; then either
// the rewritten query over their answers or, when a fragment cannot be
// answered exactly, the original query.
type pushedQuery struct {
	relayQuery // the original (Statement, String, the fallback); next: the rewritten query, once run
	p          *PushDown
	plan       *cachedPlan
	policy     *tenancy.Policy
	q          storage.Queryable
	opts       promql.QueryOpts
	r          evalRange
}

func (pq *pushedQuery) Exec(ctx context.Context) *promql.Result {
	answers, cost, err := pq.p.fetch(ctx, pq.plan, pq.policy, pq.r, pq.lookback(), samplesLimitOf(pq.opts))
	if err == nil {
		pq.plan.learn(pq.r.step == 0, cost, time.Now())
	}
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
		pq.p.logger.Log(ctx, level, "push-down not used", "query", pq.plan.rewritten, "reason", err.Error())
		trace.SpanFromContext(ctx).AddEvent("push-down not used", trace.WithAttributes(attribute.String("reason", err.Error())))
		pq.p.outcomes.WithLabelValues("fallback").Inc()
		return pq.Query.Exec(ctx)
	}
	rq := &pushedQueryable{Queryable: pq.q, answers: answers}
	var rewritten promql.Query
	if pq.r.step == 0 {
		rewritten, err = pq.p.ng.NewInstantQuery(ctx, rq, pq.opts, pq.plan.rewritten, pq.r.start)
	} else {
		rewritten, err = pq.p.ng.NewRangeQuery(ctx, rq, pq.opts, pq.plan.rewritten, pq.r.start, pq.r.end, pq.r.step)
	}
	if err != nil {
		// The rewritten query is the planner's own text: it must parse.
		pq.p.logger.Error("push-down: rewritten query refused", "query", pq.plan.rewritten, "err", err)
		return pq.Query.Exec(ctx)
	}
	pq.next = rewritten
	pq.p.outcomes.WithLabelValues("pushed").Inc()
	return rewritten.Exec(ctx)
}

// samplesLimitOf is the max_samples_per_query the query's options carry, 0
// for none.
func samplesLimitOf(opts promql.QueryOpts) uint64 {
	if c, ok := opts.(promql.QueryCostOpts); ok {
		return c.MaxSamplesRead()
	}
	return 0
}

// evaluatedByProxy says why the group's backend (c) would not evaluate the
// group's queries as the proxy's engine does — its release, or a feature
// flag — so that the proxy's engine evaluates them over the group's data;
// "" when the backend evaluates them. sameAnswer is evaluatesAsProxy or a
// plan's memo of it.
func evaluatedByProxy(ctx context.Context, c *remote.Client, sameAnswer func(version, query string) (bool, string), queries []string) (string, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	for _, q := range queries {
		if ok, why := sameAnswer(v, q); !ok {
			return why, nil
		}
	}
	flags, err := c.Flags(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		return fmt.Sprintf("does not tell its feature flags (%v), and some change what a query answers", err), nil
	}
	if f := answerChangingFeature(flags["enable-feature"]); f != "" {
		return fmt.Sprintf("runs with --enable-feature=%s, which the proxy's engine does not, and its answers differ", f), nil
	}
	return "", nil
}

// planAttributes says on the planning span whether anything was pushed
// and why each node was or was not.
func planAttributes(span trace.Span, pl *plan.Plan, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		tracing.Fail(span, err)
		return
	}
	span.SetAttributes(attribute.Bool("pushed", pl.Pushed()), attribute.Int("fragments", len(pl.Fragments)))
	reasons := make([]string, 0, len(pl.Decisions))
	for _, d := range pl.Decisions {
		verdict := "local"
		if d.Pushed {
			verdict = "pushed"
		}
		reasons = append(reasons, fmt.Sprintf("%s: %s: %s", d.Node, verdict, d.Reason))
	}
	span.SetAttributes(attribute.StringSlice("decisions", reasons))
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

// fetch asks every group the plan names for all of its fragments and
// probes in one query (foldGroup), in parallel, and turns the answers into
// series for the synthetic selectors.
func (p *PushDown) fetch(ctx context.Context, cp *cachedPlan, policy *tenancy.Policy, r evalRange, lookback time.Duration, samplesLimit uint64) (map[string][]storage.Series, pushCost, error) {
	pl := cp.plan
	byName := p.groupsByName()
	for _, f := range pl.Fragments {
		for _, gq := range f.Queries {
			if gq.Skipped != "" {
				// The tenant's rules meet the group's labels nowhere.
				p.fanout.skipGroup(ctx, gq.Group.Name, SkipTenantRules, gq.Skipped)
			}
		}
	}
	jobs, err := groupJobs(pl, r, lookback)
	if err != nil {
		return nil, pushCost{}, err
	}
	// The proxy's own evaluations of groups' parts run this many at once
	// (PromQL.partsAtOnce: each is held to that share of max_samples).
	partsAtOnce := make(chan struct{}, p.ng.partsAtOnce)
	results := make([]map[string][]storage.Series, len(jobs))
	costs := make([]pushCost, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		g := byName[j.group.Name]
		if g == nil {
			return nil, pushCost{}, fmt.Errorf("%w: group %s is gone", errNotExact, j.group.Name)
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
				parts   []*remote.QueryAnswer
				cost    pushCost
				refused error
			}
			ids := make([]string, len(j.frags))
			for k, f := range j.frags {
				ids[k] = f.ID
			}
			ctx, span := tracing.StartSpan(ctx, "push-down group", attribute.String("group", g.Name), attribute.StringSlice("fragments", ids))
			defer span.End()
			a, err := callGroup(ctx, p.fanout, g, callQuery, func(ctx context.Context, c *remote.Client) (answer, error) {
				refuse := func(format string, args ...any) (answer, error) {
					return answer{refused: fmt.Errorf("%w: group %s "+format, append([]any{errNotExact, g.Name}, args...)...)}, nil
				}
				inProxy, err := evaluatedByProxy(ctx, c, cp.evaluatesAsProxy, j.queries)
				if err != nil {
					return answer{}, err
				}
				eval := c.Query
				if inProxy != "" {
					// Not the backend's engine: the proxy's, over the
					// group's data (groupeval.go), beside the other groups.
					span.SetAttributes(attribute.String("evaluated_by", "proxy"), attribute.String("reason", inProxy))
					p.logger.DebugContext(ctx, "push-down: a group's part evaluated by the proxy over its data", "group", g.Name, "reason", inProxy)
					eval = func(ctx context.Context, qp remote.QueryParams) (*remote.QueryAnswer, error) {
						select {
						case partsAtOnce <- struct{}{}:
						case <-ctx.Done():
							return nil, contextError(ctx, callQuery)
						}
						defer func() { <-partsAtOnce }()
						return p.evalOnGroupData(ctx, c, qp, samplesLimit)
					}
				}
				mint, maxt := probeWindow(j.spans)
				mixed := p.mixedOrder(g.Name, j.mixed)
				fq := foldGroup(j.queries, j.probe, mixed, mint, maxt)
				span.SetAttributes(attribute.String("query", fq.query))
				// Probes that could not be folded go to the series
				// endpoint, beside the query; the answer waits for them.
				var (
					probeFound bool
					mixedBoth  = make([]bool, len(mixed))
					probeErr   error
					probed     sync.WaitGroup
					mu         sync.Mutex
				)
				if fq.probesApart {
					if len(j.probe) > 0 {
						probed.Go(func() {
							f, _, err := c.SeriesLimit(ctx, mint, maxt, j.probe, 1)
							mu.Lock()
							probeFound, probeErr = len(f) > 0, cmp.Or(probeErr, err)
							mu.Unlock()
						})
					}
					for k, mp := range mixed {
						probed.Go(func() {
							both, err := mixedFound(ctx, c, mint, maxt, mp)
							mu.Lock()
							mixedBoth[k], probeErr = both, cmp.Or(probeErr, err)
							mu.Unlock()
						})
					}
				}
				qp := remote.QueryParams{
					Query: fq.query, Start: r.start.UnixMilli(), End: r.end.UnixMilli(), Step: r.step, LookbackDelta: lookback,
					Spans: j.spans, Stats: true,
				}
				var (
					ans    *remote.QueryAnswer
					pieces = 1
				)
				if inProxy != "" {
					// The proxy's engine yields as it reads: no pieces,
					// which would read the data once per piece.
					ans, err = eval(ctx, qp)
				} else {
					ans, pieces, err = queryInPieces(ctx, qp, eval)
				}
				span.SetAttributes(attribute.Int("pieces", pieces))
				probed.Wait()
				if probeErr != nil {
					return answer{}, probeErr
				}
				if errors.Is(err, errGroupEval) {
					return answer{refused: fmt.Errorf("%w: group %s: %w", errNotExact, g.Name, err)}, nil
				}
				if apiErr := (*remote.APIError)(nil); errors.As(err, &apiErr) && apiErr.Code < 500 {
					return answer{refused: fmt.Errorf("%w: %w", errNotExact, err)}, nil
				}
				if err != nil {
					return answer{}, err
				}
				evaluatedBy := "backend"
				if inProxy != "" {
					evaluatedBy = "proxy"
				}
				p.groupEvals.WithLabelValues(evaluatedBy).Inc()
				parts, err := fq.split(ans)
				if err != nil {
					return refuse("%v", err)
				}
				cost := answerCost(ans)
				if inProxy != "" {
					cost.byProxy = 1
				} else {
					cost.byBackend = 1
				}
				if probeFound || parts.probeFound {
					return refuse("holds series whose stored %s is not the group's, which the query reads", pl.Label)
				}
				// A folded side that matched needs the other side asked:
				// both together refuse.
				for k, found := range parts.storedFound {
					if found {
						p.foldedFound(g.Name, mixed[k].Label)
						// The folded side read all it matched: not what
						// the query costs once the order is learned.
						cost.untold = true
					}
					if found && !mixedBoth[k] {
						f, _, err := c.SeriesLimit(ctx, mint, maxt, mixed[k].Lacking, 1)
						if err != nil {
							return answer{}, err
						}
						mixedBoth[k] = len(f) > 0
					}
				}
				for k, both := range mixedBoth {
					if both {
						l := mixed[k].Label
						return refuse("holds series storing its %s=%q beside series lacking %s, which the query matches or groups by", l, g.ExternalLabels().Get(l), l)
					}
				}
				return answer{parts: parts.fragments, cost: cost}, nil
			})
			if err == nil {
				err = a.refused
				if err != nil {
					span.SetAttributes(attribute.String("refused", err.Error()))
				}
			} else {
				tracing.Fail(span, err)
			}
			if err != nil {
				errs[i] = err
				return
			}
			costs[i] = a.cost
			results[i] = map[string][]storage.Series{}
			for k, f := range j.frags {
				ss, err := fragmentSeries(f, j.group, a.parts[k], r)
				if err == nil && f.Recheck {
					err = recheck(f, j.group, ss, policy)
				}
				if err != nil {
					errs[i] = err
					return
				}
				results[i][f.ID] = append(results[i][f.ID], ss...)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, pushCost{}, err
	}
	var cost pushCost
	for _, c := range costs {
		cost = cost.add(c)
	}
	out := map[string][]storage.Series{}
	for _, byFragment := range results {
		for id, ss := range byFragment {
			out[id] = append(out[id], ss...)
		}
	}
	if err := sortDisjoint(out); err != nil {
		return nil, pushCost{}, err
	}
	for _, f := range pl.Fragments {
		if f.Ranked != nil {
			if err := rankedDecided(f, out[f.ID]); err != nil {
				return nil, pushCost{}, err
			}
		}
	}
	return out, cost, nil
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
