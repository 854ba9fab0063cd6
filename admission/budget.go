package admission

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Budget is what one request may still read from backends. It is charged as
// answers are decoded, from several goroutines at once (one per backend
// group). The first charge over a limit cancels the request's context with
// the LimitError as its cause, so every other backend read of the request
// stops at once instead of running to its end.
type Budget struct {
	limits Limits
	ctx    context.Context
	cancel context.CancelCauseFunc
	turn   *Turn // nil: reads never pause

	// calls bounds the request's backend calls in flight, tenantCalls
	// those of all its tenant's requests (nil: unbounded).
	calls, tenantCalls *callGate

	bytes   atomic.Int64
	samples atomic.Int64

	mu     sync.Mutex
	series map[uint64]struct{}
	err    error
}

// NewBudget returns a context carrying cancellation by the budget, and the
// budget for limits l. Call the returned budget's Done when the request ends.
func NewBudget(ctx context.Context, l Limits) (context.Context, *Budget) {
	ctx, cancel := context.WithCancelCause(ctx)
	b := &Budget{limits: l, ctx: ctx, cancel: cancel, calls: newCallGate(l.MaxConcurrentBackendCallsPerQuery)}
	if l.MaxFetchedSeriesPerQuery > 0 {
		b.series = make(map[uint64]struct{})
	}
	return ctx, b
}

// PauseFor makes the reads charged to b yield to other tenants' requests
// as turn decides (Turns), before each piece of an answer is read: a
// paused read stops taking the answer off the connection, so the backend
// sending it pauses too. Call it before the first read.
func (b *Budget) PauseFor(turn *Turn) { b.turn = turn }

// ShareTenantCalls makes the budget's backend calls count against its
// tenant's max_concurrent_backend_calls (Scheduler.TenantCalls). Call it
// before the first read.
func (b *Budget) ShareTenantCalls(g *TenantCallGate) {
	if g != nil {
		b.tenantCalls = g.gate
	}
}

// AcquireCall waits until the request may start one more backend call,
// within max_concurrent_backend_calls_per_query and its tenant's
// max_concurrent_backend_calls, and returns the function that ends it.
// A request running ahead of another tenant's first yields its turn. It
// fails only when ctx ends while waiting: the wait is the proxy's own
// queueing, never a backend's fault.
func (b *Budget) AcquireCall(ctx context.Context) (func(), error) {
	if b.turn != nil {
		if err := b.turn.Yield(ctx); err != nil {
			return nil, err
		}
	}
	if err := b.calls.acquire(ctx); err != nil {
		return nil, err
	}
	if err := b.tenantCalls.acquire(ctx); err != nil {
		b.calls.release()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			b.tenantCalls.release()
			b.calls.release()
		})
	}, nil
}

// Done releases the budget's context.
func (b *Budget) Done() { b.cancel(context.Canceled) }

// Limits returns the limits the budget enforces.
func (b *Budget) Limits() Limits { return b.limits }

// Err is the LimitError the budget failed with, or nil.
func (b *Budget) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *Budget) fail(err *LimitError) error {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	first := b.err
	b.mu.Unlock()
	b.cancel(first)
	return first
}

// AddSeries counts a series by the hash of its labels. A series answered by
// several groups, replicas or selectors counts once.
func (b *Budget) AddSeries(hash uint64) error {
	max := b.limits.MaxFetchedSeriesPerQuery
	if max <= 0 {
		return b.Err()
	}
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	b.series[hash] = struct{}{}
	over := len(b.series) > max
	b.mu.Unlock()
	if over {
		return b.fail(&LimitError{Limit: "max_fetched_series_per_query", Value: strconv.Itoa(max), What: "series fetched from backends"})
	}
	return nil
}

// AddBytes counts n bytes of a remote-read answer as they arrive.
func (b *Budget) AddBytes(n int) error {
	if b.turn != nil {
		if err := b.turn.Yield(b.ctx); err != nil {
			return err
		}
	}
	total := b.bytes.Add(int64(n))
	max := b.limits.MaxFetchedChunkBytesPerQuery
	if max <= 0 || total <= max {
		return b.Err()
	}
	return b.fail(&LimitError{Limit: "max_fetched_chunk_bytes_per_query", Value: strconv.FormatInt(max, 10), What: "bytes of chunks fetched from backends"})
}

// AddSamples counts n samples of a backend's evaluated answer (a pushed
// fragment) as they are decoded, against max_samples_per_query: what the
// proxy's engine would count had it read the data itself.
func (b *Budget) AddSamples(n int) error {
	max := b.limits.MaxSamplesPerQuery
	if max <= 0 || b.samples.Add(int64(n)) <= max {
		return b.Err()
	}
	return b.fail(&LimitError{Limit: "max_samples_per_query", Value: strconv.FormatInt(max, 10), What: "samples of the backends' answers to pushed query parts"})
}

// CheckSpan refuses a read of [mint, maxt] (milliseconds) longer than
// max_query_length, before it is sent.
func (b *Budget) CheckSpan(mint, maxt int64) error {
	max := b.limits.maxQueryLength()
	if max <= 0 || time.Duration(maxt-mint)*time.Millisecond <= max {
		return b.Err()
	}
	return b.fail(&LimitError{Limit: "max_query_length", Value: b.limits.MaxQueryLength.String(), What: "the time range a selector reads"})
}

// Fetched is what the request has read so far.
func (b *Budget) Fetched() (series int, bytes int64) {
	b.mu.Lock()
	series = len(b.series)
	b.mu.Unlock()
	return series, b.bytes.Load()
}

// CheckMatchers refuses a request with more match[] parameters than
// allowed, before anything is sent to a backend.
func CheckMatchers(l Limits, n int) error {
	if l.MaxMatchPerRequest > 0 && n > l.MaxMatchPerRequest {
		return &LimitError{Limit: "max_match_per_request", Value: strconv.Itoa(l.MaxMatchPerRequest), What: "match[] parameters of one request (got " + strconv.Itoa(n) + ")"}
	}
	return nil
}

// CheckSelectors refuses a query with more selectors than allowed, before
// anything is sent to a backend.
func CheckSelectors(l Limits, n int) error {
	if l.MaxSelectorsPerQuery > 0 && n > l.MaxSelectorsPerQuery {
		return &LimitError{Limit: "max_selectors_per_query", Value: strconv.Itoa(l.MaxSelectorsPerQuery), What: "selectors of one query (got " + strconv.Itoa(n) + ")"}
	}
	return nil
}

// operatorsPerSelector bounds, per selector max_selectors_per_query
// allows, the operators and parentheses of a query the proxy parses:
// Prometheus' parser takes time quadratic in how deep expressions nest
// (each operator's type is found by walking its operand chain), and `up
// or up or …` 5,000 deep took 60 ms of CPU to parse, before any limit
// could refuse it. A dashboard's query has a handful per selector.
const (
	operatorsPerSelector = 10
	operatorsSlack       = 100
)

// OperatorsBound is how many operators and opening parentheses a query
// may have to be parsed at all under l; 0 when max_selectors_per_query is
// unlimited.
func OperatorsBound(l Limits) int {
	if l.MaxSelectorsPerQuery <= 0 {
		return 0
	}
	return operatorsPerSelector*l.MaxSelectorsPerQuery + operatorsSlack
}

// CheckOperators refuses a query with more than OperatorsBound operators
// and opening parentheses, before it is parsed.
func CheckOperators(l Limits, n int) error {
	if bound := OperatorsBound(l); bound > 0 && n > bound {
		return &LimitError{Limit: "max_selectors_per_query", Value: strconv.Itoa(l.MaxSelectorsPerQuery),
			What: fmt.Sprintf("operators and parentheses of one query, %d per selector allowed (got more than %d)", operatorsPerSelector, bound)}
	}
	return nil
}

// ResponseTooLarge is the error for an answer over max_response_bytes.
func ResponseTooLarge(l Limits) error {
	return &LimitError{Limit: "max_response_bytes", Value: strconv.FormatInt(l.MaxResponseBytes, 10), What: "the size of the answer"}
}

// SamplesExceeded records that the engine stopped the query at
// max_samples_per_query and returns the error naming it.
func (b *Budget) SamplesExceeded() error {
	return b.fail(&LimitError{Limit: "max_samples_per_query", Value: strconv.FormatInt(b.limits.MaxSamplesPerQuery, 10), What: "samples read by the query engine"})
}
