package engine

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/stats"
	"go.opentelemetry.io/otel/attribute"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// ReEvaluating runs a query once more when a group's streamed answer broke
// off after some of its series had reached the engine (StreamError): that
// query cannot fail over within the read, since the series already taken
// would count twice, but a fresh evaluation can, with the replica that
// broke off tried last in its group. A replica killed under load then costs
// the queries reading from it a second evaluation, not an error. So does an
// answer that came out of label order (remote.ErrUnsortedAnswer), after
// which the same replica is read whole. Any other failure, and a second
// break, is the query's answer as before.
type ReEvaluating struct {
	next   promql.QueryEngine
	logger *slog.Logger
	again  prometheus.Counter
}

// NewReEvaluating wraps next; reg may be nil.
func NewReEvaluating(next promql.QueryEngine, reg prometheus.Registerer, logger *slog.Logger) (*ReEvaluating, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &ReEvaluating{next: next, logger: logger, again: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "prometheus_proxy_reevaluations_total",
		Help: "Queries evaluated a second time because a group's streamed answer broke off mid-stream.",
	})}
	if reg != nil {
		if err := reg.Register(r.again); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// NewInstantQuery implements promql.QueryEngine.
func (r *ReEvaluating) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	return r.wrap(func() (promql.Query, error) { return r.next.NewInstantQuery(ctx, q, opts, qs, ts) })
}

// NewRangeQuery implements promql.QueryEngine.
func (r *ReEvaluating) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	return r.wrap(func() (promql.Query, error) { return r.next.NewRangeQuery(ctx, q, opts, qs, start, end, step) })
}

// wrap makes the first evaluation with newQuery, which makes the second too.
func (r *ReEvaluating) wrap(newQuery func() (promql.Query, error)) (promql.Query, error) {
	first, err := newQuery()
	if err != nil {
		return nil, err
	}
	return &reEvaluatedQuery{relayQuery: relayQuery{Query: first}, r: r, again: newQuery}, nil
}

type reEvaluatedQuery struct {
	relayQuery // the first evaluation; next: the second, once run
	r          *ReEvaluating
	again      func() (promql.Query, error)
}

// maxUnsortedReEvaluations bounds the evaluations a query makes again for
// answers out of label order. Each such answer switches its backend to
// whole reads for good, so a query meets at most one per backend of its
// groups; the bound is for a fleet of many such backends.
const maxUnsortedReEvaluations = 16

func (q *reEvaluatedQuery) Exec(ctx context.Context) *promql.Result {
	res := evaluate(ctx, q.Query, 1)
	for again := 0; ; again++ {
		if res.Err == nil || ctx.Err() != nil {
			return res
		}
		se := (*StreamError)(nil)
		broken := errors.As(res.Err, &se) && se.Replica != "" && q.next == nil
		// An answer out of label order made its client read whole from
		// now on: the same replica answers the next evaluation right.
		unsorted := errors.Is(res.Err, remote.ErrUnsortedAnswer) && again < maxUnsortedReEvaluations
		if !broken && !unsorted {
			return res
		}
		next, err := q.again()
		if err != nil {
			return res
		}
		if q.next != nil {
			q.next.Close() // its answer is dropped
		}
		q.next = next
		q.r.again.Inc()
		attrs := []any{"query", q.String(), "err", res.Err}
		if se != nil {
			attrs = append(attrs, "group", se.Group, "backend", se.Replica)
		}
		q.r.logger.WarnContext(ctx, "query evaluated again: a group's answer broke off mid-stream", attrs...)
		if broken {
			ctx = withReplicaLast(ctx, se.Group, se.Replica)
		}
		res = evaluate(ctx, next, again+2)
	}
}

// evaluate runs the engine on q under a span; attempt counts the
// evaluations of one query (more than one: re-evaluated).
func evaluate(ctx context.Context, q promql.Query, attempt int) *promql.Result {
	name := "evaluate"
	if attempt > 1 {
		name = "re-evaluate"
	}
	ctx, span := tracing.StartSpan(ctx, name, attribute.Int("attempt", attempt))
	defer span.End()
	res := q.Exec(ctx)
	tracing.Fail(span, res.Err)
	return res
}

// relayQuery is a query that may hand its evaluation over to a second one
// (push-down's rewritten query, a re-evaluation): its statistics are the
// second's once that ran, Cancel reaches both, Close releases both.
type relayQuery struct {
	promql.Query              // the first
	next         promql.Query // the one it handed over to, once it did
}

func (q *relayQuery) Stats() *stats.Statistics {
	if q.next != nil {
		return q.next.Stats()
	}
	return q.Query.Stats()
}

func (q *relayQuery) Cancel() {
	q.Query.Cancel()
	if q.next != nil {
		q.next.Cancel()
	}
}

func (q *relayQuery) Close() {
	if q.next != nil {
		q.next.Close()
	}
	q.Query.Close()
}

type replicaLastKey struct{}

// replicaLast names a group's replica to be tried after the others.
type replicaLast struct{ group, backend string }

func withReplicaLast(ctx context.Context, group, backend string) context.Context {
	prev, _ := ctx.Value(replicaLastKey{}).([]replicaLast)
	// A client's URL has no trailing slash; discovery's may.
	return context.WithValue(ctx, replicaLastKey{}, append(slices.Clip(prev), replicaLast{group, strings.TrimRight(backend, "/")}))
}

// orderForContext moves the replicas of g that ctx names (a previous
// evaluation's answer from them broke off) to the end, keeping the order of
// the others; with no other replica they are still tried.
func orderForContext(ctx context.Context, g string, replicas []*discovery.Replica) []*discovery.Replica {
	last, _ := ctx.Value(replicaLastKey{}).([]replicaLast)
	if len(last) == 0 {
		return replicas
	}
	named := func(r *discovery.Replica) bool {
		return slices.Contains(last, replicaLast{g, strings.TrimRight(redact.URL(r.URL), "/")})
	}
	out := make([]*discovery.Replica, 0, len(replicas))
	for _, r := range replicas {
		if !named(r) {
			out = append(out, r)
		}
	}
	for _, r := range replicas {
		if named(r) {
			out = append(out, r)
		}
	}
	return out
}
