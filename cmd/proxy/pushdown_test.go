package main

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
)

// pushDownCount reads prometheus_proxy_pushdown_queries_total{outcome}.
func pushDownCount(t testing.TB, p *proxyUnderTest, outcome string) float64 {
	t.Helper()
	mfs, err := p.app.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "prometheus_proxy_pushdown_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// promqlRequests is the suite's PromQL part.
func promqlRequests(data datagen.Config, drop func(expr string) bool) []apiRequest {
	var out []apiRequest
	for _, r := range suiteRequests(data) {
		if strings.HasPrefix(r.path, "/api/v1/query") && !drop(r.params.Get("query")) {
			out = append(out, r)
		}
	}
	return out
}

// combinedExprs exercise the aggregations whose groups' answers the proxy
// combines (the shared suite has few of them).
var combinedExprs = []string{
	`max by (namespace) (rate(http_requests_total[5m]))`,
	`min without (cluster, instance) (memory_usage_bytes)`,
	`group without (cluster) (up)`,
	`count without (cluster, instance) (up)`,
	`max(max_over_time(temperature_celsius[10m]))`,
	`min by (job) (rate(http_requests_total[5m] offset 10m))`,
	`max by (namespace) (rate(http_requests_total[5m] @ end()))`,
	`sum by (job) (count by (cluster, job) (up))`,
	`count(sum by (cluster, namespace) (rate(http_requests_total[5m])) > 100)`,
	// Used only where no tie at the k-th value decides.
	`topk(3, memory_usage_bytes)`,
	`bottomk by (namespace) (2, rate(http_requests_total[5m]))`,
	`topk(2, up)`, // every value 1: ties decide, so never pushed
}

// exprRequests asks each expression at the suite's instants and over its
// ranges.
func exprRequests(data datagen.Config, exprs []string) []apiRequest {
	instants, ranges := suiteTimes(data)
	var reqs []apiRequest
	for _, e := range exprs {
		for _, ts := range instants {
			reqs = append(reqs, apiRequest{path: "/api/v1/query", params: url.Values{"query": {e}, "time": {formatTime(ts)}}})
		}
		for _, r := range ranges {
			reqs = append(reqs, apiRequest{path: "/api/v1/query_range", post: true, params: url.Values{
				"query": {e}, "start": {formatTime(r.start)}, "end": {formatTime(r.end)}, "step": {strconv.FormatFloat(r.step.Seconds(), 'f', -1, 64)},
			}})
		}
	}
	return reqs
}

func combinedRequests(data datagen.Config) []apiRequest { return exprRequests(data, combinedExprs) }

// startShards starts one Prometheus per cluster holding what keep(i) lets
// through of shard i, and a reference holding what ref lets through of all.
func startShards(t *testing.T, name string, kinds []e2eutil.Kind, keep func(shard int) func(labels.Labels) bool, ref func(labels.Labels) bool, shardOpts ...func(shard int) []e2eutil.Option) *fleet {
	f := &fleet{data: datagen.DefaultConfig()}
	f.shards = make([]*e2eutil.Prometheus, f.data.Shards())
	for i := range f.shards {
		opts := []e2eutil.Option{e2eutil.WithName(name + "-" + f.data.Clusters[i])}
		for _, so := range shardOpts {
			opts = append(opts, so(i)...)
		}
		f.shards[i] = e2eutil.StartPrometheus(t, kinds[i%len(kinds)], openMetrics(t, f.data, i, keep(i)), opts...)
	}
	f.reference = e2eutil.StartPrometheus(t, e2eutil.V3, openMetrics(t, f.data, -1, ref), e2eutil.WithName(name+"-reference"))
	return f
}

// pushDownConfig labels each group with its cluster, the label that makes
// the groups disjoint when each shard holds only its cluster's series.
func pushDownConfig(f *fleet, on bool) Config {
	return pushDownConfigSums(f, on, plan.FloatSumsExact)
}

// pushDownConfigSums is pushDownConfig with engine.push_down.float_sums.
func pushDownConfigSums(f *fleet, on bool, sums plan.FloatSums) Config {
	cfg := baseConfig(f)
	cfg.Engine.PushDown.FloatSums = sums
	for i := range cfg.Discovery.Static {
		cfg.Discovery.Static[i].Labels = map[string]string{"cluster": f.data.Clusters[i]}
	}
	cfg.Engine.PushDown.Enabled = on
	return cfg
}

func ownCluster(l labels.Labels) bool {
	c := l.Get("cluster")
	return c != datagen.GlobalCluster && c != datagen.SplitCluster
}

// TestPushDown: with groups disjoint by cluster, push-down on and off both
// answer exactly what one Prometheus holding the union answers, for the
// whole query suite and for tenants of each rule shape; and push-down did
// run. With a series in two groups, push-down is refused and the answers
// are still exact.
func TestPushDown(t *testing.T) {
	t.Run("Disjoint", func(t *testing.T) {
		// Push-down needs backends of the proxy's own engine release.
		f := startShards(t, "disjoint", []e2eutil.Kind{e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		reqs := append(promqlRequests(f.data, func(string) bool { return false }), combinedRequests(f.data)...)
		for _, on := range []bool{false, true} {
			name := map[bool]string{false: "off", true: "on"}[on]
			t.Run(name, func(t *testing.T) {
				p := startProxy(t, pushDownConfig(f, on))
				runSuite(t, f.reference.URL, p.URL, reqs, nil)
				pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback")
				t.Logf("push-down %s: %v queries pushed, %v fell back", name, pushed, fallback)
				// count(up), sum by (cluster) (up), group by (cluster) (up),
				// count by (__name__) (…) ×2 at least: 6 requests each.
				// Every combined expression but topk(2, up) (ties) pushed.
				perExpr := float64(len(combinedRequests(f.data)) / len(combinedExprs))
				if on && pushed < 30+perExpr*float64(len(combinedExprs)-1) {
					t.Errorf("push-down on: only %v of %d queries pushed", pushed, len(reqs))
				}
				if on && fallback < perExpr {
					t.Errorf("push-down on: %v queries fell back; topk(2, up), decided by ties, must every time", fallback)
				}
				ex := doRequest(t, p.URL, apiRequest{path: "/api/v1/query", params: url.Values{"query": {`count by (__name__) ({__name__=~".+"})`}, "explain": {"true"}}})
				wantText := map[bool]string{true: `sum by (__name__) (remote(count by (__name__) ({__name__=~\".+\"})))`, false: "push-down is off"}[on]
				if ex.code != 200 || !strings.Contains(string(ex.body), wantText) {
					t.Errorf("explain: HTTP %d %s; want it to hold %s", ex.code, ex.body, wantText)
				}
				if !on && pushed+fallback != 0 {
					t.Errorf("push-down off, yet %v queries pushed", pushed+fallback)
				}
			})
		}
		t.Run("Reassociate", func(t *testing.T) {
			// float_sums: reassociate: within sumsTolerance of the
			// reference, and every sum and avg of the dashboards pushed.
			p := startProxy(t, pushDownConfigSums(f, true, plan.FloatSumsReassociate))
			runSuiteWithin(t, f.reference.URL, p.URL, reqs, nil, len(reqs)/2, sumsTolerance)
			sums := sumRequests(f.data)
			before, fellBefore := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback")
			tl := runSuiteWithin(t, f.reference.URL, p.URL, sums, nil, len(sums)*3/4, sumsTolerance)
			if pushed := pushDownCount(t, p, "pushed") - before; pushed < float64(len(sums)) {
				t.Errorf("%v of %d sum and avg queries pushed", pushed, len(sums))
			}
			if fell := pushDownCount(t, p, "fallback") - fellBefore; fell != 0 {
				t.Errorf("%v sum and avg queries fell back", fell)
			}
			if tl.samplesWithin == 0 {
				t.Log("every sample bit-equal: this data's partial sums happen to round alike")
			}
			ex := doRequest(t, p.URL, apiRequest{path: "/api/v1/query", params: url.Values{"query": {`avg by (namespace) (memory_usage_bytes)`}, "explain": {"true"}}})
			if ex.code != 200 || !strings.Contains(string(ex.body), "avg re-associated (engine.push_down.float_sums: reassociate)") {
				t.Errorf("explain: HTTP %d %s", ex.code, ex.body)
			}
		})
		t.Run("Tenants", func(t *testing.T) {
			dir := tenantFiles(t)
			cfg := pushDownConfig(f, true)
			tc := tenantConfig(f, dir)
			cfg.Tenants = tc.Tenants
			p := startProxy(t, cfg)
			cfgSums := pushDownConfigSums(f, true, plan.FloatSumsReassociate)
			cfgSums.Tenants = tc.Tenants
			pSums := startProxy(t, cfgSums)
			attacks := attackRequests(f)
			for _, ns := range []string{"team-a", "team-b", "team-c"} {
				t.Run(ns, func(t *testing.T) {
					pol := policyOf(t, p, ns)
					oracle := e2eutil.StartPrometheus(t, e2eutil.V3, openMetrics(t, f.data, -1, func(l labels.Labels) bool { return ownCluster(l) && pol.Matches(l) }), e2eutil.WithName("pushdown-oracle-"+ns))
					before := pushDownCount(t, p, "pushed")
					runSuiteMinData(t, oracle.URL, p.URL, reqs, tenantHeader(ns), 40)
					for _, r := range attacks {
						if !strings.HasPrefix(r.path, "/api/v1/query") {
							continue
						}
						want := doRequest(t, oracle.URL, r)
						r.header = tenantHeader(ns)
						compareAnswers(t, "attack "+r.String(), want, doRequest(t, p.URL, r))
					}
					t.Logf("tenant %s: %v queries pushed", ns, pushDownCount(t, p, "pushed")-before)
					// The same with sums and means re-associated: within
					// the tolerance of the tenant's oracle.
					beforeSums := pushDownCount(t, pSums, "pushed")
					var attackTally tally
					runSuiteWithin(t, oracle.URL, pSums.URL, append(slices.Clone(reqs), sumRequests(f.data)...), tenantHeader(ns), 40, sumsTolerance)
					for _, r := range attacks {
						if !strings.HasPrefix(r.path, "/api/v1/query") {
							continue
						}
						want := doRequest(t, oracle.URL, r)
						r.header = tenantHeader(ns)
						compareWithin(t, "attack "+r.String(), want, doRequest(t, pSums.URL, r), sumsTolerance, &attackTally)
					}
					pushedSums := pushDownCount(t, pSums, "pushed") - beforeSums
					t.Logf("tenant %s, float_sums reassociate: %v queries pushed", ns, pushedSums)
					if pushedSums <= pushDownCount(t, p, "pushed")-before {
						t.Errorf("tenant %s: float_sums reassociate pushed %v queries, no more than exact", ns, pushedSums)
					}
					// The plan a tenant sees carries its own rule in every
					// pushed selector.
					q := map[string]string{"team-a": `max by (cluster) (rate(http_requests_total[5m]))`, "team-b": `max by (cluster) (memory_usage_bytes)`, "team-c": `count by (cluster) (http_requests_total{job="api"})`}[ns]
					ex := doRequest(t, p.URL, apiRequest{path: "/api/v1/query", params: url.Values{"query": {q}, "explain": {"true"}}, header: tenantHeader(ns)})
					if ex.code != 200 || !strings.Contains(string(ex.body), "remote(") || !strings.Contains(string(ex.body), `namespace=\"`+ns+`\"`) {
						t.Errorf("explain for %s: HTTP %d %s", ns, ex.code, ex.body)
					}
					if ns == "team-c" {
						// Both of team-c's rules admit up: pushed as the or
						// of the two variants (the suite above compared
						// such answers with the oracle).
						// (rate(up) would fall back: its answer carries the
						// "not a counter" info.)
						r := apiRequest{path: "/api/v1/query", params: url.Values{"query": {`max by (job) (max_over_time(up[5m]))`}, "time": {formatTime(f.data.Start.Add(30 * time.Minute))}}, header: tenantHeader(ns)}
						before := pushDownCount(t, p, "pushed")
						got := doRequest(t, p.URL, r)
						r.header = nil
						compareAnswers(t, r.String(), doRequest(t, oracle.URL, r), got)
						if !hasData(t, got) || pushDownCount(t, p, "pushed") != before+1 {
							t.Errorf("max by (job) (max_over_time(up[5m])) for team-c: pushed %v, data %v", pushDownCount(t, p, "pushed")-before, hasData(t, got))
						}
						r.params.Set("explain", "true")
						r.header = tenantHeader(ns)
						if ex := doRequest(t, p.URL, r); !strings.Contains(string(ex.body), `[5m]) or max_over_time(up{`) {
							t.Errorf("explain for team-c: want an or of rule variants: %s", ex.body)
						}
					}
				})
			}
		})
	})

	t.Run("OtherEngineRelease", func(t *testing.T) {
		// Prometheus 2.42 selects ranges closed on the left, 3.x open:
		// the same query answers differently, so a group of another
		// release makes every query fall back.
		f := startShards(t, "mixed", shardKinds, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		r := apiRequest{path: "/api/v1/query", params: url.Values{"query": {`max by (namespace) (rate(http_requests_total[5m]))`}, "time": {formatTime(f.data.Start.Add(30 * time.Minute))}}}
		p := startProxy(t, pushDownConfig(f, true))
		compareAnswers(t, r.String(), doRequest(t, f.reference.URL, r), doRequest(t, p.URL, r))
		if pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback"); pushed != 0 || fallback != 1 {
			t.Errorf("pushed %v, fell back %v; want 0 and 1", pushed, fallback)
		}
		// explain names the group refused and why.
		r.params.Set("explain", "true")
		if ex := doRequest(t, p.URL, r); ex.code != 200 || !strings.Contains(string(ex.body), "refused") || !strings.Contains(string(ex.body), "compatibility table") {
			t.Errorf("explain: HTTP %d %s; want the 2.x group refused, naming the compatibility table", ex.code, ex.body)
		}
	})

	t.Run("LTS", func(t *testing.T) {
		// One group on the 3.5 LTS line, two on the proxy's release, with
		// the shipped defaults (push-down on, sums re-associated): the
		// suite answers as the reference, and queries are pushed to the
		// LTS group too, except what its release evaluates differently.
		f := startShards(t, "lts", []e2eutil.Kind{e2eutil.V3, e2eutil.V3LTS, e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		cfg := baseConfig(f)
		for i := range cfg.Discovery.Static {
			cfg.Discovery.Static[i].Labels = map[string]string{"cluster": f.data.Clusters[i]}
		}
		p := startProxy(t, cfg)
		reqs := append(promqlRequests(f.data, func(string) bool { return false }), combinedRequests(f.data)...)
		runSuiteWithin(t, f.reference.URL, p.URL, append(reqs, sumRequests(f.data)...), nil, len(reqs)/2, sumsTolerance)
		pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback")
		t.Logf("with a 3.5 group: %v queries pushed, %v fell back", pushed, fallback)
		if pushed < float64(len(sumRequests(f.data))) {
			t.Errorf("with a 3.5 group only %v queries pushed", pushed)
		}
		// What 3.5 evaluates differently falls back, and explain says why.
		r := apiRequest{path: "/api/v1/query", params: url.Values{"query": {`max by (namespace) (quantile_over_time(0.9, memory_usage_bytes[10m]))`}, "time": {formatTime(f.data.Start.Add(30 * time.Minute))}}}
		before := pushDownCount(t, p, "fallback")
		compareAnswers(t, r.String(), doRequest(t, f.reference.URL, r), doRequest(t, p.URL, r))
		if fell := pushDownCount(t, p, "fallback") - before; fell != 1 {
			t.Errorf("quantile_over_time with a 3.5 group: %v fell back, want 1", fell)
		}
		r.params.Set("explain", "true")
		if ex := doRequest(t, p.URL, r); !strings.Contains(string(ex.body), "quantile_over_time() differs") {
			t.Errorf("explain: %s", ex.body)
		}
	})

	t.Run("DelayedNameRemoval", func(t *testing.T) {
		// A backend started with promql-delayed-name-removal keeps
		// __name__ through functions until the end, as the proxy's engine
		// does not: its group makes every query fall back.
		f := startShards(t, "delayed", []e2eutil.Kind{e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster, func(i int) []e2eutil.Option {
			if i == 1 {
				return []e2eutil.Option{e2eutil.WithFlags("--enable-feature=promql-delayed-name-removal")}
			}
			return nil
		})
		r := apiRequest{path: "/api/v1/query", params: url.Values{"query": {`max by (namespace) (rate(http_requests_total[5m]))`}, "time": {formatTime(f.data.Start.Add(30 * time.Minute))}}}
		p := startProxy(t, pushDownConfig(f, true))
		compareAnswers(t, r.String(), doRequest(t, f.reference.URL, r), doRequest(t, p.URL, r))
		if pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback"); pushed != 0 || fallback != 1 {
			t.Errorf("pushed %v, fell back %v; want 0 and 1", pushed, fallback)
		}
		// The control: the same query over the same shards without the flag is pushed.
		g := startShards(t, "undelayed", []e2eutil.Kind{e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		q := startProxy(t, pushDownConfig(g, true))
		compareAnswers(t, r.String(), doRequest(t, g.reference.URL, r), doRequest(t, q.URL, r))
		if pushed := pushDownCount(t, q, "pushed"); pushed != 1 {
			t.Errorf("without the flag: pushed %v, want 1", pushed)
		}
	})

	t.Run("NotDisjoint", func(t *testing.T) {
		// The global series are in groups 0 and 1 alike; the split series
		// in every group, each holding part of their time.
		f := startShards(t, "overlap", []e2eutil.Kind{e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool {
				return l.Get("cluster") != datagen.GlobalCluster || i < 2
			}
		}, nil)
		// A selector on cluster="global" skips every group by its label
		// before any planning: that is how group labels are read, push-down
		// or not, and not what this test is about.
		reqs := promqlRequests(f.data, func(q string) bool { return strings.Contains(q, datagen.GlobalCluster) })
		p := startProxy(t, pushDownConfig(f, true))
		runSuite(t, f.reference.URL, p.URL, reqs, nil)
		if pushDownCount(t, p, "fallback") == 0 {
			t.Error("no query fell back, yet groups 0 and 1 share the global series")
		}
		// A query reading a series held by two groups is evaluated in the proxy.
		before := pushDownCount(t, p, "pushed")
		r := apiRequest{path: "/api/v1/query", params: url.Values{"query": {`max by (job) (up)`}, "time": {formatTime(f.data.Start.Add(30 * time.Minute))}}}
		compareAnswers(t, r.String(), doRequest(t, f.reference.URL, r), doRequest(t, p.URL, r))
		if got := pushDownCount(t, p, "pushed"); got != before {
			t.Errorf("max by (job) (up) was pushed although the global up series is in two groups")
		}
	})
}

// sumExprs are the dashboard shapes float_sums: reassociate pushes: sums
// and means across groups, and what is built on them.
var sumExprs = []string{
	`sum by (namespace) (rate(http_requests_total[5m]))`,
	`sum by (namespace, code) (rate(http_requests_total{code=~"5.."}[5m]))`,
	`sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))`,
	`histogram_quantile(0.99, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`,
	`histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[1h])))`,
	`sum by (job) (rate(http_request_duration_seconds_sum[5m])) / sum by (job) (rate(http_request_duration_seconds_count[5m]))`,
	`topk(5, sum by (instance) (rate(http_requests_total[5m])))`,
	`avg by (namespace) (memory_usage_bytes{namespace=~"team-.*"})`,
	`1 - avg by (job) (rate(node_cpu_seconds_total{mode="idle"}[5m]))`,
	`avg(memory_usage_bytes)`,
	`avg without (cluster, instance) (memory_usage_bytes)`,
	`sum(increase(http_requests_total[1h]))`,
	`sum without (cluster, instance) (rate(http_requests_total[5m]))`,
}

func sumRequests(data datagen.Config) []apiRequest { return exprRequests(data, sumExprs) }

// sumsTolerance is the relative difference allowed between an answer with
// float_sums: reassociate and the reference. The README's bound for sums
// of inputs of one sign is 7·2⁻⁵³ (8e-16); histogram_quantile interpolates
// between buckets and can magnify it, so the test allows more.
const sumsTolerance = 1e-12

// tally counts how answers compared within a tolerance.
type tally struct {
	answers, bitEqual, samplesWithin, samplesExact int
	maxRel                                         float64
}

// compareWithin is compareAnswers allowing sample values (and only those)
// to differ by a relative tol; it counts what was bit-equal.
func compareWithin(t testing.TB, what string, want, got apiAnswer, tol float64, tl *tally) {
	t.Helper()
	tl.answers++
	if want.code != got.code {
		t.Errorf("%s: HTTP %d, reference %d\nproxy: %s\nreference: %s", what, got.code, want.code, clip(got.body), clip(want.body))
		return
	}
	w, g := normalize(t, want.body), normalize(t, got.body)
	if reflect.DeepEqual(w, g) {
		tl.bitEqual++
	}
	if d := within(w, g, tol, false, tl); d != "" {
		t.Errorf("%s: %s\nproxy:     %s\nreference: %s", what, d, clip(got.body), clip(want.body))
	}
}

// within walks two decoded answers; under "value" or "values" a string is
// a sample value, compared within tol.
func within(w, g any, tol float64, sample bool, tl *tally) string {
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok || len(gv) != len(wv) {
			return fmt.Sprintf("object %v, reference %v", g, w)
		}
		for k, x := range wv {
			y, ok := gv[k]
			if !ok {
				return fmt.Sprintf("no %q", k)
			}
			if d := within(x, y, tol, sample || k == "value" || k == "values", tl); d != "" {
				return k + ": " + d
			}
		}
	case []any:
		gv, ok := g.([]any)
		if !ok || len(gv) != len(wv) {
			return fmt.Sprintf("list of %d, reference %d", len(gv), len(wv))
		}
		for i := range wv {
			if d := within(wv[i], gv[i], tol, sample, tl); d != "" {
				return fmt.Sprintf("[%d]: %s", i, d)
			}
		}
	case string:
		gs, ok := g.(string)
		if !ok {
			return fmt.Sprintf("%v, reference %q", g, wv)
		}
		if gs == wv {
			if sample {
				tl.samplesExact++
			}
			return ""
		}
		a, errA := strconv.ParseFloat(wv, 64)
		b, errB := strconv.ParseFloat(gs, 64)
		if !sample || errA != nil || errB != nil || math.IsInf(a, 0) || math.IsInf(b, 0) || math.IsNaN(a) || math.IsNaN(b) {
			return fmt.Sprintf("%q, reference %q", gs, wv)
		}
		if rel := math.Abs(a-b) / math.Max(math.Abs(a), math.Abs(b)); rel > tol {
			return fmt.Sprintf("%s, reference %s: relative difference %.3g above %g", gs, wv, rel, tol)
		}
		tl.samplesWithin++
		tl.maxRel = max(tl.maxRel, math.Abs(a-b)/math.Max(math.Abs(a), math.Abs(b)))
	default:
		if !reflect.DeepEqual(w, g) {
			return fmt.Sprintf("%v, reference %v", g, w)
		}
	}
	return ""
}

// runSuiteWithin is runSuiteMinData comparing within tol.
func runSuiteWithin(t *testing.T, reference, proxy string, reqs []apiRequest, header http.Header, minData int, tol float64) tally {
	t.Helper()
	var tl tally
	withData := 0
	for _, r := range reqs {
		want := doRequest(t, reference, r)
		if hasData(t, want) {
			withData++
		}
		r.header = header
		compareWithin(t, r.String(), want, doRequest(t, proxy, r), tol, &tl)
	}
	if withData < minData {
		t.Errorf("only %d of %d reference answers hold data: the suite does not exercise the data", withData, len(reqs))
	}
	t.Logf("%d requests compared within %g: %d answers bit-equal; samples: %d bit-equal, %d within (largest relative difference %.3g)", len(reqs), tol, tl.bitEqual, tl.samplesExact, tl.samplesWithin, tl.maxRel)
	return tl
}
