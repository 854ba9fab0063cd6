package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// reassocTolerance is the relative difference allowed between a
// re-associated answer and one evaluation. The bound the README states is
// about 7·2⁻⁵³ (8e-16) for inputs of one sign; the data here also mixes
// signs and magnitudes, so the test allows more, and still fails on any
// real mistake (a lost group, a wrong weight, a double count).
const reassocTolerance = 1e-12

// reassocOneSignBound is the bound the README states for sums and means
// of inputs of one sign: both one Prometheus and the combination are
// Neumaier sums, each within about 2⁻⁵³·Σ|x| of the true sum (the
// combination adds one rounding per partial sum; avg one per weight and
// product), so they differ by at most 7·2⁻⁵³ relative.
const reassocOneSignBound = 7 * 0x1p-53

// reassocData is three groups' series, written as promqltest load lines
// without the group label; the union adds cluster="gN". It holds what
// makes sums and means hard: magnitudes from 1e-3 to 1e9 of both signs,
// NaN, ±Inf, values whose sum overflows (avg must not), gaps and stale
// markers, output groups held by one group only, and histogram buckets.
func reassocData(seed uint64) (groupLoads [3]string, union string) {
	rng := rand.New(rand.NewPCG(seed, seed))
	const steps = 70
	var u strings.Builder
	u.WriteString("load 1m\n")
	for i := range groupLoads {
		var b strings.Builder
		b.WriteString("load 1m\n")
		add := func(metric string, ls []string, vals []string) {
			body := strings.Join(vals, " ")
			fmt.Fprintf(&b, "  %s{%s} %s\n", metric, strings.Join(ls, ","), body)
			fmt.Fprintf(&u, "  %s{%s} %s\n", metric, strings.Join(append([]string{fmt.Sprintf("cluster=%q", "g"+strconv.Itoa(i))}, ls...), ","), body)
		}
		for _, job := range []string{"a", "b", "c"} {
			for inst := range 4 {
				ls := []string{fmt.Sprintf("job=%q", job), fmt.Sprintf("instance=\"%d\"", inst)}
				// Gauges of mixed sign and magnitude, with gaps and
				// stale markers.
				var g []string
				scale := math.Pow(10, float64(rng.IntN(13)-3))
				for s := range steps {
					switch r := rng.IntN(40); {
					case r == 0:
						g = append(g, "_")
					case r == 1 && s > 0:
						g = append(g, "stale")
					default:
						v := (rng.Float64() - 0.3) * scale
						g = append(g, strconv.FormatFloat(v, 'g', -1, 64))
					}
				}
				add("gauge", ls, g)
				// Small whole numbers: ties everywhere.
				var lv []string
				for range steps {
					lv = append(lv, strconv.Itoa(rng.IntN(4)))
				}
				add("level", ls, lv)
				// Counters, for rate and increase.
				var c []string
				v := rng.Float64() * 100
				for range steps {
					v += rng.Float64() * scale
					c = append(c, strconv.FormatFloat(v, 'g', -1, 64))
				}
				add("requests_total", ls, c)
				// Histogram buckets: cumulative counters.
				bucket := make([]float64, 4)
				cols := make([][]string, 4)
				for range steps {
					acc := 0.0
					for k := range bucket {
						bucket[k] += float64(rng.IntN(5)) + rng.Float64()
						acc += bucket[k]
						cols[k] = append(cols[k], strconv.FormatFloat(acc, 'g', -1, 64))
					}
				}
				for k, le := range []string{"0.1", "1", "10", "+Inf"} {
					add("latency_bucket", append(slices.Clone(ls), fmt.Sprintf("le=%q", le)), cols[k])
				}
			}
		}
		// One job only this group has: its output groups come from one
		// group alone (weight exactly 1 in avg).
		add("gauge", []string{fmt.Sprintf("job=\"only-g%d\"", i), `instance="0"`}, []string{fmt.Sprintf("%d.1x%d", i+1, steps-1)})
		// Values whose running sum overflows: Prometheus' avg switches to
		// an incremental mean, and so must the combination.
		add("big", []string{`job="a"`}, []string{fmt.Sprintf("%.17gx%d", 1.5e308, steps-1)})
		add("big", []string{`job="b"`}, []string{fmt.Sprintf("%.17gx%d", -1.2e308/3*float64(i+1), steps-1)})
		// NaN in one group, +Inf in another, -Inf in the third.
		special := []string{"NaN", "Inf", "-Inf"}[i]
		add("special", []string{`job="a"`}, slices.Repeat([]string{special}, steps))
		add("special", []string{`job="b"`}, []string{fmt.Sprintf("%dx%d", i, steps-1)})
		groupLoads[i] = b.String()
	}
	return groupLoads, u.String()
}

// reassocQueries are sums and means of every shape the planner combines.
var reassocQueries = []string{
	`sum(gauge)`,
	`sum by (job) (gauge)`,
	`sum by (instance) (gauge)`,
	`sum without (cluster, instance) (gauge)`,
	`avg(gauge)`,
	`avg by (job) (gauge)`,
	`avg without (cluster, job) (gauge)`,
	`sum by (job) (rate(requests_total[5m]))`,
	`sum(increase(requests_total[30m]))`,
	`avg by (instance) (rate(requests_total[5m]))`,
	`histogram_quantile(0.9, sum by (le, job) (rate(latency_bucket[5m])))`,
	`histogram_quantile(0.5, sum by (le) (rate(latency_bucket[10m])))`,
	`topk(2, sum by (instance) (rate(requests_total[5m])))`,
	`sum(rate(requests_total{job="a"}[5m])) / sum(rate(requests_total[5m]))`,
	`1 - avg by (job) (gauge)`,
	`sum by (job) (big)`,
	`avg by (job) (big)`,
	`avg(big)`,
	`sum by (job) (special)`,
	`avg by (job) (special)`,
	`sum by (job) (sum by (cluster, job) (gauge))`,
	`sum by (job) (max_over_time(gauge[10m]))`,
	// Exact combinations, for the harness run with the opt-in off.
	`max by (job) (gauge)`,
	`count(gauge)`,
	`min(rate(requests_total[5m]))`,
	// topk and bottomk: used only where no tie decides (level has ties
	// at most steps, gauge almost never).
	`topk(3, gauge)`,
	`bottomk by (job) (2, gauge)`,
	`topk(2, rate(requests_total[5m]))`,
	`topk(3, level)`,
	`bottomk by (instance) (1, level)`,
}

// TestReassociatedSumsWithinRounding evaluates each query twice with
// Prometheus' engine: once over the union of three groups' data, once as
// the planner rewrites it under float_sums: reassociate, each fragment
// evaluated on its group's own data and served to the proxy's engine by
// fragmentSeries (what the proxy does with a backend's answer). The two
// agree within reassocTolerance; most values bit for bit. With the opt-in
// off, the same harness answers bit for bit (the exact combinations).
func TestReassociatedSumsWithinRounding(t *testing.T) {
	loads, unionLoad := reassocData(14)
	var stores [3]storage.Storage
	for i, l := range loads {
		stores[i] = promqltest.LoadedStorage(t, l)
	}
	union := promqltest.LoadedStorage(t, unionLoad)
	groups := make([]plan.Group, 3)
	for i := range groups {
		groups[i] = plan.Group{Name: "g" + strconv.Itoa(i), Labels: labels.FromStrings("cluster", "g"+strconv.Itoa(i)), LabelsAdded: true}
	}
	ng := proxyEngine(t)
	ranges := []evalRange{
		{start: time.Unix(600, 0), end: time.Unix(4000, 0), step: time.Minute},
		{start: time.Unix(1234, 0), end: time.Unix(1234, 0)},
		{start: time.Unix(3600, 0), end: time.Unix(3600, 0)},
	}
	for _, mode := range []plan.FloatSums{plan.FloatSumsReassociate, plan.FloatSumsExact} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := plan.Config{Enabled: true, FloatSums: mode}
			planner := plan.New(cfg, Parser())
			var exact, within, pushed, ranked, undecided int
			for _, q := range reassocQueries {
				for _, r := range ranges {
					expr, err := Parser().ParseExpr(q)
					if err != nil {
						t.Fatal(err)
					}
					pl := planner.Plan(expr, groups, nil)
					want := evalOn(t, ng, union, q, r)
					if !pl.Pushed() {
						continue
					}
					pushed++
					answers := map[string][]storage.Series{}
					for _, f := range pl.Fragments {
						for i, gq := range f.Queries {
							ans := groupAnswer(t, ng, stores[i], gq.Query, r)
							ss, err := fragmentSeries(f, gq.Group, ans, r)
							if err != nil {
								t.Fatalf("%s: fragment %s on %s: %v", q, f.ID, gq.Group.Name, err)
							}
							answers[f.ID] = append(answers[f.ID], ss...)
						}
					}
					for _, ss := range answers {
						slices.SortFunc(ss, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
					}
					tied := false
					for _, f := range pl.Fragments {
						if f.Ranked != nil {
							ranked++
							if rankedDecided(f, answers[f.ID]) != nil {
								// The proxy evaluates it as without push-down.
								tied = true
							}
						}
					}
					if tied {
						undecided++
						continue
					}
					got := evalOn(t, ng, &pushedQueryable{Queryable: union, answers: answers}, pl.Expr.String(), r)
					e, w, rel, diff := compareWithin(want, got, reassocTolerance)
					if rel > reassocOneSignBound && strings.Contains(q, "requests_total") {
						// Rates and increases are never negative: the
						// README's bound for inputs of one sign applies.
						t.Errorf("%s at %v: relative difference %.3g above the stated bound %.3g", q, r, rel, reassocOneSignBound)
					}
					if rel > 0 {
						t.Logf("%s at %v: max relative difference %.3g (%.1f ulp-units of 2^-53)", q, r, rel, rel/0x1p-53)
					}
					if diff != "" {
						t.Errorf("%s at %v: %s\nplan %s", q, r, diff, pl)
					}
					if (mode == plan.FloatSumsExact || strings.Contains(q, "topk") && !strings.Contains(q, "sum")) && w > 0 {
						t.Errorf("%s at %v: %d values differ with the opt-in off\nplan %s", q, r, w, pl)
					}
					exact, within = exact+e, within+w
				}
			}
			t.Logf("float_sums %s: %d query evaluations pushed; %d values bit-equal, %d within %g; %d topk/bottomk combined, %d of them refused for a tie", mode, pushed, exact, within, reassocTolerance, ranked, undecided)
			if undecided == 0 || undecided == ranked {
				// level has ties at most steps and gauge almost none:
				// both outcomes of the tie check must occur.
				t.Errorf("%d of %d topk/bottomk evaluations refused for a tie: the check is not exercised both ways", undecided, ranked)
			}
			if mode == plan.FloatSumsReassociate && pushed < len(reassocQueries)*len(ranges)-3 {
				t.Errorf("only %d of %d evaluations pushed", pushed, len(reassocQueries)*len(ranges))
			}
			if mode == plan.FloatSumsReassociate && within == 0 {
				// Data meant to make the partial sums differ in the last
				// bits did not: the tolerance was never exercised.
				t.Error("every value bit-equal: the data does not exercise re-association")
			}
			if exact == 0 {
				t.Error("no value compared")
			}
		})
	}
}

func evalOn(t *testing.T, ng *PromQL, q storage.Queryable, qs string, r evalRange) promql.Matrix {
	t.Helper()
	var (
		qry promql.Query
		err error
	)
	if r.step == 0 {
		qry, err = ng.NewInstantQuery(context.Background(), q, nil, qs, r.start)
	} else {
		qry, err = ng.NewRangeQuery(context.Background(), q, nil, qs, r.start, r.end, r.step)
	}
	if err != nil {
		t.Fatalf("%s: %v", qs, err)
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s: %v", qs, res.Err)
	}
	switch v := res.Value.(type) {
	case promql.Matrix:
		// Close hands the points back to the engine's pool: copy them.
		m := make(promql.Matrix, len(v))
		for i, s := range v {
			m[i] = promql.Series{Metric: s.Metric, Floats: slices.Clone(s.Floats), Histograms: slices.Clone(s.Histograms)}
		}
		return m
	case promql.Vector:
		m := promql.Matrix{}
		for _, s := range v {
			m = append(m, promql.Series{Metric: s.Metric, Floats: []promql.FPoint{{T: s.T, F: s.F}}})
		}
		return m
	default:
		t.Fatalf("%s: %T", qs, res.Value)
		return nil
	}
}

// groupAnswer is what one group's backend answers to a pushed query, as the
// query API would carry it (floats only, sorted by labels).
func groupAnswer(t *testing.T, ng *PromQL, q storage.Queryable, qs string, r evalRange) *remote.QueryAnswer {
	t.Helper()
	return matrixAnswer(evalOn(t, ng, q, qs, r))
}

// matrixAnswer is m as the query API carries it to the proxy.
func matrixAnswer(m promql.Matrix) *remote.QueryAnswer {
	ans, err := answerOf(m)
	if err != nil {
		panic(err)
	}
	return ans
}

// compareWithin compares two answers: the same series at the same
// timestamps, values bit-equal (counted in exact) or within a relative
// tol (counted in within); diff says the first difference beyond.
func compareWithin(want, got promql.Matrix, tol float64) (exact, within int, maxRel float64, diff string) {
	slices.SortFunc(want, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	slices.SortFunc(got, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	if len(want) != len(got) {
		return 0, 0, 0, fmt.Sprintf("%d series, reference %d:\n%v\nreference:\n%v", len(got), len(want), got, want)
	}
	for i := range want {
		w, g := want[i], got[i]
		if !labels.Equal(w.Metric, g.Metric) || len(w.Floats) != len(g.Floats) || len(w.Histograms)+len(g.Histograms) > 0 {
			return 0, 0, 0, fmt.Sprintf("series %s (%d points), reference %s (%d points)", g.Metric, len(g.Floats), w.Metric, len(w.Floats))
		}
		for k := range w.Floats {
			a, b := w.Floats[k], g.Floats[k]
			switch {
			case a.T != b.T:
				return 0, 0, 0, fmt.Sprintf("series %s: point at %d, reference at %d", g.Metric, b.T, a.T)
			case math.Float64bits(a.F) == math.Float64bits(b.F) || math.IsNaN(a.F) && math.IsNaN(b.F):
				exact++
			case relDiff(a.F, b.F) <= tol:
				within++
				maxRel = max(maxRel, relDiff(a.F, b.F))
			default:
				return 0, 0, 0, fmt.Sprintf("series %s at %d: %v, reference %v (relative difference %g)", g.Metric, a.T, b.F, a.F, relDiff(a.F, b.F))
			}
		}
	}
	return exact, within, maxRel, ""
}

// relDiff is |a-b| relative to the larger magnitude; infinite where the
// values are not both finite and unequal.
func relDiff(a, b float64) float64 {
	if a == b {
		return 0
	}
	if math.IsInf(a, 0) || math.IsInf(b, 0) || math.IsNaN(a) || math.IsNaN(b) {
		return math.Inf(1)
	}
	return math.Abs(a-b) / math.Max(math.Abs(a), math.Abs(b))
}
