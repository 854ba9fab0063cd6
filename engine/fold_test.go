package engine

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

func TestFoldGroup(t *testing.T) {
	probe := [][]*labels.Matcher{{
		labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "up"),
		labels.MustNewMatcher(labels.MatchNotEqual, "cluster", ""),
		labels.MustNewMatcher(labels.MatchNotEqual, "cluster", "c1"),
	}}
	mixed := []plan.MixedProbe{{
		Label:   "cluster",
		Stored:  [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "up"), labels.MustNewMatcher(labels.MatchEqual, "cluster", "c1")}},
		Lacking: [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "up"), labels.MustNewMatcher(labels.MatchEqual, "cluster", "")}},
	}}
	for _, tc := range []struct {
		name       string
		fragments  []string
		probe      [][]*labels.Matcher
		mixed      []plan.MixedProbe
		mint, maxt int64
		want       string
		apart      bool
	}{{
		name:      "one fragment is sent as it is",
		fragments: []string{`sum by (job) (up)`},
		mint:      1000, maxt: 61000,
		want: `sum by (job) (up)`,
	}, {
		name:      "fragments and probes in one query",
		fragments: []string{`sum by (job) (up)`, `count by (job) (up)`},
		probe:     probe, mixed: mixed,
		mint: 1000, maxt: 61000,
		want: `label_replace(sum by (job) (up), "__proxy_part__", "f0", "", "")` +
			` or label_replace(count by (job) (up), "__proxy_part__", "f1", "", "")` +
			` or label_replace(absent_over_time({__name__="up",cluster!="",cluster!="c1"}[1m1ms] @ 61.000), "__proxy_part__", "p0", "", "")` +
			` or label_replace(absent_over_time({__name__="up",cluster="c1"}[1m1ms] @ 61.000), "__proxy_part__", "m0s0", "", "")`,
	}, {
		name:      "no bounded window: probes apart",
		fragments: []string{`sum by (job) (up)`},
		probe:     probe, mixed: mixed,
		mint: math.MinInt64, maxt: math.MaxInt64,
		want:  `sum by (job) (up)`,
		apart: true,
	}, {
		name:      "a selector PromQL refuses: probes apart",
		fragments: []string{`sum(up)`, `count(up)`},
		probe:     [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchNotEqual, "cluster", "c1")}},
		mint:      0, maxt: 1000,
		want:  `label_replace(sum(up), "__proxy_part__", "f0", "", "") or label_replace(count(up), "__proxy_part__", "f1", "", "")`,
		apart: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			fq := foldGroup(tc.fragments, tc.probe, tc.mixed, tc.mint, tc.maxt)
			if fq.query != tc.want {
				t.Errorf("query\n got %s\nwant %s", fq.query, tc.want)
			}
			if fq.probesApart != tc.apart {
				t.Errorf("probesApart = %t, want %t", fq.probesApart, tc.apart)
			}
			if _, err := Parser().ParseExpr(fq.query); err != nil {
				t.Errorf("the folded query does not parse: %v", err)
			}
		})
	}
}

func TestFoldedAnswerSplit(t *testing.T) {
	fq := foldGroup([]string{`sum by (job) (up)`, `count by (job) (up)`},
		[][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "up"), labels.MustNewMatcher(labels.MatchNotEqual, "cluster", "")}},
		[]plan.MixedProbe{{Label: "cluster", Stored: [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, "cluster", "c1")}}}},
		0, 60000)
	series := func(part string, ls ...string) remote.QuerySeries {
		return remote.QuerySeries{Labels: labels.FromStrings(append(ls, partLabel, part)...), T: []int64{0}, F: []float64{1}}
	}
	full := []remote.QuerySeries{
		series("f0", "job", "a"), series("f0", "job", "b"), series("f1", "job", "a"),
		series("p0"), series("m0s0"),
	}
	got, err := fq.split(&remote.QueryAnswer{Series: full})
	if err != nil {
		t.Fatal(err)
	}
	if got.probeFound || got.storedFound[0] {
		t.Errorf("every probe part answered, yet found: probe %t, stored %t", got.probeFound, got.storedFound[0])
	}
	if len(got.fragments[0].Series) != 2 || len(got.fragments[1].Series) != 1 {
		t.Fatalf("fragments split into %d and %d series, want 2 and 1", len(got.fragments[0].Series), len(got.fragments[1].Series))
	}
	if ls := got.fragments[0].Series[0].Labels; ls.Has(partLabel) || ls.Get("job") != "a" {
		t.Errorf("fragment series labels %s: want job=a without %s", ls, partLabel)
	}

	// A missing probe part is a probe that found something (or a backend
	// that did not answer it): either way the group is refused.
	got, err = fq.split(&remote.QueryAnswer{Series: full[:3]})
	if err != nil {
		t.Fatal(err)
	}
	if !got.probeFound || !got.storedFound[0] {
		t.Errorf("probe parts missing, yet not found: probe %t, stored %t", got.probeFound, got.storedFound[0])
	}

	for _, bad := range []remote.QuerySeries{
		{Labels: labels.FromStrings("job", "a"), T: []int64{0}, F: []float64{1}},
		series("f7", "job", "a"),
		series("fx"),
	} {
		if _, err := fq.split(&remote.QueryAnswer{Series: append(full[:len(full):len(full)], bad)}); !errors.Is(err, errNotExact) {
			t.Errorf("series %s: err = %v, want errNotExact", bad.Labels, err)
		}
	}
	if !strings.Contains(fq.query, partLabel) {
		t.Errorf("folded query %s lacks %s", fq.query, partLabel)
	}
}
