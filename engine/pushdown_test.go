package engine

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
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
