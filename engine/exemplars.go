package engine

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// ExemplarQuerier implements storage.ExemplarQueryable, for Prometheus' own
// /api/v1/query_exemplars handler. The tenant's policy comes with ctx.
func (f *Fanout) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return &exemplarQuerier{f: f, ctx: ctx}, nil
}

type exemplarQuerier struct {
	f   *Fanout
	ctx context.Context
}

type warningsKey struct{}

// WithWarnings lets calls whose interface has no room for warnings (the
// exemplar querier) report them: they are added to *w. The caller reads
// *w after the call returned.
func WithWarnings(ctx context.Context, w *annotations.Annotations) context.Context {
	return context.WithValue(ctx, warningsKey{}, w)
}

func addWarnings(ctx context.Context, w annotations.Annotations) {
	if dst, ok := ctx.Value(warningsKey{}).(*annotations.Annotations); ok && dst != nil && len(w) > 0 {
		if *dst == nil {
			*dst = annotations.Annotations{}
		}
		dst.Merge(w)
	}
}

// Select asks every group once for the exemplars of all selectors, each
// restricted by the tenant's rules exactly as for samples (MatcherSets),
// merges the answers, drops duplicates and checks every series against the
// policy once more.
func (q *exemplarQuerier) Select(start, end int64, selectors ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	ctx := q.ctx
	policy := tenancy.FromContext(ctx)
	var sets [][]*labels.Matcher
	for _, ms := range selectors {
		sets = append(sets, MatcherSets(policy, ms)...)
	}
	if len(sets) == 0 {
		addWarnings(ctx, q.f.skipAll(ctx, callExemplars, SkipTenantRules))
		return []exemplar.QueryResult{}, nil
	}
	type answer struct {
		group *discovery.Group
		res   []exemplar.QueryResult
		warns remote.Warnings
	}
	// Each group is asked for the sets rewritten for its external labels
	// (fanOut); a group none of them can match is not asked.
	answers, warns, err := fanOut(ctx, q.f, &failedGroups{}, callExemplars, sets, func(ctx context.Context, g *discovery.Group, gsets [][]*labels.Matcher, c *remote.Client) (answer, error) {
		res, w, err := c.Exemplars(ctx, start, end, gsets)
		return answer{g, res, w}, err
	})
	if err != nil {
		return nil, err
	}
	for _, a := range answers {
		for _, w := range a.warns {
			warns.Add(backendWarning(w))
		}
	}
	addWarnings(ctx, warns)

	merged := map[string]*exemplar.QueryResult{}
	dropped := 0
	for _, a := range answers {
		for _, r := range a.res {
			lset := withGroupLabels(a.group, r.SeriesLabels)
			if !policy.Matches(lset) {
				dropped++
				continue
			}
			key := string(lset.Bytes(nil))
			m := merged[key]
			if m == nil {
				m = &exemplar.QueryResult{SeriesLabels: lset}
				merged[key] = m
			}
			m.Exemplars = append(m.Exemplars, r.Exemplars...)
		}
	}
	if dropped > 0 {
		// Backends were asked only for allowed series: one ignored a matcher.
		q.f.opts.Logger.Warn("exemplar series dropped by the policy check", "tenant", policy.Namespace, "series", dropped,
			"reason", "a backend answered series outside the tenant's rules")
	}
	out := make([]exemplar.QueryResult, 0, len(merged))
	for _, m := range merged {
		slices.SortStableFunc(m.Exemplars, compareExemplars)
		m.Exemplars = slices.CompactFunc(m.Exemplars, func(a, b exemplar.Exemplar) bool { return compareExemplars(a, b) == 0 })
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b exemplar.QueryResult) int { return labels.Compare(a.SeriesLabels, b.SeriesLabels) })
	return out, nil
}

// compareExemplars orders by time, then value, then labels: replicas of an
// HA pair (or overlapping groups) send the same exemplar twice.
func compareExemplars(a, b exemplar.Exemplar) int {
	switch {
	case a.Ts != b.Ts:
		return cmpInt(a.Ts, b.Ts)
	case a.Value < b.Value:
		return -1
	case a.Value > b.Value:
		return 1
	}
	return labels.Compare(a.Labels, b.Labels)
}

func cmpInt(a, b int64) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}
