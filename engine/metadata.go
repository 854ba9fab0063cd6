package engine

import (
	"context"
	"regexp"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Metadata is one entry of a metric family's metadata, as the backends
// answer it; named here so callers of the fan-out need not import remote.
type Metadata = remote.Metadata

// Metadata fans /api/v1/metadata out to every group and merges the answers:
// one entry per metric family, identical entries once. A tenant gets only the
// families of metric names it can see, among the series of [mint, maxt]
// (milliseconds).
func (f *Fanout) Metadata(ctx context.Context, mint, maxt int64, metric string, limit, limitPerMetric int) (map[string][]Metadata, annotations.Annotations, error) {
	var ms []*labels.Matcher
	if metric != "" {
		// metric names a family; its series may carry suffixed names
		// (a histogram has no series named after the family itself).
		ms = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, regexp.QuoteMeta(metric)+familySuffixes)}
	}
	failed := &failedGroups{}
	answers, warns, err := fanOut(ctx, f, failed, callMetadata, nil, func(ctx context.Context, _ *discovery.Group, _ [][]*labels.Matcher, c *remote.Client) (map[string][]remote.Metadata, error) {
		// A tenant's families are filtered after the answer: only an
		// unrestricted caller can have each backend cut at the limit.
		backendLimit := 0
		if tenancy.FromContext(ctx).Unrestricted() {
			backendLimit = limit
		}
		md, _, err := c.Metadata(ctx, metric, backendLimit, limitPerMetric)
		return md, err
	})
	if err != nil {
		return nil, nil, err
	}
	var visible map[string]bool
	if p := tenancy.FromContext(ctx); !p.Unrestricted() {
		q := &querier{f: f, mint: mint, maxt: maxt, failed: failed}
		names, w, err := q.LabelValues(ctx, model.MetricNameLabel, nil, ms...)
		if err != nil {
			return nil, nil, err
		}
		warns.Merge(w)
		visible = make(map[string]bool, len(names))
		for _, n := range names {
			visible[n] = true
		}
	}
	out := map[string][]remote.Metadata{}
	for _, md := range answers {
		for name, entries := range md {
			for _, e := range entries {
				if visible != nil && !familyVisible(name, e.Type, visible) {
					continue
				}
				if !slices.Contains(out[name], e) {
					out[name] = append(out[name], e)
				}
			}
		}
	}
	if limitPerMetric > 0 {
		for name, entries := range out {
			if len(entries) > limitPerMetric {
				out[name] = entries[:limitPerMetric]
			}
		}
	}
	if limit > 0 && len(out) > limit {
		names := make([]string, 0, len(out))
		for n := range out {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names[limit:] {
			delete(out, n)
		}
	}
	return out, warns, nil
}

// familySuffixes are the endings of series names within a family, as a
// regular expression.
const familySuffixes = "(_bucket|_sum|_count|_total|_created|_info|_gsum|_gcount)?"

// seriesOfType says which series names a family of each metadata type has,
// besides the family's own name: a suffix shows a family only when the
// family's type has series with that suffix, so a visible gauge x_count
// does not reveal the HELP of an unrelated histogram x.
var seriesOfType = map[string][]string{
	"counter":        {"_total", "_created"},
	"histogram":      {"_bucket", "_sum", "_count", "_created"},
	"gaugehistogram": {"_bucket", "_gsum", "_gcount"},
	"summary":        {"_sum", "_count", "_created"},
	"info":           {"_info"},
}

// familyVisible reports whether metadata of this type for a family may be
// shown: the family name is metadata's key, while series carry suffixed names.
func familyVisible(family, typ string, visible map[string]bool) bool {
	if visible[family] {
		return true
	}
	for _, suffix := range seriesOfType[typ] {
		if visible[family+suffix] {
			return true
		}
	}
	return false
}
