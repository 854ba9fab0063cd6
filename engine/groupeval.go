package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// A group whose backends do not evaluate a fragment as the proxy's engine
// does (a release outside the compatibility table, a function its release
// lacks or evaluates differently, a flag that changes answers) still holds
// its part of disjoint data. Its fragment is then evaluated by the proxy's
// own engine over that group's series, read by remote read as the backend
// stores them: no external labels, no tenant rules added, exactly the input
// the backend's engine would have had. The fragment's text already carries
// the tenant's rules in the form a backend evaluates on stored data, so
// the answer is the one a backend of the proxy's release would give, and
// everything after it (probes folded into the query, group labels added,
// the policy re-check, the combination across groups) is unchanged. The
// groups' fragments run side by side, so what the proxy would evaluate
// alone over the union runs on as many cores as there are groups (up to
// PromQL.partsAtOnce).

// groupData is one group's series as its backend stores them, read from one
// replica (the one callGroup chose, so failover stays with callGroup).
// Failed reads are kept in failed: the engine reports them as its own
// errors, and the replica's failure must still reach callGroup as such.
type groupData struct {
	c      *remote.Client
	failed *readFailure
}

type readFailure struct {
	mu  sync.Mutex
	err error
}

func (f *readFailure) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *readFailure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (g groupData) Querier(mint, maxt int64) (storage.Querier, error) {
	return &groupDataQuerier{groupData: g, mint: mint, maxt: maxt}, nil
}

type groupDataQuerier struct {
	groupData
	mint, maxt int64
}

// Select reads the selector from the replica; the read is charged to the
// query's budget (series, bytes, max_query_length) by the client.
func (q *groupDataQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	mint, maxt := q.mint, q.maxt
	if hints != nil {
		mint, maxt = hints.Start, hints.End
	}
	ss, err := q.c.Read(ctx, mint, maxt, hints, [][]*labels.Matcher{ms})
	if err != nil {
		q.failed.set(err)
		return storage.ErrSeriesSet(err)
	}
	return watchedSet{SeriesSet: ss, failed: q.failed, ctx: ctx, yield: yieldFrom(ctx)}
}

// watchedSet keeps the error a streamed read ends with, and, with a yield
// function, pauses for other tenants' requests while the part's samples
// are walked, as the fan-out's reads do.
type watchedSet struct {
	storage.SeriesSet
	failed *readFailure
	ctx    context.Context
	yield  YieldFunc
}

func (s watchedSet) At() storage.Series {
	return yieldingAt(s.ctx, s.SeriesSet.At(), s.yield)
}

func (s watchedSet) Err() error {
	err := s.SeriesSet.Err()
	if err != nil {
		s.failed.set(err)
	}
	return err
}

var errNoLabelCalls = errors.New("a fragment evaluated over a group's data asks no label names or values")

func (*groupDataQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, errNoLabelCalls
}

func (*groupDataQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, errNoLabelCalls
}

func (*groupDataQuerier) Close() error { return nil }

// errGroupEval is a fragment the proxy's engine could not evaluate over a
// group's data for the query's own reasons (not the replica's): the
// executor refuses the group, and the query is evaluated as without
// push-down, where the same reason shows.
var errGroupEval = errors.New("evaluating the part over the group's data failed")

// evalOnGroupData answers qp as the group's backend would
// (remote.Client.Query), with the proxy's engine for parts over the data c
// reads. samplesLimit is the query's max_samples_per_query (0: none): each
// evaluation is held to it and what it read is charged to the query's
// budget, and so is the answer it holds until the combination, as a
// backend's answer is charged by its bytes.
func (p *PushDown) evalOnGroupData(ctx context.Context, c *remote.Client, qp remote.QueryParams, samplesLimit uint64) (*remote.QueryAnswer, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends a read the engine left unfinished
	budget := remote.BudgetFrom(ctx)
	opts := promql.NewPrometheusQueryOptsWithLimits(false, qp.LookbackDelta, 0, samplesLimit, 0, nil)
	var (
		qry promql.Query
		err error
	)
	ng := p.ng.parts
	data := groupData{c: c, failed: &readFailure{}}
	if qp.Step > 0 {
		qry, err = ng.NewRangeQuery(ctx, data, opts, qp.Query, time.UnixMilli(qp.Start), time.UnixMilli(qp.End), qp.Step)
	} else {
		qry, err = ng.NewInstantQuery(ctx, data, opts, qp.Query, time.UnixMilli(qp.End))
	}
	if err != nil {
		// The planner's own text: it must parse.
		return nil, fmt.Errorf("%w: %w", errGroupEval, err)
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		var tooMany promql.ErrTooManySamplesRead
		readErr := data.failed.get()
		switch {
		case readErr != nil:
			// The replica's read failed (or the budget stopped it):
			// callGroup fails over, or ends with the query.
			return nil, readErr
		case errors.As(res.Err, &tooMany) && samplesLimit > 0 && budget != nil:
			// Over the tenant's limit: the budget says which.
			if err := budget.AddSamples(int(min(samplesLimit, math.MaxInt32)) + 1); err != nil {
				return nil, err
			}
		case ctx.Err() != nil:
			return nil, res.Err
		}
		// Over engine.max_samples' share for a part, or an error of
		// the query itself: evaluated in one pass, where it shows.
		return nil, fmt.Errorf("%w: %w", errGroupEval, res.Err)
	}
	out, err := answerOf(res.Value)
	if err != nil {
		return nil, err
	}
	if st := qry.Stats(); st != nil && st.Samples != nil {
		out.SamplesRead = st.Samples.TotalSamples
	}
	if budget != nil {
		if err := budget.AddSamples(int(min(max(out.SamplesRead, 0), math.MaxInt32))); err != nil {
			return nil, err
		}
		if err := budget.AddBytes(answerBytes(out)); err != nil {
			return nil, err
		}
	}
	warnings, infos := res.Warnings.AsStrings(qp.Query, 0, 0)
	out.Warnings = append(warnings, infos...)
	return out, nil
}

// answerBytes is what a group's answer holds in memory until the parts are
// combined: its labels and 16 bytes a point.
func answerBytes(a *remote.QueryAnswer) int {
	n := 0
	for _, s := range a.Series {
		n += int(s.Labels.ByteSize()) + 16*len(s.T)
	}
	return n
}

// answerOf is v as a backend's JSON answer carries it: float points only,
// Histograms set when v held native histograms.
func answerOf(v parser.Value) (*remote.QueryAnswer, error) {
	out := &remote.QueryAnswer{SamplesRead: -1}
	switch v := v.(type) {
	case promql.Matrix:
		out.Series = make([]remote.QuerySeries, 0, len(v))
		for _, s := range v {
			if len(s.Histograms) > 0 {
				out.Histograms = true
			}
			if len(s.Floats) == 0 {
				continue
			}
			qs := remote.QuerySeries{Labels: s.Metric, T: make([]int64, len(s.Floats)), F: make([]float64, len(s.Floats))}
			for i, pt := range s.Floats {
				qs.T[i], qs.F[i] = pt.T, pt.F
			}
			out.Series = append(out.Series, qs)
		}
	case promql.Vector:
		out.Series = make([]remote.QuerySeries, 0, len(v))
		for _, s := range v {
			if s.H != nil {
				out.Histograms = true
				continue
			}
			out.Series = append(out.Series, remote.QuerySeries{Labels: s.Metric, T: []int64{s.T}, F: []float64{s.F}})
		}
	default:
		return nil, fmt.Errorf("%w: result type %s, want vector or matrix", errGroupEval, v.Type())
	}
	return out, nil
}
