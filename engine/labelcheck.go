package engine

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// labelsFromSeries answers a tenant's label-names or label-values call from
// the series the tenant may see, each checked against the policy the way
// Select checks series. A backend's own label endpoints cannot be
// re-checked (a name or value says nothing of the series it came from), and
// one that ignores match[] there would hand out every other tenant's label
// values; its series endpoint answers label sets, which can be checked.
//
// A limit cuts each group's answer and the merged one; the series are read
// whole, as a backend cannot count distinct names or values for the proxy,
// within the request's range and charged to its budget.
func (q *querier) labelsFromSeries(ctx context.Context, kind callKind, limit int, ms []*labels.Matcher, pick func(labels.Labels, func(string))) ([]string, annotations.Annotations, error) {
	policy := tenancy.FromContext(ctx)
	sets := MatcherSets(policy, ms)
	if len(sets) == 0 {
		return []string{}, q.f.skipAll(ctx, kind, SkipTenantRules), nil
	}
	answers, warns, err := fanOut(ctx, q.f, q.failed, kind, sets, func(ctx context.Context, g *discovery.Group, sets [][]*labels.Matcher, c *remote.Client) (labelAnswer, error) {
		lsets, w, err := c.Series(ctx, q.mint, q.maxt, sets)
		if err != nil {
			return labelAnswer{}, err
		}
		// Checked and picked as answers show them: external labels on,
		// replica labels off.
		lsets = applyToLabelSets(g, lsets)
		seen := map[string]struct{}{}
		for _, ls := range lsets {
			if !policy.Matches(ls) {
				continue
			}
			pick(ls, func(v string) { seen[v] = struct{}{} })
		}
		vals := make([]string, 0, len(seen))
		for v := range seen {
			vals = append(vals, v)
		}
		if limit > 0 && len(vals) > limit {
			slices.Sort(vals)
			vals = vals[:limit]
		}
		return labelAnswer{vals, w}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return mergeLabelAnswers(answers, &warns, limit), warns, nil
}

func namesOf(ls labels.Labels, add func(string)) {
	ls.Range(func(l labels.Label) { add(l.Name) })
}

func valuesOf(name string) func(labels.Labels, func(string)) {
	return func(ls labels.Labels, add func(string)) {
		if v := ls.Get(name); v != "" {
			add(v)
		}
	}
}
