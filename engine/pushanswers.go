package engine

// The groups' answers to a pushed query, turned into the series the
// rewritten query reads: sorted and checked disjoint, ranked parts checked
// for ties, each group's answer given its labels and stale markers, checked
// against the tenant's rules, and served by the synthetic selectors.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// sortDisjoint sorts each fragment's series from all groups by labels and
// refuses a series two groups answered: disjoint groups cannot answer the
// same series; if they do, the groups are not what their labels say.
func sortDisjoint(answers map[string][]storage.Series) error {
	for id, ss := range answers {
		slices.SortFunc(ss, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
		for k := 1; k < len(ss); k++ {
			if labels.Equal(ss[k-1].Labels(), ss[k].Labels()) {
				return fmt.Errorf("%w: fragment %s: two groups answered series %s", errNotExact, id, ss[k].Labels())
			}
		}
	}
	return nil
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
