package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// errorType for requests refused for load, as Mimir answers them (429);
// clients such as Grafana retry them after Retry-After.
const errorTooManyRequests errorType = "too_many_requests"

// admit runs each API request under its tenant's limits: it refuses too
// many match[] before anything is sent to a backend, waits for a slot of
// the fair scheduler (429 with Retry-After when the tenant's queue is full
// or the wait exceeds queue_timeout), and runs the request with a budget
// that the remote reads charge as they decode. Limit errors are 422
// "execution" errors naming the limit and its value.
func (s *Server) admit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		tenant, label := s.admissionTenant(r)
		limits := s.sched.Config().For(tenant)
		if p := tenancy.FromContext(r.Context()); p != nil && len(p.Namespaces) > 1 {
			limits = s.sched.Config().ForAll(tenant, p.Namespaces)
		}
		// Every refusal by a limit or the queue adds to the tenant's debt;
		// a tenant deep in debt waits before its request is looked at.
		defer func() {
			if reason, _ := c.Get(limitKey).(string); reason != "" && reason != admission.ReasonRefusalBackoff {
				s.sched.NoteRefused(tenant, limits)
			}
		}()
		if err := s.awaitRefusals(c, tenant, label, limits); err != nil {
			return err
		}
		if err := admission.CheckMatchers(limits, len(r.Form["match[]"])); err != nil {
			return s.limitError(c, label, err)
		}
		if err := checkSelectors(limits, r.Form.Get("query")); err != nil {
			return s.limitError(c, label, err)
		}
		if err := s.admitListing(c, label, limits); err != nil {
			return err
		}
		waitCtx, wait := tracing.StartSpan(r.Context(), "admission wait", attribute.String("tenant", label))
		release, err := s.sched.Acquire(waitCtx, tenant, label)
		tracing.Fail(wait, err)
		wait.End()
		if err != nil {
			return s.queueRefusal(c, err)
		}
		defer release()
		s.metrics.inflight.Inc()
		defer s.metrics.inflight.Dec()

		turn := s.sched.StartTurn(tenant)
		defer turn.Done()
		ctx, budget := admission.NewBudget(r.Context(), limits)
		defer budget.Done()
		calls, leave := s.sched.TenantCalls(tenant)
		defer leave()
		budget.ShareTenantCalls(calls)
		ctx = remote.WithBudget(context.WithValue(ctx, budgetKey{}, budget), budget)
		if turn != nil {
			budget.PauseFor(turn)
			ctx = engine.WithContention(engine.WithYield(ctx, turn.Yield), turn.Contended)
		}
		c.SetRequest(r.WithContext(ctx))
		// A tenant ahead of a neighbour in its share of the CPU waits before
		// its query asks the backends for anything: once a read is sent, the
		// backend works on it whether or not the proxy pauses.
		if turn != nil {
			_, yield := tracing.StartSpan(ctx, "admission turn")
			err = turn.Yield(ctx)
			tracing.Fail(yield, err)
			yield.End()
			if err != nil {
				return apiError(499, errorCanceled, err.Error())
			}
		}

		if turn != nil {
			// Compressing and sending a large answer takes CPU too: it
			// pauses between the pieces it writes.
			yw := &yieldingWriter{ResponseWriter: c.Response().Writer, ctx: ctx, turn: turn}
			c.Response().Writer = yw
			defer func() { c.Response().Writer = yw.ResponseWriter }()
		}
		var sized *sizeLimitWriter
		if limits.MaxResponseBytes > 0 {
			sized = &sizeLimitWriter{ResponseWriter: c.Response().Writer, max: limits.MaxResponseBytes}
			c.Response().Writer = sized
		}
		err = next(c)
		if berr := budget.Err(); berr != nil {
			s.countLimit(c, label, berr)
		}
		if sized != nil {
			resp := c.Response()
			resp.Writer = sized.ResponseWriter
			if sized.over {
				// Nothing reached the client yet: answer the limit instead.
				resp.Committed, resp.Status, resp.Size = false, 0, 0
				return s.limitError(c, label, admission.ResponseTooLarge(limits))
			}
			if err == nil {
				sized.flush()
			}
		}
		return err
	}
}

// queueRefusal answers a request that got no slot: 429 with Retry-After
// for a *admission.QueueError, 499 when the client went away first.
func (s *Server) queueRefusal(c echo.Context, err error) error {
	s.metrics.rejected.Inc()
	if qe := (*admission.QueueError)(nil); errors.As(err, &qe) {
		c.Set(limitKey, qe.Reason)
		c.Response().Header().Set("Retry-After", admission.RetryAfterSeconds(qe.RetryAfter))
		return apiError(http.StatusTooManyRequests, errorTooManyRequests, qe.Msg)
	}
	return apiError(499, errorCanceled, err.Error())
}

// awaitRefusals holds the request while its tenant pays off refused
// requests (limits.refusals_per_second); the wait shows as its own span
// and in the debug log, with why.
func (s *Server) awaitRefusals(c echo.Context, tenant, label string, limits admission.Limits) error {
	ctx := c.Request().Context()
	start := time.Now()
	waited, err := s.sched.AwaitRefusals(ctx, tenant, label, limits)
	if waited == 0 && err == nil {
		return nil
	}
	_, span := tracing.Tracer().Start(ctx, "admission backoff", trace.WithTimestamp(start),
		trace.WithAttributes(attribute.String("tenant", label), attribute.String("reason", "the tenant's recent requests were refused by limits")))
	tracing.Fail(span, err)
	span.End()
	s.opts.Logger.DebugContext(ctx, "request held: the tenant's recent requests kept being refused (limits.refusals_per_second)",
		"tenant", label, "waited", waited, "refused", err != nil)
	if err != nil {
		return s.queueRefusal(c, err)
	}
	return nil
}

// admissionTenant names the request's tenant for the scheduler and its
// metrics label. With a tenant source it is the policy's namespace (the
// label is bounded by the policies); without one every request sees
// everything and the header is unverified, so it picks a queue but is a
// label only when limits.tenants names it.
func (s *Server) admissionTenant(r *http.Request) (tenant, label string) {
	if p := tenancy.FromContext(r.Context()); p != nil {
		return p.Namespace, tenantLabel(p)
	}
	tenant = r.Header.Get(authn.TenantHeader)
	if s.sched.Config().Configured(tenant) {
		return tenant, tenant
	}
	return tenant, "other"
}

// countLimit counts a refusal by a cost limit and names the limit in the
// request log.
func (s *Server) countLimit(c echo.Context, label string, err error) {
	if le := (*admission.LimitError)(nil); errors.As(err, &le) {
		s.sched.Rejected(label, le.Reason())
		c.Set(limitKey, le.Reason())
	}
}

func (s *Server) limitError(c echo.Context, label string, err error) error {
	s.countLimit(c, label, err)
	return apiError(http.StatusUnprocessableEntity, errorExec, err.Error())
}

type budgetKey struct{}

// budgetEngine hands the tenant's max_samples_per_query to the PromQL
// engine's own accounting, and makes a query stopped by its budget fail with
// the limit it went over: the engine may notice the cancelled context before
// the storage error arrives and would then report "query was canceled".
type budgetEngine struct{ promql.QueryEngine }

// withSampleLimit returns opts carrying the tenant's samples limit, if any.
func withSampleLimit(ctx context.Context, opts promql.QueryOpts) promql.QueryOpts {
	b, ok := ctx.Value(budgetKey{}).(*admission.Budget)
	if !ok || b.Limits().MaxSamplesPerQuery <= 0 {
		return opts
	}
	var (
		perStep  bool
		lookback time.Duration
		startTS  *bool
	)
	if opts != nil {
		perStep, lookback, startTS = opts.EnablePerStepStats(), opts.LookbackDelta(), opts.UseStartTimestamps()
	}
	return promql.NewPrometheusQueryOptsWithLimits(perStep, lookback, 0, uint64(b.Limits().MaxSamplesPerQuery), 0, startTS)
}

func (e budgetEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	qry, err := e.QueryEngine.NewInstantQuery(ctx, q, withSampleLimit(ctx, opts), qs, ts)
	if err != nil {
		return nil, err
	}
	return &encodingQuery{Query: budgetQuery{qry}}, nil
}

func (e budgetEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, interval time.Duration) (promql.Query, error) {
	qry, err := e.QueryEngine.NewRangeQuery(ctx, q, withSampleLimit(ctx, opts), qs, start, end, interval)
	if err != nil {
		return nil, err
	}
	return &encodingQuery{Query: budgetQuery{qry}}, nil
}

type budgetQuery struct{ promql.Query }

func (q budgetQuery) Exec(ctx context.Context) *promql.Result {
	res := q.Query.Exec(ctx)
	if res.Err == nil {
		return res
	}
	if b, ok := ctx.Value(budgetKey{}).(*admission.Budget); ok {
		if berr := b.Err(); berr != nil {
			res.Err = berr
		} else if tooMany := promql.ErrTooManySamplesRead(""); errors.As(res.Err, &tooMany) && b.Limits().MaxSamplesPerQuery > 0 {
			res.Err = b.SamplesExceeded()
		}
	}
	return res
}

// sizeLimitWriter holds the answer until the handler is done, so an answer
// over max_response_bytes can still be replaced by an error. Prometheus'
// handlers marshal the whole answer before writing it, so holding it costs
// one copy of at most the limit.
// yieldingWriter yields the request's turn before each write.
type yieldingWriter struct {
	http.ResponseWriter
	ctx  context.Context
	turn *admission.Turn
}

// Unwrap lets http.ResponseController reach the writer's Flush and deadlines.
func (w *yieldingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *yieldingWriter) Write(p []byte) (int, error) {
	if err := w.turn.Yield(w.ctx); err != nil {
		return 0, err
	}
	return w.ResponseWriter.Write(p)
}

type sizeLimitWriter struct {
	http.ResponseWriter
	max  int64
	code int
	buf  bytes.Buffer
	over bool
}

func (w *sizeLimitWriter) WriteHeader(code int) { w.code = code }

func (w *sizeLimitWriter) Write(p []byte) (int, error) {
	if w.over {
		return len(p), nil
	}
	if int64(w.buf.Len()+len(p)) > w.max {
		w.over = true
		w.buf = bytes.Buffer{}
		return len(p), nil
	}
	return w.buf.Write(p)
}

func (w *sizeLimitWriter) flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.ResponseWriter.WriteHeader(w.code)
	_, _ = w.ResponseWriter.Write(w.buf.Bytes())
}

// limitsView is the "limits" entry of /debug/tenants: the configured
// limits (defaults and per-tenant overrides, as in force) and who runs and
// waits right now.
type limitsView struct {
	admission.Config
	Now admission.State `json:"now"`
}

func (s *Server) limitsDebug() limitsView {
	return limitsView{Config: *s.sched.Config(), Now: s.sched.State()}
}

// withLimits adds the limits to a /debug/tenants view, keeping the view's
// own keys at the top level.
func withLimits(v any, limits limitsView) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return v
	}
	m["limits"] = limits
	return m
}

// checkSelectors refuses a query with more selectors than the tenant's
// max_selectors_per_query, before anything is sent to a backend, and
// without parsing one whose operators and parentheses alone show it is
// beyond any query that limit allows (the lexer's pass is linear; the
// parser's is not, see admission.OperatorsBound). A query the lexer
// refuses is left to the handler, which answers bad_data as Prometheus
// does (the parser type-checks nothing after a syntax error).
func checkSelectors(limits admission.Limits, q string) error {
	if q == "" {
		return nil
	}
	if admission.OperatorsBound(limits) > 0 {
		n, lexed := countOperators(q)
		if !lexed {
			return nil
		}
		if err := admission.CheckOperators(limits, n); err != nil {
			return err
		}
	}
	return admission.CheckSelectors(limits, countSelectors(q))
}

// countOperators counts q's operators and opening parentheses; lexed is
// false when the lexer finds q malformed.
func countOperators(q string) (n int, lexed bool) {
	l := parser.Lex(q)
	var it parser.Item
	for {
		l.NextItem(&it)
		switch {
		case it.Typ == parser.EOF:
			return n, true
		case it.Typ == parser.ERROR:
			return n, false
		case it.Typ.IsOperator() || it.Typ == parser.LEFT_PAREN:
			n++
		}
	}
}

// countSelectors is the number of selectors of a PromQL query. Identical
// selectors are read once (the fan-out shares their read), but each is
// still evaluated by the engine, whose cost grows faster than the nesting
// of `up or up or …`, so every one counts. 0 for no query, or one that
// does not parse (the handler answers that with bad_data).
func countSelectors(q string) int {
	if q == "" {
		return 0
	}
	e, err := engine.Parser().ParseExpr(q)
	if err != nil {
		return 0
	}
	n := 0
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if _, ok := node.(*parser.VectorSelector); ok {
			n++
		}
		return nil
	})
	return n
}
