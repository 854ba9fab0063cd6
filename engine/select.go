package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// MatcherSets is what backends are asked for a selector ms under policy p:
// ms itself when p is unrestricted, else one set ms ∧ r per rule r of p,
// leaving out rules that contradict ms. An empty result means nothing can
// match.
func MatcherSets(p *tenancy.Policy, ms []*labels.Matcher) [][]*labels.Matcher {
	if p.Unrestricted() {
		return [][]*labels.Matcher{ms}
	}
	sets := make([][]*labels.Matcher, 0, len(p.Rules))
	for _, r := range p.Rules {
		set := make([]*labels.Matcher, 0, len(ms)+len(r.Matchers))
		set = append(set, ms...)
		set = append(set, r.Matchers...)
		if tenancy.Contradicts(set) {
			continue
		}
		sets = append(sets, set)
	}
	return sets
}

// Select implements storage.Querier.
func (q *querier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	mint, maxt := q.mint, q.maxt
	if hints != nil {
		mint, maxt = hints.Start, hints.End
		hints = ownHints(hints)
	}
	policy := tenancy.FromContext(ctx)
	sets := MatcherSets(policy, ms)
	if len(sets) == 0 {
		kind := callRead
		if hints != nil && hints.Func == "series" {
			kind = callSeries
		}
		return &policySeriesSet{SeriesSet: storage.EmptySeriesSet(), policy: policy, warns: q.f.skipAll(ctx, kind, SkipTenantRules)}
	}

	var (
		parts []storage.SeriesSet
		warns annotations.Annotations
		err   error
	)
	if hints != nil && hints.Func == "series" {
		// Only label sets are wanted (/api/v1/series): ask the backends'
		// series endpoint instead of streaming every sample.
		type answer struct {
			lsets []labels.Labels
			warns remote.Warnings
		}
		var answers []answer
		answers, warns, err = fanOut(ctx, q.f, q.failed, callSeries, sets, func(ctx context.Context, g *discovery.Group, sets [][]*labels.Matcher, c *remote.Client) (answer, error) {
			// Prometheus asks for one more than the client's limit, to
			// tell whether the answer was cut; each backend answers no more.
			lsets, w, err := c.SeriesLimit(ctx, mint, maxt, sets, hints.Limit)
			return answer{applyToLabelSets(g, lsets), w}, err
		})
		for _, a := range answers {
			parts = append(parts, newLabelsSeriesSet(a.lsets))
			for _, w := range a.warns {
				warns.Add(backendWarning(w))
			}
		}
	} else {
		return q.lazy(readKey(mint, maxt, hints, ms), func(buffered bool) storage.SeriesSet {
			parts, warns, err := fanOut(ctx, q.f, q.failed, callRead, sets, func(ctx context.Context, g *discovery.Group, sets [][]*labels.Matcher, c *remote.Client) (storage.SeriesSet, error) {
				ss, err := c.Read(ctx, mint, maxt, hints, sets)
				if err != nil {
					return nil, err
				}
				if buffered {
					return drained(applyToSeriesSet(g, ss))
				}
				return streamedGroup(ctx, q.f, g, c.URL(), ss), nil
			})
			if err != nil {
				return storage.ErrSeriesSet(err)
			}
			merged := storage.NewMergeSeriesSet(parts, 0, storage.ChainedSeriesMerge)
			return &policySeriesSet{SeriesSet: merged, policy: policy, warns: warns}
		})
	}
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	merged := storage.NewMergeSeriesSet(parts, 0, storage.ChainedSeriesMerge)
	return &policySeriesSet{SeriesSet: merged, policy: policy, warns: warns, ctx: ctx, yield: yieldFrom(ctx)}
}

// ownHints copies hints for reads that outlive Select: their Grouping is
// the parsed query's own slice, which the engine sorts in place when it
// evaluates the aggregation, while a read started ahead may still be
// encoding it into its request (a torn slice there broke the request's
// encoding: "index out of range").
func ownHints(h *storage.SelectHints) *storage.SelectHints {
	own := *h
	own.Grouping = slices.Clone(h.Grouping)
	return &own
}

// readKey names what a select reads: identical keys within one query (and
// so one policy) read the same series. Matchers are sorted, since their
// order in a selector does not change what it selects.
func readKey(mint, maxt int64, h *storage.SelectHints, ms []*labels.Matcher) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d,%d", mint, maxt)
	if h != nil {
		// Every field, so a field added to the hints can only split keys.
		fmt.Fprintf(&b, "|%+v", *h)
	}
	strs := make([]string, len(ms))
	for i, m := range ms {
		strs[i] = m.String()
	}
	slices.Sort(strs)
	for _, s := range strs {
		b.WriteByte('|')
		b.WriteString(s)
	}
	return b.String()
}

// policySeriesSet drops every series the policy does not allow. Backends were
// asked only for allowed series; this is the second line of defence against
// a backend that ignores a matcher.
// With a yield function it also pauses for other tenants' requests once per
// series and while its series' samples are walked.
type policySeriesSet struct {
	storage.SeriesSet
	policy *tenancy.Policy
	warns  annotations.Annotations
	ctx    context.Context
	yield  YieldFunc
	err    error
}

func (s *policySeriesSet) Next() bool {
	for s.SeriesSet.Next() {
		if s.yield != nil {
			if err := s.yield(s.ctx); err != nil {
				s.err = err
				return false
			}
		}
		if s.policy.Matches(s.SeriesSet.At().Labels()) {
			return true
		}
	}
	return false
}

func (s *policySeriesSet) At() storage.Series {
	return yieldingAt(s.ctx, s.SeriesSet.At(), s.yield)
}

func (s *policySeriesSet) Err() error {
	if s.err != nil {
		return s.err
	}
	return s.SeriesSet.Err()
}

func (s *policySeriesSet) Warnings() annotations.Annotations {
	w := s.SeriesSet.Warnings()
	if len(s.warns) == 0 {
		return w
	}
	out := annotations.Annotations{}
	out.Merge(w)
	out.Merge(s.warns)
	return out
}

// LabelNames implements storage.Querier. A group's external labels are on
// every series it has, so their names join its answer when it has any
// series; replica labels are on none.
func (q *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if !tenancy.FromContext(ctx).Unrestricted() {
		return q.labelsFromSeries(ctx, callLabels, hintLimit(hints), ms, namesOf)
	}
	return q.labelCall(ctx, callLabels, hintLimit(hints), ms, func(ctx context.Context, g *discovery.Group, c *remote.Client, sets [][]*labels.Matcher) ([]string, remote.Warnings, error) {
		names, w, err := c.LabelNames(ctx, q.mint, q.maxt, sets, hintLimit(hints))
		if err != nil || len(names) == 0 {
			return names, w, err
		}
		names = slices.DeleteFunc(names, g.IsReplicaLabel)
		g.ExternalLabels().Range(func(l labels.Label) { names = append(names, l.Name) })
		return names, w, nil
	})
}

// LabelValues implements storage.Querier. For an external label of a group
// the values are those stored on its series plus the group's own value when
// some matching series lacks the label (as remote read would show it).
func (q *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if !tenancy.FromContext(ctx).Unrestricted() {
		return q.labelsFromSeries(ctx, callLabelValues, hintLimit(hints), ms, valuesOf(name))
	}
	return q.labelCall(ctx, callLabelValues, hintLimit(hints), ms, func(ctx context.Context, g *discovery.Group, c *remote.Client, sets [][]*labels.Matcher) ([]string, remote.Warnings, error) {
		if g.IsReplicaLabel(name) {
			return nil, nil, nil
		}
		vals, w, err := c.LabelValues(ctx, name, q.mint, q.maxt, sets, hintLimit(hints))
		ext, ok := g.ExternalLabel(name)
		if err != nil || !ok || slices.Contains(vals, ext) {
			return vals, w, err
		}
		// One name tells whether such a series exists; the warning that the
		// answer was cut to it is about this probe, not the request.
		names, _, err := c.LabelValues(ctx, model.MetricNameLabel, q.mint, q.maxt, withoutLabel(sets, name), 1)
		if err != nil {
			return nil, nil, err
		}
		if len(names) > 0 {
			vals = append(vals, ext)
		}
		return vals, w, nil
	})
}

// withoutLabel narrows every set to series that do not store label name
// (nil sets: all series).
func withoutLabel(sets [][]*labels.Matcher, name string) [][]*labels.Matcher {
	absent := labels.MustNewMatcher(labels.MatchEqual, name, "")
	anyName := labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")
	if len(sets) == 0 {
		return [][]*labels.Matcher{{absent, anyName}}
	}
	out := make([][]*labels.Matcher, len(sets))
	for i, s := range sets {
		out[i] = append(slices.Clip(s), absent)
		if !slices.ContainsFunc(out[i], func(m *labels.Matcher) bool { return !m.Matches("") }) {
			out[i] = append(out[i], anyName)
		}
	}
	return out
}

func hintLimit(h *storage.LabelHints) int {
	if h == nil {
		return 0
	}
	return h.Limit
}

// labelCall fans a label-names or label-values call out with one match[] per
// allowed matcher set, and merges the sorted, de-duplicated answers.
func (q *querier) labelCall(ctx context.Context, kind callKind, limit int, ms []*labels.Matcher, call func(context.Context, *discovery.Group, *remote.Client, [][]*labels.Matcher) ([]string, remote.Warnings, error)) ([]string, annotations.Annotations, error) {
	policy := tenancy.FromContext(ctx)
	var sets [][]*labels.Matcher
	if len(ms) > 0 || !policy.Unrestricted() {
		sets = MatcherSets(policy, ms)
		if len(sets) == 0 {
			return []string{}, q.f.skipAll(ctx, kind, SkipTenantRules), nil
		}
	}
	answers, warns, err := fanOut(ctx, q.f, q.failed, kind, sets, func(ctx context.Context, g *discovery.Group, sets [][]*labels.Matcher, c *remote.Client) (labelAnswer, error) {
		v, w, err := call(ctx, g, c, sets)
		return labelAnswer{v, w}, err
	})
	if err != nil {
		return nil, nil, err
	}
	return mergeLabelAnswers(answers, &warns, limit), warns, nil
}

// labelAnswer is one group's label names or values.
type labelAnswer struct {
	vals  []string
	warns remote.Warnings
}

// mergeLabelAnswers sorts and de-duplicates the groups' values and adds
// their warnings to warns; with a limit, it keeps the first limit values.
func mergeLabelAnswers(answers []labelAnswer, warns *annotations.Annotations, limit int) []string {
	var all []string
	for _, a := range answers {
		all = append(all, a.vals...)
		for _, w := range a.warns {
			warns.Add(backendWarning(w))
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	if limit > 0 && len(all) > limit {
		all = all[:limit:limit]
	}
	return all
}

// backendWarning carries a backend's warning text unchanged, so identical
// warnings from several backends (and Prometheus' own) collapse into one.
type backendWarning string

func (w backendWarning) Error() string { return string(w) }

// labelsSeriesSet holds series known only by their labels (no samples).
type labelsSeriesSet struct {
	lsets []labels.Labels
	i     int
}

func newLabelsSeriesSet(lsets []labels.Labels) *labelsSeriesSet {
	return &labelsSeriesSet{lsets: lsets}
}

func (s *labelsSeriesSet) Next() bool {
	s.i++
	return s.i <= len(s.lsets)
}

func (s *labelsSeriesSet) At() storage.Series {
	return storage.NewListSeries(s.lsets[s.i-1], nil)
}
func (*labelsSeriesSet) Err() error                        { return nil }
func (*labelsSeriesSet) Warnings() annotations.Annotations { return nil }

// applyToSeriesSet shows a group's series as its answers must look
// (discovery.Group.ApplyExternalLabels). Adding or dropping labels can
// reorder series and make two of them one (an HA pair's replica label
// gone), so the result is sorted again and equal label sets merged.
func applyToSeriesSet(g *discovery.Group, ss storage.SeriesSet) storage.SeriesSet {
	var (
		out    []storage.Series
		sorted = true
		prev   labels.Labels
	)
	apply := g.ExternalLabelsApplier()
	for ss.Next() {
		s := ss.At()
		old := s.Labels()
		lset := apply(old)
		if len(out) > 0 && labels.Compare(prev, lset) >= 0 {
			sorted = false
		}
		if !labels.Equal(old, lset) {
			s = relabeledSeries{Series: s, lset: lset}
		}
		out = append(out, s)
		prev = lset
	}
	if err := ss.Err(); err != nil {
		return storage.ErrSeriesSet(err)
	}
	if !sorted {
		slices.SortStableFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
		// A new slice: the merged series keep their parts' slice.
		merged := make([]storage.Series, 0, len(out))
		for i := 0; i < len(out); {
			j := i + 1
			for j < len(out) && labels.Equal(out[i].Labels(), out[j].Labels()) {
				j++
			}
			if j-i == 1 {
				merged = append(merged, out[i])
			} else {
				merged = append(merged, storage.ChainedSeriesMerge(slices.Clone(out[i:j])...))
			}
			i = j
		}
		out = merged
	}
	return &seriesList{series: out, warns: ss.Warnings()}
}

// applyToLabelSets is applyToSeriesSet for label sets alone.
func applyToLabelSets(g *discovery.Group, lsets []labels.Labels) []labels.Labels {
	apply := g.ExternalLabelsApplier()
	for i, l := range lsets {
		lsets[i] = apply(l)
	}
	slices.SortFunc(lsets, labels.Compare)
	return slices.CompactFunc(lsets, labels.Equal)
}

type relabeledSeries struct {
	storage.Series
	lset labels.Labels
}

func (s relabeledSeries) Labels() labels.Labels { return s.lset }

type seriesList struct {
	series []storage.Series
	i      int
	warns  annotations.Annotations
}

func (l *seriesList) Next() bool {
	l.i++
	return l.i <= len(l.series)
}
func (l *seriesList) At() storage.Series                { return l.series[l.i-1] }
func (*seriesList) Err() error                          { return nil }
func (l *seriesList) Warnings() annotations.Annotations { return l.warns }
