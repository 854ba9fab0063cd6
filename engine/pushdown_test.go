package engine

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// The proxy pushes only to backends of its own engine's release; the
// release is derived from the module version in the build.
func TestEngineRelease(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/prometheus/prometheus").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	// v0.316.0 → 3.16
	parts := strings.Split(strings.TrimSpace(string(out)), ".")
	minor, err := strconv.Atoi(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(minor/100) + "." + strconv.Itoa(minor%100)
	if engineRelease != want {
		t.Fatalf("engine release %q, want %q", engineRelease, want)
	}
	for v, ok := range map[string]bool{want + ".0": true, want: true, want + "1.0": false, "2.42.0": false, "": false} {
		if sameEngine(v) != ok {
			t.Errorf("sameEngine(%q) = %v", v, !ok)
		}
	}
}

func TestAnswerChangingFeature(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"exemplar-storage":            "",
		"promql-delayed-name-removal": "promql-delayed-name-removal",
		"exemplar-storage,promql-delayed-name-removal":   "promql-delayed-name-removal",
		"[exemplar-storage promql-delayed-name-removal]": "promql-delayed-name-removal",
		"promql-delayed-name-removal-not":                "",
	} {
		if got := answerChangingFeature(in); got != want {
			t.Errorf("answerChangingFeature(%q) = %q, want %q", in, got, want)
		}
	}
}

// A pushed answer with a missing step must stay missing in the proxy's
// evaluation: without the stale markers fragmentSeries writes, the engine's
// lookback would carry the previous step's value over.
func TestPushedAnswerGapsStayGaps(t *testing.T) {
	start := time.Unix(1000, 0)
	r := evalRange{start: start, end: start.Add(4 * time.Minute), step: time.Minute}
	ms := func(m int) int64 { return start.Add(time.Duration(m) * time.Minute).UnixMilli() }
	ans := &remote.QueryAnswer{Series: []remote.QuerySeries{{
		Labels: labels.FromStrings("job", "a"),
		T:      []int64{ms(0), ms(1), ms(3)}, // nothing at 2 and 4
		F:      []float64{1, 2, 4},
	}}}
	frag := &plan.Fragment{ID: "1", Keep: []string{"cluster"}}
	g := plan.Group{Name: "g", Labels: labels.FromStrings("cluster", "c")}
	series, err := fragmentSeries(frag, g, ans, r)
	if err != nil {
		t.Fatal(err)
	}
	off := &remote.QueryAnswer{Series: []remote.QuerySeries{{Labels: labels.FromStrings("job", "a"), T: []int64{ms(1) + 1}, F: []float64{1}}}}
	if _, err := fragmentSeries(frag, g, off, r); err == nil {
		t.Fatal("a sample off the query's steps was accepted")
	}
	ng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, NoStepSubqueryIntervalFn: func(int64) int64 { return 60000 }})
	eval := func(ss []storage.Series) string {
		noop := storage.QueryableFunc(func(int64, int64) (storage.Querier, error) { return storage.NoopQuerier(), nil })
		q := &pushedQueryable{Queryable: noop, answers: map[string][]storage.Series{"1": ss}}
		qry, err := ng.NewRangeQuery(context.Background(), q, nil, `{__pushdown__="1"}`, r.start, r.end, r.step)
		if err != nil {
			t.Fatal(err)
		}
		defer qry.Close()
		res := qry.Exec(context.Background())
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		return res.Value.String()
	}
	got := eval(series)
	want := `{cluster="c", job="a"} =>
1 @[1000000]
2 @[1060000]
4 @[1180000]`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// The same samples without stale markers: lookback fills the gaps,
	// which is what the markers are there to prevent.
	var plain []chunks.Sample
	for i := range ans.Series[0].T {
		plain = append(plain, floatSample{t: ans.Series[0].T[i], f: ans.Series[0].F[i]})
	}
	if filled := eval([]storage.Series{storage.NewListSeries(series[0].Labels(), plain)}); filled == want {
		t.Fatal("without stale markers the gaps stayed gaps too: the test proves nothing")
	}
}

// A pushed answer keeps its size: a series gets a stale marker only at the
// first step after a run of its points, never one at every step. The
// answer of count_values over timestamps (a new series at every step) is
// the shape that made markers at every step cost series × steps points.
func TestPushedAnswersStaySparse(t *testing.T) {
	start := time.Unix(0, 0)
	const steps = 2000
	r := evalRange{start: start, end: start.Add(steps * time.Minute), step: time.Minute}
	ans := &remote.QueryAnswer{}
	for i := range steps {
		ts := start.Add(time.Duration(i) * time.Minute).UnixMilli()
		ans.Series = append(ans.Series, remote.QuerySeries{Labels: labels.FromStrings("t", strconv.Itoa(i)), T: []int64{ts}, F: []float64{1}})
	}
	series, err := fragmentSeries(&plan.Fragment{ID: "1"}, plan.Group{Name: "g"}, ans, r)
	if err != nil {
		t.Fatal(err)
	}
	points := 0
	for _, s := range series {
		it := s.Iterator(nil)
		for it.Next() != chunkenc.ValNone {
			points++
		}
	}
	if points > 2*steps {
		t.Fatalf("%d points for an answer of %d: stale markers densify it", points, steps)
	}
	// And the proxy's engine still sees each value at its own step only.
	noop := storage.QueryableFunc(func(int64, int64) (storage.Querier, error) { return storage.NoopQuerier(), nil })
	m := evalOn(t, proxyEngine(t), &pushedQueryable{Queryable: noop, answers: map[string][]storage.Series{"1": series}}, `count({__pushdown__="1"})`, r)
	if len(m) != 1 || len(m[0].Floats) != steps {
		t.Fatalf("got %v", m)
	}
	for _, p := range m[0].Floats {
		if p.F != 1 {
			t.Fatalf("at %d: %v series seen, want 1 (a value carried over by lookback)", p.T, p.F)
		}
	}
}

// The spans a pushed query's selectors read are the ones Prometheus' engine
// would ask remote read for, so max_query_length refuses the same reads
// pushed or not.
func TestSelectorSpans(t *testing.T) {
	at := time.Unix(100*86400, 0)
	instant := evalRange{start: at, end: at}
	ms := func(d time.Duration) int64 { return at.Add(-d).UnixMilli() }
	for _, tc := range []struct {
		q    string
		r    evalRange
		want [][2]int64
	}{
		{`max(max_over_time(x[90d]))`, instant, [][2]int64{{ms(90*24*time.Hour) + 1, ms(0)}}},
		{`max(x)`, instant, [][2]int64{{ms(5*time.Minute) + 1, ms(0)}}},
		{`max(x offset 1h) + max(y)`, instant, [][2]int64{{ms(time.Hour+5*time.Minute) + 1, ms(time.Hour)}, {ms(5*time.Minute) + 1, ms(0)}}},
		{`max(max_over_time(rate(x[5m])[1h:1m]))`, instant, [][2]int64{{ms(time.Hour+5*time.Minute) + 1, ms(0)}}},
		{`max(x)`, evalRange{start: at.Add(-time.Hour), end: at, step: time.Minute}, [][2]int64{{ms(time.Hour+5*time.Minute) + 1, ms(0)}}},
	} {
		got, err := selectorSpans(tc.q, tc.r, 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: spans %v, want %v", tc.q, got, tc.want)
		}
	}
}

func TestReleaseOf(t *testing.T) {
	for v, want := range map[string]string{"3.16.0": "3.16", "3.5.1": "3.5", "2.42.0+ds": "2.42", "3.16": "3.16", "3.16.0-rc.1": "3.16", "": "", "main": "", "x.y": ""} {
		if got := releaseOf(v); got != want {
			t.Errorf("releaseOf(%q) = %q, want %q", v, got, want)
		}
	}
}

// A backend outside the compatibility table gets nothing pushed, with the
// reason; the proxy's own release gets every query the planner writes.
func TestEvaluatesAsProxy(t *testing.T) {
	q := `max by (cluster) (rate(x[5m]))`
	if ok, why := evaluatesAsProxy("3.16.0", q); !ok {
		t.Errorf("3.16.0: %s", why)
	}
	for _, v := range []string{"2.42.0+ds", "3.9.0", "", "4.0.0"} {
		if ok, why := evaluatesAsProxy(v, q); ok || !strings.Contains(why, "compatibility table") {
			t.Errorf("%q: ok %v, %q", v, ok, why)
		}
	}
	// The LTS line: what it lacks or evaluates otherwise is refused to it,
	// never to the proxy's own release; the rest goes to both.
	for query, refused := range map[string]string{
		`max by (cluster) (rate(x[5m]))`:                                     "",
		`max by (cluster) (first_over_time(x[5m]))`:                          "has no first_over_time() (added in 3.7.0)",
		`max by (cluster) (quantile_over_time(0.9, x[5m]))`:                  "whose quantile_over_time() differs",
		`quantile by (cluster) (0.9, x)`:                                     "exact rank in quantile()",
		`max by (cluster) (x > on (cluster, i) y)`:                           "comparison's vector matching",
		`max by (cluster) (x > bool on (cluster, i) y)`:                      "",
		`max by (cluster) (x / on (cluster, i) y)`:                           "",
		`max by (cluster) (max_over_time(x[5m] anchored))`:                   "anchored or smoothed",
		`max by (cluster) (max_over_time(x[5m+1m]))`:                         "duration expressions",
		`histogram_quantile(0.9, sum by (cluster, le) (rate(x_bucket[5m])))`: "whose histogram_quantile() differs",
		// Series storing __type__/__unit__ (promqltest's type_and_unit
		// scripts through a real 3.5 server): ignored by 3.16 where
		// labels are left out, kept by 3.5.
		`sum without (pod) (x)`:                                    "__type__ and __unit__ labels, which the proxy's engine ignores (since 3.16.0), in a without aggregation",
		`count_values without (pod) ("v", x)`:                      "in a without aggregation",
		`max by (cluster) (x / y)`:                                 "when matching vectors without on()",
		`max by (cluster) (x / ignoring (pod) y)`:                  "when matching vectors without on()",
		`max by (cluster) (x and y)`:                               "when matching vectors without on()",
		`max by (cluster) (x * 2)`:                                 "",
		`sum by (cluster) (x) / sum by (cluster) (y)`:              "",
		`sum by (cluster) (x) / (sum by (cluster) (y) * 2)`:        "",
		`sum by (cluster) (x) / on (cluster) y`:                    "",
		`sum by (cluster) (x) / sum without (pod) (y)`:             "stored __type__ and __unit__",
		`sum by (cluster, __type__) (x) / sum by (cluster) (y)`:    "when matching vectors without on()",
		`sum without (pod) (sum by (cluster, pod) (x))`:            "",
		`max by (cluster) (absent_over_time(x{__type__="c"}[5m]))`: "whose absent_over_time() differs",
	} {
		ok, why := evaluatesAsProxy("3.5.1", query)
		if ok != (refused == "") || !strings.Contains(why, refused) {
			t.Errorf("3.5.1: %s: ok %v, %q; want refused for %q", query, ok, why, refused)
		}
		if ok, why := evaluatesAsProxy("3.16.0", query); !ok {
			t.Errorf("3.16.0: %s refused: %s", query, why)
		}
	}
	for name, since := range lts35.missing {
		if _, ok := parser.Functions[name]; !ok || since == "" {
			t.Errorf("lts35.missing: %s is no function of the proxy's parser, or has no release", name)
		}
	}
}
