// Package cache answers repeated PromQL queries from stored results: range queries
// are cut into extents on their own step grid, and only what is missing is evaluated.
package cache

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/stats"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/singleflight"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// QueryEngine is what the cache wraps and what it offers: the two
// constructors Prometheus' HTTP API calls.
type QueryEngine interface {
	NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error)
	NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error)
}

// Engine is what Prometheus' API handlers take as their engine.
var _ promql.QueryEngine = (*Engine)(nil)

// Engine is a QueryEngine that serves what it can from a Store and asks the
// wrapped engine for the rest. The tenant's policy comes from the context
// (tenancy.FromContext); its fingerprint is part of every key.
type Engine struct {
	next      QueryEngine
	store     Store // nil when caching is disabled
	storeName string
	parser    parser.Parser
	logger    *slog.Logger
	metrics   *metrics
	flight    singleflight.Group
	now       func() time.Time

	engineID  string
	keyPrefix string
	sealer    sealer
	scope     Scope // may be nil
	split     time.Duration
	freshness time.Duration
	ttl       time.Duration
}

// Scope is what answers depend on besides the query and the tenant. The
// cache reads it; whoever assembles the proxy knows what it is.
type Scope interface {
	// KeyScope is read on every query and goes into every key, such as
	// the set of backend groups: when it changes, older entries are no
	// longer found, so a group that appears or goes away is never hidden
	// by the cache.
	KeyScope() string
	// FlightScope is read from each execution's context and keeps
	// identical queries apart in request coalescing: what changes an
	// answer for one request but never reaches a stored entry, such as
	// whether a partial answer is acceptable.
	FlightScope(ctx context.Context) string
}

// New builds the cache described by cfg, which must have passed Validate,
// in front of next; scope may be nil. With caching disabled it returns an
// Engine that hands every query straight to next.
func New(cfg Config, next QueryEngine, scope Scope, reg prometheus.Registerer, logger *slog.Logger) (*Engine, error) {
	if next == nil {
		return nil, errors.New("cache: no query engine to wrap")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.Enabled {
		return &Engine{next: next, logger: logger}, nil
	}
	if err := cfg.loadSigningKey(); err != nil {
		return nil, err
	}
	var store Store
	switch cfg.Backend {
	case BackendMemory:
		store = NewMemoryStore(cfg.Memory.MaxBytes)
	case BackendRedis:
		redis.SetLogger(redisLog{logger.With("component", "redis")}) // process-wide in go-redis
		if cfg.signingKey == nil && cfg.Redis.Shared {
			return nil, ErrUnsignedSharedRedis
		}
		rs, err := NewRedisStore(cfg.Redis)
		if err != nil {
			return nil, err
		}
		store = rs
		if cfg.signingKey == nil {
			logger.Warn(unsignedRedisWarning)
		}
	}
	return newEngine(cfg, next, scope, store, cfg.Backend, reg, logger), nil
}

// ErrUnsignedSharedRedis refuses a Redis cache shared by several proxies
// without a signing key.
var ErrUnsignedSharedRedis = errors.New("cache.backend is redis with cache.redis.shared: true (the default) but no cache.signing_key: " +
	"every proxy would serve, to any tenant whose key it matches, whatever anything able to write to this Redis put there " +
	"(another deployment, a compromised pod, anyone with the Redis password); set cache.signing_key (32+ bytes, the same in every proxy), " +
	"or cache.redis.shared: false if this proxy alone uses the Redis")

// unsignedRedisWarning is logged at start when a Redis used by one proxy
// runs without a signing key.
const unsignedRedisWarning = "cache.backend is redis without cache.signing_key: entries are neither signed nor encrypted; " +
	"anything that can write to this Redis can plant answers the proxy will serve to tenants, and anything that can read it sees their results"

// newEngine wraps next with an existing store; cfg must be valid.
func newEngine(cfg Config, next QueryEngine, scope Scope, store Store, storeName string, reg prometheus.Registerer, logger *slog.Logger) *Engine {
	e := &Engine{
		next:      next,
		store:     store,
		storeName: storeName,
		parser:    parser.NewParser(parser.Options{EnableExperimentalFunctions: true}),
		logger:    logger.With("component", "cache", "store", storeName),
		metrics:   newMetrics(reg, storeName, store),
		now:       time.Now,
		engineID:  cfg.EngineID,
		keyPrefix: cfg.KeyPrefix,
		sealer:    sealer{key: cfg.signingKey},
		scope:     scope,
		split:     time.Duration(cfg.SplitInterval),
		freshness: time.Duration(cfg.MaxFreshness),
		ttl:       time.Duration(cfg.TTL),
	}
	e.logger.Info("results cache enabled", "split_interval", e.split, "max_freshness", e.freshness, "ttl", e.ttl)
	return e
}

// Close releases the store.
func (e *Engine) Close() error {
	if e.store == nil {
		return nil
	}
	return e.store.Close()
}

// AcquireQuerySlot lends the wrapped engine's concurrency limit to callers
// that hold only this Engine (Prometheus' cost estimation does).
func (e *Engine) AcquireQuerySlot(ctx context.Context, qs string) (func(), error) {
	if a, ok := e.next.(promql.QuerySlotAcquirer); ok {
		return a.AcquireQuerySlot(ctx, qs)
	}
	return func() {}, nil
}

// skip records why a query bypasses the cache.
func (e *Engine) skip(reason, qs string) {
	e.metrics.skipped.WithLabelValues(reason).Inc()
	e.logger.Debug("query not cached", "reason", reason, "query", qs)
}

// prepare checks what every cached query needs: a known tenant and an
// expression the cache can reason about. It returns the key fields shared
// by all of the query's entries.
func (e *Engine) prepare(ctx context.Context, opts promql.QueryOpts, qs string, kind string) (keyFields, shape, parser.Expr, bool) {
	tenant, ok := tenantField(tenancy.FromContext(ctx))
	if !ok {
		e.skip("no_fingerprint", qs)
		return nil, shape{}, nil, false
	}
	expr, err := e.parser.ParseExpr(qs)
	if err != nil {
		e.skip("parse", qs)
		return nil, shape{}, nil, false
	}
	s := inspect(expr)
	s.normalized = expr.String()
	if s.smoothed {
		e.skip("smoothed", qs)
		return nil, shape{}, nil, false
	}
	var scope string
	if e.scope != nil {
		scope = e.scope.KeyScope()
	}
	k := keyFields(nil).str(keySchema).str(e.keyPrefix).str(kind).str(e.engineID).str(scope).str(tenant).str(s.normalized)
	return optsFields(k, opts), s, expr, true
}

// NewInstantQuery implements QueryEngine. An instant query is cached only
// when its time is older than now - max_freshness.
func (e *Engine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	inner, err := e.next.NewInstantQuery(ctx, q, opts, qs, ts)
	if err != nil || e.store == nil {
		return inner, err
	}
	k, s, expr, ok := e.prepare(ctx, opts, qs, "instant")
	if !ok {
		return inner, nil
	}
	if s.offsetExpr && !resolveOffsets(&s, e.parser, qs, ts, ts, 0) {
		e.skip("offset_expr", qs)
		return inner, nil
	}
	tsMs := timeMilliseconds(ts)
	if !e.settled(max(tsMs, s.atMax), s.lead) {
		e.skip("fresh", qs)
		return inner, nil
	}
	k = k.int(tsMs)
	iq := &instantQuery{e: e, key: k.digest()}
	return e.newQuery(inner, qs, &parser.EvalStmt{Expr: expr, Start: ts, End: ts, LookbackDelta: lookback(opts)}, string(k), iq.exec), nil
}

// NewRangeQuery implements QueryEngine.
func (e *Engine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	// The wrapped engine builds the whole query first, so that a bad query
	// fails exactly as it would without the cache.
	inner, err := e.next.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil || e.store == nil {
		return inner, err
	}
	k, s, expr, ok := e.prepare(ctx, opts, qs, "range")
	if !ok {
		return inner, nil
	}
	if s.rangeDependent {
		e.skip("range_dependent", qs)
		return inner, nil
	}
	if s.offsetExpr && !resolveOffsets(&s, e.parser, qs, start, end, step) {
		e.skip("offset_expr", qs)
		return inner, nil
	}
	g, ok := newGrid(start, end, step, e.split)
	if !ok {
		e.skip("step", qs)
		return inner, nil
	}
	if !e.settled(max(g.start, s.atMax), s.lead) {
		e.skip("fresh", qs)
		return inner, nil
	}
	// Clipped, so that appending the fields of one extent never writes
	// into memory another key shares.
	k = slices.Clip(k.int(g.step).int(g.offset).int(g.points))
	rq := &rangeQuery{e: e, q: q, opts: opts, qs: qs, grid: g, key: k, lead: s.lead, atMax: s.atMax}
	flightKey := string(k.int(g.start).int(g.last))
	stmt := &parser.EvalStmt{Expr: expr, Start: start, End: end, Interval: step, LookbackDelta: lookback(opts)}
	return e.newQuery(inner, qs, stmt, flightKey, rq.exec), nil
}

// cutoff is the latest evaluation time whose answer may be stored, for a
// query that reads lead ms past its evaluation time.
func (e *Engine) cutoff(lead int64) int64 {
	return timeMilliseconds(e.now().Add(-e.freshness)) - lead
}

func (e *Engine) settled(t, lead int64) bool { return t <= e.cutoff(lead) }

func lookback(opts promql.QueryOpts) time.Duration {
	if opts == nil {
		return 0
	}
	return opts.LookbackDelta()
}

// The engine's own conversions (truncating), so that the grid here is the
// grid it evaluates on.
func timeMilliseconds(t time.Time) int64 { return t.UnixNano() / int64(time.Millisecond) }

func fromMilliseconds(ms int64) time.Time { return time.UnixMilli(ms) }

// execResult is what one execution produces; several callers may share it,
// so it owns all its memory and is never modified.
type execResult struct {
	value    parser.Value
	warnings annotations.Annotations
	err      error
	samples  *stats.QuerySamples
}

// query is the promql.Query handed to the API. inner is the wrapped
// engine's query over the whole request; it runs only when nothing of the
// answer is cached.
type query struct {
	e         *Engine
	qs        string
	stmt      *parser.EvalStmt
	flightKey string
	exec      func(ctx context.Context, inner promql.Query) *execResult
	timers    *stats.QueryTimers
	samples   *stats.QuerySamples

	mu     sync.Mutex
	inner  promql.Query
	cancel context.CancelFunc
}

func (e *Engine) newQuery(inner promql.Query, qs string, stmt *parser.EvalStmt, flightKey string, exec func(context.Context, promql.Query) *execResult) *query {
	return &query{
		e: e, qs: qs, stmt: stmt, flightKey: flightKey, exec: exec, inner: inner,
		timers:  stats.NewQueryTimers(),
		samples: stats.NewQuerySamples(false),
	}
}

// takeInner hands over the wrapped query to whoever runs it; after that
// Close no longer closes it.
func (q *query) takeInner() promql.Query {
	q.mu.Lock()
	defer q.mu.Unlock()
	in := q.inner
	q.inner = nil
	return in
}

func (q *query) Exec(ctx context.Context) *promql.Result {
	defer q.timers.GetTimer(stats.ExecTotalTime).Start().Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q.mu.Lock()
	q.cancel = cancel
	q.mu.Unlock()

	run := func() *execResult {
		inner := q.takeInner()
		if inner == nil {
			return &execResult{err: errors.New("cache: query executed twice")}
		}
		defer inner.Close()
		return q.exec(ctx, inner)
	}
	flightKey := q.flightKey
	if q.e.scope != nil {
		// Without this a query that refuses partial answers could be handed
		// a partial one computed for a caller that accepts them, or the
		// other way round an error it would not have had.
		flightKey += "\x00" + q.e.scope.FlightScope(ctx)
	}
	ctx, span := tracing.StartSpan(ctx, "cache", attribute.String("query", q.qs))
	defer span.End()
	v, _, shared := q.e.flight.Do(flightKey, func() (any, error) { return run(), nil })
	// A shared answer was computed for another request, under its span.
	span.SetAttributes(attribute.Bool("shared", shared))
	r := v.(*execResult)
	if shared && r.err != nil && isCancellation(r.err) && ctx.Err() == nil {
		// The caller that ran the shared execution went away; that is no
		// reason to fail this one.
		r = run()
	}
	if r.samples != nil {
		q.samples = r.samples
	}
	return &promql.Result{Value: shallowCopy(r.value), Warnings: copyAnnotations(r.warnings), Err: r.err}
}

func isCancellation(err error) bool {
	var canceled promql.ErrQueryCanceled
	var timeout promql.ErrQueryTimeout
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &canceled) || errors.As(err, &timeout)
}

func (q *query) Close() {
	if in := q.takeInner(); in != nil {
		in.Close()
	}
}

func (q *query) Statement() parser.Statement { return q.stmt }

func (q *query) Stats() *stats.Statistics {
	return &stats.Statistics{Timers: q.timers, Samples: q.samples}
}

func (q *query) Cancel() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cancel != nil {
		q.cancel()
	}
}

func (q *query) String() string { return q.qs }

// shallowCopy gives each caller its own top-level slice, which the API may
// truncate; points and histograms underneath are shared and read-only.
func shallowCopy(v parser.Value) parser.Value {
	switch v := v.(type) {
	case promql.Matrix:
		return append(promql.Matrix(nil), v...)
	case promql.Vector:
		return append(promql.Vector(nil), v...)
	}
	return v
}

// copyAnnotations: the API adds its own warnings to the map it gets.
func copyAnnotations(a annotations.Annotations) annotations.Annotations {
	if a == nil {
		return nil
	}
	c := make(annotations.Annotations, len(a))
	for k, v := range a {
		c[k] = v
	}
	return c
}

// runInner executes a wrapped query and copies its answer out, because
// closing the query recycles the memory the answer lives in.
func runInner(ctx context.Context, q promql.Query) *execResult {
	res := q.Exec(ctx)
	r := &execResult{warnings: res.Warnings, err: res.Err}
	if st := q.Stats(); st != nil {
		r.samples = st.Samples
	}
	if res.Err == nil {
		r.value = deepCopy(res.Value)
	}
	return r
}

// get looks keys up. A failing store answers nothing (ok false): every key
// is counted as a bypass and treated as missing.
func (e *Engine) get(ctx context.Context, keys []string) (vals [][]byte, ok bool) {
	vals, err := e.store.Get(ctx, keys...)
	if err == nil && len(vals) == len(keys) {
		return vals, true
	}
	e.metrics.requests.WithLabelValues(e.storeName, "bypass").Add(float64(len(keys)))
	if err != nil && !errors.Is(err, ErrUnavailable) {
		e.metrics.errors.WithLabelValues(e.storeName, "get").Inc()
		e.logger.Warn("cache lookup failed, asking the backends", "err", err)
	}
	return make([][]byte, len(keys)), false
}

func (e *Engine) set(ctx context.Context, entries []Entry) {
	if len(entries) == 0 {
		return
	}
	err := e.store.Set(ctx, e.ttl, entries...)
	if err != nil && !errors.Is(err, ErrUnavailable) {
		e.metrics.errors.WithLabelValues(e.storeName, "set").Inc()
		e.logger.Warn("cache write failed", "err", err)
	}
}

func (e *Engine) countLookup(hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	e.metrics.requests.WithLabelValues(e.storeName, result).Inc()
}

func (e *Engine) corrupt(key string, err error) {
	e.metrics.errors.WithLabelValues(e.storeName, "decode").Inc()
	e.logger.Warn("ignoring unreadable cache entry", "key", key, "err", err)
}

// instantQuery is one cached instant answer.
type instantQuery struct {
	e   *Engine
	key digest
}

func (iq *instantQuery) exec(ctx context.Context, inner promql.Query) *execResult {
	e := iq.e
	key := e.storeKey(iq.key)
	lookupCtx, span := tracing.StartSpan(ctx, "cache lookup", attribute.String("kind", "instant"))
	vals, ok := e.get(lookupCtx, []string{key})
	if b := vals[0]; b != nil {
		if p, ok := e.sealer.open(b, kindInstant, iq.key); ok {
			v, err := decodeInstant(p)
			if err == nil {
				e.countLookup(true)
				span.SetAttributes(attribute.Bool("hit", true))
				span.End()
				return &execResult{value: v}
			}
			e.corrupt(key, err)
		} else {
			e.corrupt(key, errCorrupt)
		}
	}
	span.SetAttributes(attribute.Bool("hit", false))
	span.End()
	if ok {
		e.countLookup(false)
	}
	r := runInner(ctx, inner)
	if r.err != nil || len(r.warnings) > 0 {
		return r
	}
	if b, ok := appendInstant(newValue(kindInstant, iq.key), r.value); ok {
		e.set(ctx, []Entry{{Key: key, Value: e.sealer.seal(b)}})
	}
	return r
}

// deepCopy copies an engine answer out of the memory its query recycles.
func deepCopy(v parser.Value) parser.Value {
	switch v := v.(type) {
	case promql.Matrix:
		m := make(promql.Matrix, len(v))
		for i, s := range v {
			m[i] = promql.Series{Metric: s.Metric.Copy(), DropName: s.DropName, Floats: cloneSlice(s.Floats)}
			if s.Histograms != nil {
				m[i].Histograms = make([]promql.HPoint, len(s.Histograms))
				for j, p := range s.Histograms {
					m[i].Histograms[j] = promql.HPoint{T: p.T, H: copyHistogram(p.H)}
				}
			}
		}
		return m
	case promql.Vector:
		vec := make(promql.Vector, len(v))
		for i, s := range v {
			s.Metric = s.Metric.Copy()
			s.H = copyHistogram(s.H)
			vec[i] = s
		}
		return vec
	}
	return v
}
