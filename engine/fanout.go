package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Backends is what the fan-out needs from discovery.
type Backends interface {
	Groups() []*discovery.Group
	ObserveCall(r *discovery.Replica, err error, latency time.Duration)
}

// FanoutOptions configures the fan-out Queryable.
type FanoutOptions struct {
	LoadBalancing   discovery.BalanceMode
	PartialResponse discovery.PartialMode
	Remote          remote.Config
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
}

// Fanout is a storage.Queryable over every backend group: each selector is
// sent to one replica of every group in parallel, with the tenant's rules
// added, and the answers are merged.
type Fanout struct {
	backends Backends
	opts     FanoutOptions
	metrics  *fanoutMetrics

	// One client (and connection pool) per replica URL in discovery. When a
	// URL leaves discovery its client is dropped and closed as soon as no
	// call uses it, so pods rescheduled for weeks leave no pools behind.
	mu      sync.Mutex
	clients map[string]*clientRef
	wanted  map[string]bool // URLs in discovery; nil until the first Retain
}

type clientRef struct {
	c       *remote.Client
	users   int
	retired bool // dropped from clients; closed when users reaches 0
}

type fanoutMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	skipped  *prometheus.CounterVec
	// dedupedSelects counts selects that shared an identical select's read.
	dedupedSelects prometheus.Counter
	partial        *prometheus.CounterVec
}

// NewFanout returns the fan-out Queryable; opts.Remote must have passed
// Validate.
func NewFanout(backends Backends, opts FanoutOptions) (*Fanout, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PartialResponse == "" {
		opts.PartialResponse = discovery.PartialWarn
	}
	m := &fanoutMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_backend_requests_total",
			Help: "Calls to backends, by group, backend URL, kind of call and result.",
		}, []string{"group", "backend", "kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prometheus_proxy_backend_request_duration_seconds",
			Help:    "Duration of calls to backends, by kind of call.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"kind"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_backend_groups_skipped_total",
			Help: "Groups not asked because their labels contradict the query, or the tenant's rules left nothing to ask.",
		}, []string{"reason"}),
		dedupedSelects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prometheus_proxy_deduplicated_selects_total",
			Help: "Selects of a query answered by the read of an identical select of the same query (same matchers, time range and hints).",
		}),
		partial: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_partial_fanouts_total",
			Help: "Fan-outs (one per selector or label call) in which a group failed, by outcome: warn (answered without it) or abort (failed with 503).",
		}, []string{"outcome"}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.skipped, m.dedupedSelects, m.partial} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return &Fanout{backends: backends, opts: opts, metrics: m, clients: map[string]*clientRef{}}, nil
}

// Close drops the idle connections to every backend.
func (f *Fanout) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for url, r := range f.clients {
		r.c.Close()
		delete(f.clients, url)
	}
}

// clientKey names the client of one replica of g. Groups may carry their
// own HTTP client settings or transport, so the key holds the group too.
func clientKey(g *discovery.Group, url string) string {
	if g.HTTPClient != nil || g.Transport != nil {
		return g.Name + "\x00" + url
	}
	return url
}

// Retain keeps the clients of the replicas in groups and drops the others;
// discovery calls it with every new list of groups.
func (f *Fanout) Retain(groups []*discovery.Group) {
	wanted := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Replicas {
			wanted[clientKey(g, r.URL)] = true
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wanted = wanted
	for key, r := range f.clients {
		if wanted[key] {
			continue
		}
		delete(f.clients, key)
		r.retired = true
		if r.users == 0 {
			r.c.Close()
		}
	}
}

// Clients is the number of backend clients held (for tests and debugging).
func (f *Fanout) Clients() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.clients)
}

// acquire returns the client of one replica of g and a release to call when
// the call is over; a client of a replica no longer in discovery lives only
// for that call.
func (f *Fanout) acquire(g *discovery.Group, url string) (*remote.Client, func(), error) {
	key := clientKey(g, url)
	f.mu.Lock()
	r, ok := f.clients[key]
	if !ok {
		cfg := f.opts.Remote
		var opts []remote.Option
		if g.HTTPClient != nil {
			cfg.HTTPClient = *g.HTTPClient
		}
		if g.Transport != nil {
			opts = append(opts, remote.WithTransport(g.Transport))
		}
		c, err := remote.New(url, cfg, opts...)
		if err != nil {
			f.mu.Unlock()
			return nil, nil, err
		}
		r = &clientRef{c: c}
		if f.wanted == nil || f.wanted[key] {
			f.clients[key] = r
		} else {
			// A probe or call that raced with the replica leaving discovery.
			r.retired = true
		}
	}
	r.users++
	f.mu.Unlock()
	return r.c, func() {
		f.mu.Lock()
		r.users--
		closeIt := r.retired && r.users == 0
		f.mu.Unlock()
		if closeIt {
			r.c.Close()
		}
	}, nil
}

// Probe is discovery's health check: readiness, then the replica's
// external labels. A backend that does not tell its configuration (not a
// Prometheus, or one that hides it) is taken to have none.
func (f *Fanout) Probe(ctx context.Context, g *discovery.Group, r *discovery.Replica) (labels.Labels, error) {
	c, release, err := f.acquire(g, r.URL)
	if err != nil {
		return labels.EmptyLabels(), err
	}
	defer release()
	if err := c.Ready(ctx); err != nil {
		return labels.EmptyLabels(), err
	}
	ext, err := c.ExternalLabels(ctx)
	if err != nil {
		f.opts.Logger.Debug("backend does not tell its external labels; taking none", "group", g.Name, "backend", r.URL, "err", err)
		return labels.EmptyLabels(), nil
	}
	return ext, nil
}

type partialKey struct{}

// WithPartialResponse overrides discovery.partial_response for one request
// (allow=true: warn, allow=false: abort), like Thanos' partial_response param.
func WithPartialResponse(ctx context.Context, allow bool) context.Context {
	return context.WithValue(ctx, partialKey{}, allow)
}

// PartialResponseScope names a request's partial_response override ("" when
// it has none), for whoever must keep requests with different choices apart.
func PartialResponseScope(ctx context.Context) string {
	v, ok := ctx.Value(partialKey{}).(bool)
	switch {
	case !ok:
		return ""
	case v:
		return string(discovery.PartialWarn)
	default:
		return string(discovery.PartialAbort)
	}
}

func (f *Fanout) allowPartial(ctx context.Context) bool {
	if v, ok := ctx.Value(partialKey{}).(bool); ok {
		return v
	}
	return f.opts.PartialResponse != discovery.PartialAbort
}

// Querier implements storage.Queryable.
func (f *Fanout) Querier(mint, maxt int64) (storage.Querier, error) {
	return &querier{f: f, mint: mint, maxt: maxt, failed: &failedGroups{}}, nil
}

// ChunkQuerier exists so the Queryable can be handed to Prometheus' API,
// which wants one for its remote-read endpoint; the proxy never routes that
// endpoint, and reading chunks would bypass nothing but is not supported.
func (f *Fanout) ChunkQuerier(int64, int64) (storage.ChunkQuerier, error) {
	return nil, errors.New("chunk queries are not supported by the proxy")
}

// GroupError says that no replica of a group could answer.
type GroupError struct {
	Group string
	Errs  []error
}

func (e *GroupError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("group %s unavailable: %s", e.Group, strings.Join(msgs, "; "))
}

func (e *GroupError) Unwrap() []error { return e.Errs }

// UnavailableError fails a query when a group is down and partial answers are
// not allowed. Prometheus' API answers errors that are tsdb.ErrNotReady with
// errorType "unavailable" and HTTP 503, which is exactly what this is.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, tsdb.ErrNotReady) true; see the type's comment.
func (e *UnavailableError) Is(target error) bool { return target == tsdb.ErrNotReady }

type querier struct {
	f          *Fanout
	mint, maxt int64
	failed     *failedGroups

	mu      sync.Mutex
	pending []*sharedRead          // reads not started yet, for prefetchOthers
	reads   map[string]*sharedRead // reads not started yet, by readKey
}

// lazy returns a set that runs start when first read (lazySeriesSet); a
// select with the same key as one not read yet shares its read.
func (q *querier) lazy(key string, start func(buffered bool) storage.SeriesSet) storage.SeriesSet {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r, ok := q.reads[key]; ok {
		r.views++
		q.f.metrics.dedupedSelects.Inc()
		return &lazySeriesSet{r: r}
	}
	r := &sharedRead{start: start, q: q, key: key, views: 1, done: make(chan struct{})}
	if q.reads == nil {
		q.reads = map[string]*sharedRead{}
	}
	q.reads[key] = r
	q.pending = append(q.pending, r)
	return &lazySeriesSet{r: r}
}

func (*querier) Close() error { return nil }

// failedGroups remembers the groups that failed during one query. The engine
// selects once per selector, one after another, so without it a query with
// five selectors would wait five times for a hung group.
type failedGroups struct {
	mu   sync.Mutex
	errs map[string]error
}

// get returns the group's earlier failure; m may be nil (nothing remembered).
func (m *failedGroups) get(group string) error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.errs[group]
}

func (m *failedGroups) put(group string, err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.errs == nil {
		m.errs = map[string]error{}
	}
	m.errs[group] = err
}

// groupResult is what one group answered.
type groupResult[T any] struct {
	val T
	err error
}

// fanOut calls fn on one replica of every group that can hold data for the
// matcher sets (nil: no matchers), failing over between replicas, in
// parallel. Each group is given the sets rewritten for its external labels
// (discovery.Group.RewriteMatchers); a group none of them can match is not
// asked. It returns the answers of the
// groups that answered and either an error or warnings naming the groups
// that did not. It fails when partial answers are not allowed, and also when
// every group asked failed: an answer made of nothing is not a partial one.
// Groups that failed earlier in the same query (failed) are not asked again.
func fanOut[T any](ctx context.Context, f *Fanout, failed *failedGroups, kind callKind, sets [][]*labels.Matcher, fn func(context.Context, *discovery.Group, [][]*labels.Matcher, *remote.Client) (T, error)) ([]T, annotations.Annotations, error) {
	groups := f.backends.Groups()
	results := make([]groupResult[T], len(groups))
	asked := make([]bool, len(groups))
	var (
		wg      sync.WaitGroup
		skipped []string
	)
	for i, g := range groups {
		gsets, ok, reason := g.RewriteMatchers(sets)
		if !ok {
			f.skipGroup(ctx, g.Name, SkipGroupLabels, reason)
			skipped = append(skipped, g.Name+" ("+string(SkipGroupLabels)+")")
			continue
		}
		asked[i] = true
		if err := failed.get(g.Name); err != nil {
			results[i].err = err
			continue
		}
		wg.Go(func() {
			defer func() {
				// A panic here would end the process: the HTTP server only
				// recovers the request's own goroutine.
				if p := recover(); p != nil {
					f.opts.Logger.Error("panic calling group", "group", g.Name, "kind", kind, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					results[i].err = &GroupError{Group: g.Name, Errs: []error{fmt.Errorf("internal error: %v", p)}}
				}
			}()
			results[i].val, results[i].err = callGroup(ctx, f, g, kind, func(ctx context.Context, c *remote.Client) (T, error) {
				return fn(ctx, g, gsets, c)
			})
		})
	}
	wg.Wait()

	var (
		out  []T
		errs []error
	)
	for i, r := range results {
		if !asked[i] {
			continue
		}
		if r.err == nil {
			out = append(out, r.val)
			continue
		}
		if ctx.Err() != nil {
			return nil, nil, contextError(ctx, kind)
		}
		if ge := (*GroupError)(nil); errors.As(r.err, &ge) {
			failed.put(ge.Group, r.err)
		}
		errs = append(errs, tenantSafe(ctx, r.err))
	}
	if len(errs) == 0 {
		if len(groups) > 0 && len(skipped) == len(groups) {
			var warns annotations.Annotations
			warns.Add(&SkippedWarning{Kind: string(kind), Groups: skipped})
			return out, warns, nil
		}
		return out, nil, nil
	}
	if !f.allowPartial(ctx) || len(out) == 0 {
		f.metrics.partial.WithLabelValues("abort").Inc()
		return nil, nil, &UnavailableError{Err: joinErrors(errs)}
	}
	f.metrics.partial.WithLabelValues("warn").Inc()
	var warns annotations.Annotations
	for _, err := range errs {
		warns.Add(fmt.Errorf("partial response: %w", err))
	}
	return out, warns, nil
}

// tenantSafe is what a tenant may read of a backend failure: the group's
// name, never a backend's URL, name or answer (a URL may hold credentials,
// an answer another tenant's data). Admins and a proxy without tenancy get
// the whole error; operators find it in the log and /debug/targets either way.
func tenantSafe(ctx context.Context, err error) error {
	if tenancy.FromContext(ctx).Unrestricted() {
		return err
	}
	re := &RedactedError{Err: err}
	if ge := (*GroupError)(nil); errors.As(err, &ge) {
		re.Group = ge.Group
	}
	if se := (*StreamError)(nil); errors.As(err, &se) {
		re.Group, re.brokeOff = se.Group, true
	}
	return re
}

// RedactedError is a backend failure as a tenant sees it. It unwraps to the
// whole error, for errors.Is/As.
type RedactedError struct {
	Group    string
	Err      error
	brokeOff bool // the group's answer broke off mid-stream (StreamError)
}

func (e *RedactedError) Error() string {
	if e.brokeOff {
		return fmt.Sprintf("group %s: answer broke off mid-stream (details in the proxy's log)", e.Group)
	}
	if e.Group == "" {
		return "a backend failed (details in the proxy's log)"
	}
	return fmt.Sprintf("group %s unavailable (details in the proxy's log)", e.Group)
}

func (e *RedactedError) Unwrap() error { return e.Err }

// contextError is what the engine itself says when a query's context ends,
// so the API answers errorType "timeout" (503) or "canceled" as Prometheus
// does, rather than "execution".
// A query canceled for a reason of its own (a cost limit, see
// remote.Budget) fails with that reason.
func contextError(ctx context.Context, kind callKind) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	where := string(kind) + " fan-out to backends"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return promql.ErrQueryTimeout(where)
	}
	return promql.ErrQueryCanceled(where)
}

// joinErrors keeps every error for errors.Is/As and reads as one line.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	args := make([]any, len(errs))
	for i, err := range errs {
		args[i] = err
	}
	return fmt.Errorf(strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; "), args...)
}

// callGroup tries the group's replicas in order until one answers. A replica
// that fails is reported to discovery (passive health) and the next is tried,
// within the same request.
func callGroup[T any](ctx context.Context, f *Fanout, g *discovery.Group, kind callKind, fn func(context.Context, *remote.Client) (T, error)) (T, error) {
	var (
		zero T
		errs []error
	)
	ctx, span := tracing.StartSpan(ctx, "group "+string(kind), attribute.String("group", g.Name))
	defer span.End()
	replicas := orderForContext(ctx, g.Name, g.Order(f.opts.LoadBalancing))
	if len(replicas) == 0 {
		err := &GroupError{Group: g.Name, Errs: []error{errors.New("no replicas")}}
		tracing.Fail(span, err)
		return zero, err
	}
	for i, r := range replicas {
		backend := redact.URL(r.URL)
		if i > 0 {
			// The previous replica failed: the next one is asked.
			span.AddEvent("failover", trace.WithAttributes(attribute.String("replica", backend)))
		}
		// Waiting for the query's and the tenant's share of calls in
		// flight is the proxy's own queueing: it ends only with the query,
		// and never counts against the replica.
		endCall, err := remote.AcquireCall(ctx)
		if err != nil {
			f.metrics.requests.WithLabelValues(g.Name, backend, string(kind), "canceled").Inc()
			err = contextError(ctx, kind)
			tracing.Fail(span, err)
			return zero, err
		}
		c, release, err := f.acquire(g, r.URL)
		if err != nil {
			endCall()
			errs = append(errs, err)
			continue
		}
		start := time.Now()
		callCtx, call := tracing.StartSpan(ctx, "replica "+string(kind), attribute.String("group", g.Name), attribute.String("replica", backend), attribute.Int("attempt", i+1))
		v, err := fn(callCtx, c)
		tracing.Fail(call, err)
		call.End()
		took := time.Since(start)
		release()
		endCall()
		f.metrics.duration.WithLabelValues(string(kind)).Observe(took.Seconds())
		if o := observerFrom(ctx); o != nil {
			o.Called(g.Name, backend, err)
		}
		if err == nil {
			f.metrics.requests.WithLabelValues(g.Name, backend, string(kind), "success").Inc()
			f.backends.ObserveCall(r, nil, took)
			return v, nil
		}
		if ctx.Err() != nil {
			// The client went away or the query timed out: not the replica's fault.
			f.metrics.requests.WithLabelValues(g.Name, backend, string(kind), "canceled").Inc()
			return zero, err
		}
		f.metrics.requests.WithLabelValues(g.Name, backend, string(kind), "error").Inc()
		if apiErr := (*remote.APIError)(nil); errors.As(err, &apiErr) && apiErr.Type == "bad_data" {
			// Every replica would refuse the same request.
			return zero, err
		}
		f.backends.ObserveCall(r, err, took)
		f.opts.Logger.WarnContext(ctx, "backend call failed", "group", g.Name, "backend", backend, "kind", kind, "err", err)
		errs = append(errs, err)
	}
	err := &GroupError{Group: g.Name, Errs: errs}
	tracing.Fail(span, err)
	return zero, err
}
