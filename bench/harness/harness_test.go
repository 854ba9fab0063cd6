package harness

import (
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

func TestSeriesCountMatchesGenerator(t *testing.T) {
	for _, disjoint := range []bool{false, true} {
		for _, series := range []int{1, 3000, 25_000} {
			o := QuickOptions()
			o.Series, o.Disjoint = series, disjoint
			cfg := o.DataConfig()
			n := 0
			datagen.ForEachSeries(cfg, func(labels.Labels) { n++ })
			if got := SeriesCount(cfg); got != n {
				t.Errorf("series %d, disjoint %v: SeriesCount says %d, the generator writes %d", series, disjoint, got, n)
			}
			if n < series {
				t.Errorf("series %d, disjoint %v: only %d generated", series, disjoint, n)
			}
		}
	}
}

func TestGrafanaInterval(t *testing.T) {
	for _, c := range []struct {
		rng    time.Duration
		width  int
		scrape time.Duration
		want   time.Duration
	}{
		{6 * time.Hour, 1800, time.Minute, time.Minute},           // 12 s, raised to the scrape interval
		{6 * time.Hour, 1800, 10 * time.Second, 10 * time.Second}, // 12 s rounds to 10 s
		{6 * time.Hour, 200, time.Minute, 2 * time.Minute},        // 108 s
		{6 * time.Hour, 100, time.Minute, 5 * time.Minute},        // 216 s
		{24 * time.Hour, 10, time.Minute, 3 * time.Hour},          // 2.4 h
	} {
		if got := grafanaInterval(c.rng, c.width, c.scrape); got != c.want {
			t.Errorf("grafanaInterval(%v, %d, %v) = %v, want %v", c.rng, c.width, c.scrape, got, c.want)
		}
	}
}

func TestResolveAlignsToStep(t *testing.T) {
	now := time.Date(2026, 1, 1, 6, 0, 30, 0, time.UTC)
	p := Panel{ID: "x", Expr: `rate(x[$__rate_interval])`, Range: 6 * time.Hour, Width: 100}
	r := resolve(p, 0, now, time.Minute, 6*time.Hour)
	if r.step != 5*time.Minute || r.expr != `rate(x[6m])` {
		t.Fatalf("step %v expr %q", r.step, r.expr)
	}
	if r.start.UnixMilli()%r.step.Milliseconds() != 0 || r.end.UnixMilli()%r.step.Milliseconds() != 0 {
		t.Errorf("start %v end %v not on the step grid", r.start, r.end)
	}
	if s := r.shifted(2); s.end.Sub(r.end) != 10*time.Minute || s.start.Sub(r.start) != 10*time.Minute {
		t.Errorf("shifted by 2 steps: %v..%v", s.start, s.end)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]float64{0.5: 5, 0.9: 9, 0.99: 10, 0: 1} {
		if got := percentile(xs, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

func TestShapeIgnoresSeriesOrder(t *testing.T) {
	a := `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"],[2,"2"]]},{"metric":{"a":"2"},"values":[[1,"3"]]}]}}`
	b := `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"2"},"values":[[1,"3"]]},{"metric":{"a":"1"},"values":[[1,"1"],[2,"2"]]}]}}`
	c := `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"2"},"values":[[1,"3"]]},{"metric":{"a":"1"},"values":[[1,"1"],[2,"2.5"]]}]}}`
	sa, err := shapeOf([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := shapeOf([]byte(b))
	sc, _ := shapeOf([]byte(c))
	if sa.Digest != sb.Digest || sa.Series != 2 || sa.Points != 3 {
		t.Errorf("same data, different shapes: %+v %+v", sa, sb)
	}
	if sa.Digest == sc.Digest {
		t.Error("different values, same digest")
	}
	if s, err := shapeOf([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}`)); err != nil || s.Points != 1 {
		t.Errorf("scalar: %+v %v", s, err)
	}
}

func TestPushedSpan(t *testing.T) {
	for _, c := range []struct {
		form url.Values
		want float64 // ms
	}{
		{url.Values{"query": {`sum(rate(x[5m]))`}, "start": {"1000"}, "end": {"2000"}, "step": {"60"}}, 1_300_000},
		{url.Values{"query": {`max(x)`}, "time": {"1000.5"}}, 300_000},
		{url.Values{"query": {`max(x)`}, "time": {"1000"}, "lookback_delta": {"60"}}, 60_000},
		{url.Values{"query": {`max(x offset 1h)`}, "time": {"7200"}}, 300_000},
		{url.Values{"query": {`max(x)`}}, 0},
	} {
		if got := pushedSpan(c.form); got != c.want {
			t.Errorf("pushedSpan(%v) = %v ms, want %v", c.form, got, c.want)
		}
	}
}
