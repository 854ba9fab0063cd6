package query

import (
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
)

// pushDownCount reads prometheus_proxy_pushdown_queries_total{outcome}.
func pushDownCount(t testing.TB, p *e2eproxy.Proxy, outcome string) float64 {
	t.Helper()
	return counterValue(t, p, "prometheus_proxy_pushdown_queries_total", "outcome", outcome)
}

// groupEvalCount reads prometheus_proxy_pushdown_group_queries_total{evaluated_by}:
// the groups' parts of pushed queries their backends ("backend") or the
// proxy over their data ("proxy") evaluated.
func groupEvalCount(t testing.TB, p *e2eproxy.Proxy, by string) float64 {
	t.Helper()
	return counterValue(t, p, "prometheus_proxy_pushdown_group_queries_total", "evaluated_by", by)
}

func counterValue(t testing.TB, p *e2eproxy.Proxy, metric, label, value string) float64 {
	t.Helper()
	mfs, err := p.App.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// promqlRequests is the suite's PromQL part.
func promqlRequests(data datagen.Config, drop func(expr string) bool) []e2eproxy.APIRequest {
	var out []e2eproxy.APIRequest
	for _, r := range e2eproxy.SuiteRequests(data) {
		if strings.HasPrefix(r.Path, "/api/v1/query") && !drop(r.Params.Get("query")) {
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
func exprRequests(data datagen.Config, exprs []string) []e2eproxy.APIRequest {
	instants, ranges := e2eproxy.SuiteTimes(data)
	var reqs []e2eproxy.APIRequest
	for _, e := range exprs {
		for _, ts := range instants {
			reqs = append(reqs, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {e}, "time": {e2eproxy.FormatTime(ts)}}})
		}
		for _, r := range ranges {
			reqs = append(reqs, e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{
				"query": {e}, "start": {e2eproxy.FormatTime(r.Start)}, "end": {e2eproxy.FormatTime(r.End)}, "step": {strconv.FormatFloat(r.Step.Seconds(), 'f', -1, 64)},
			}})
		}
	}
	return reqs
}

func combinedRequests(data datagen.Config) []e2eproxy.APIRequest {
	return exprRequests(data, combinedExprs)
}

// startShards starts one Prometheus per cluster holding what keep(i) lets
// through of shard i, and a reference holding what ref lets through of all.
func startShards(t *testing.T, name string, kinds []e2eutil.Kind, keep func(shard int) func(labels.Labels) bool, ref func(labels.Labels) bool, shardOpts ...func(shard int) []e2eutil.Option) *e2eproxy.Fleet {
	f := &e2eproxy.Fleet{Data: datagen.DefaultConfig()}
	f.Shards = make([]*e2eutil.Prometheus, f.Data.Shards())
	for i := range f.Shards {
		opts := []e2eutil.Option{e2eutil.WithName(name + "-" + f.Data.Clusters[i])}
		for _, so := range shardOpts {
			opts = append(opts, so(i)...)
		}
		f.Shards[i] = e2eutil.StartPrometheus(t, kinds[i%len(kinds)], e2eproxy.OpenMetrics(t, f.Data, i, keep(i)), opts...)
	}
	f.Reference = e2eutil.StartPrometheus(t, e2eutil.V3, e2eproxy.OpenMetrics(t, f.Data, -1, ref), e2eutil.WithName(name+"-reference"))
	return f
}

// pushDownConfig labels each group with its cluster, the label that makes
// the groups disjoint when each shard holds only its cluster's series.
func pushDownConfig(f *e2eproxy.Fleet, on bool) app.Config {
	return pushDownConfigSums(f, on, plan.FloatSumsExact)
}

// pushDownConfigSums is pushDownConfig with engine.push_down.float_sums.
// It pushes whatever the planner proves (min_samples_per_point: 0), so
// the suites check the pushed answers of every query they ask again, not
// only the first.
func pushDownConfigSums(f *e2eproxy.Fleet, on bool, sums plan.FloatSums) app.Config {
	cfg := e2eproxy.BaseConfig(f)
	cfg.Engine.PushDown.FloatSums = sums
	cfg.Engine.PushDown.MinSamplesPerPoint = 0
	for i := range cfg.Discovery.Static {
		cfg.Discovery.Static[i].Labels = map[string]string{"cluster": f.Data.Clusters[i]}
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
		reqs := append(promqlRequests(f.Data, func(string) bool { return false }), combinedRequests(f.Data)...)
		for _, on := range []bool{false, true} {
			name := map[bool]string{false: "off", true: "on"}[on]
			t.Run(name, func(t *testing.T) {
				p := e2eproxy.StartProxy(t, pushDownConfig(f, on))
				e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
				pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback")
				t.Logf("push-down %s: %v queries pushed, %v fell back", name, pushed, fallback)
				// count(up), sum by (cluster) (up), group by (cluster) (up),
				// count by (__name__) (…) ×2 at least: 6 requests each.
				// Every combined expression but topk(2, up) (ties) pushed.
				perExpr := float64(len(combinedRequests(f.Data)) / len(combinedExprs))
				if on && pushed < 30+perExpr*float64(len(combinedExprs)-1) {
					t.Errorf("push-down on: only %v of %d queries pushed", pushed, len(reqs))
				}
				if on && fallback < perExpr {
					t.Errorf("push-down on: %v queries fell back; topk(2, up), decided by ties, must every time", fallback)
				}
				ex := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`count by (__name__) ({__name__=~".+"})`}, "explain": {"true"}}})
				wantText := map[bool]string{true: `sum by (__name__) (remote(count by (__name__) ({__name__=~\".+\"})))`, false: "push-down is off"}[on]
				if ex.Code != 200 || !strings.Contains(string(ex.Body), wantText) {
					t.Errorf("explain: HTTP %d %s; want it to hold %s", ex.Code, ex.Body, wantText)
				}
				if !on && pushed+fallback != 0 {
					t.Errorf("push-down off, yet %v queries pushed", pushed+fallback)
				}
			})
		}
		t.Run("Reassociate", func(t *testing.T) {
			// float_sums: reassociate: within sumsTolerance of the
			// reference, and every sum and avg of the dashboards pushed.
			p := e2eproxy.StartProxy(t, pushDownConfigSums(f, true, plan.FloatSumsReassociate))
			runSuiteWithin(t, f.Reference.URL, p.URL, reqs, nil, len(reqs)/2, sumsTolerance)
			sums := sumRequests(f.Data)
			before, fellBefore := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback")
			tl := runSuiteWithin(t, f.Reference.URL, p.URL, sums, nil, len(sums)*3/4, sumsTolerance)
			if pushed := pushDownCount(t, p, "pushed") - before; pushed < float64(len(sums)) {
				t.Errorf("%v of %d sum and avg queries pushed", pushed, len(sums))
			}
			if fell := pushDownCount(t, p, "fallback") - fellBefore; fell != 0 {
				t.Errorf("%v sum and avg queries fell back", fell)
			}
			if tl.SamplesWithin == 0 {
				t.Log("every sample bit-equal: this data's partial sums happen to round alike")
			}
			ex := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`avg by (namespace) (memory_usage_bytes)`}, "explain": {"true"}}})
			if ex.Code != 200 || !strings.Contains(string(ex.Body), "avg re-associated (engine.push_down.float_sums: reassociate)") {
				t.Errorf("explain: HTTP %d %s", ex.Code, ex.Body)
			}
		})
		t.Run("CostChoice", func(t *testing.T) { testPushDownCostChoice(t, f) })
		t.Run("Tenants", func(t *testing.T) {
			dir := e2eproxy.TenantFiles(t)
			cfg := pushDownConfig(f, true)
			tc := e2eproxy.TenantConfig(f, dir)
			cfg.Tenants = tc.Tenants
			p := e2eproxy.StartProxy(t, cfg)
			cfgSums := pushDownConfigSums(f, true, plan.FloatSumsReassociate)
			cfgSums.Tenants = tc.Tenants
			pSums := e2eproxy.StartProxy(t, cfgSums)
			attacks := e2eproxy.AttackRequests(f)
			for _, ns := range []string{"team-a", "team-b", "team-c"} {
				t.Run(ns, func(t *testing.T) {
					pol := e2eproxy.PolicyOf(t, p, ns)
					oracle := e2eutil.StartPrometheus(t, e2eutil.V3, e2eproxy.OpenMetrics(t, f.Data, -1, func(l labels.Labels) bool { return ownCluster(l) && pol.Matches(l) }), e2eutil.WithName("pushdown-oracle-"+ns))
					before := pushDownCount(t, p, "pushed")
					e2eproxy.RunSuiteMinData(t, oracle.URL, p.URL, reqs, e2eproxy.TenantHeader(ns), 40)
					for _, r := range attacks {
						if !strings.HasPrefix(r.Path, "/api/v1/query") {
							continue
						}
						want := e2eproxy.DoRequest(t, oracle.URL, r)
						r.Header = e2eproxy.TenantHeader(ns)
						e2eproxy.CompareAnswers(t, "attack "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
					}
					t.Logf("tenant %s: %v queries pushed", ns, pushDownCount(t, p, "pushed")-before)
					// The same with sums and means re-associated: within
					// the tolerance of the tenant's oracle.
					beforeSums := pushDownCount(t, pSums, "pushed")
					var attackTally e2eproxy.Tally
					runSuiteWithin(t, oracle.URL, pSums.URL, append(slices.Clone(reqs), sumRequests(f.Data)...), e2eproxy.TenantHeader(ns), 40, sumsTolerance)
					for _, r := range attacks {
						if !strings.HasPrefix(r.Path, "/api/v1/query") {
							continue
						}
						want := e2eproxy.DoRequest(t, oracle.URL, r)
						r.Header = e2eproxy.TenantHeader(ns)
						compareWithin(t, "attack "+r.String(), want, e2eproxy.DoRequest(t, pSums.URL, r), sumsTolerance, &attackTally)
					}
					pushedSums := pushDownCount(t, pSums, "pushed") - beforeSums
					t.Logf("tenant %s, float_sums reassociate: %v queries pushed", ns, pushedSums)
					if pushedSums <= pushDownCount(t, p, "pushed")-before {
						t.Errorf("tenant %s: float_sums reassociate pushed %v queries, no more than exact", ns, pushedSums)
					}
					// The plan a tenant sees carries its own rule in every
					// pushed selector.
					q := map[string]string{"team-a": `max by (cluster) (rate(http_requests_total[5m]))`, "team-b": `max by (cluster) (memory_usage_bytes)`, "team-c": `count by (cluster) (http_requests_total{job="api"})`}[ns]
					ex := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {q}, "explain": {"true"}}, Header: e2eproxy.TenantHeader(ns)})
					if ex.Code != 200 || !strings.Contains(string(ex.Body), "remote(") || !strings.Contains(string(ex.Body), `namespace=\"`+ns+`\"`) {
						t.Errorf("explain for %s: HTTP %d %s", ns, ex.Code, ex.Body)
					}
					if ns == "team-c" {
						// Both of team-c's rules admit up: pushed as the or
						// of the two variants (the suite above compared
						// such answers with the oracle).
						// (rate(up) would fall back: its answer carries the
						// "not a counter" info.)
						r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`max by (job) (max_over_time(up[5m]))`}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))}}, Header: e2eproxy.TenantHeader(ns)}
						before := pushDownCount(t, p, "pushed")
						got := e2eproxy.DoRequest(t, p.URL, r)
						r.Header = nil
						e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, oracle.URL, r), got)
						if !e2eproxy.HasData(t, got) || pushDownCount(t, p, "pushed") != before+1 {
							t.Errorf("max by (job) (max_over_time(up[5m])) for team-c: pushed %v, data %v", pushDownCount(t, p, "pushed")-before, e2eproxy.HasData(t, got))
						}
						r.Params.Set("explain", "true")
						r.Header = e2eproxy.TenantHeader(ns)
						if ex := e2eproxy.DoRequest(t, p.URL, r); !strings.Contains(string(ex.Body), `[5m]) or max_over_time(up{`) {
							t.Errorf("explain for team-c: want an or of rule variants: %s", ex.Body)
						}
					}
				})
			}
		})
	})

	t.Run("OtherEngineRelease", func(t *testing.T) {
		// Prometheus 2.42 selects ranges closed on the left, 3.x open: the
		// same query answers differently there, so nothing is sent to the
		// 2.42 group to evaluate. Its part is evaluated by the proxy's
		// engine over its data, beside the 3.x groups' pushed parts.
		f := startShards(t, "mixed", e2eproxy.ShardKinds, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`max by (namespace) (rate(http_requests_total[5m]))`}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))}}}
		p := e2eproxy.StartProxy(t, pushDownConfig(f, true))
		e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
		if pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback"); pushed != 1 || fallback != 0 {
			t.Errorf("pushed %v, fell back %v; want 1 and 0", pushed, fallback)
		}
		if byBackend, byProxy := groupEvalCount(t, p, "backend"), groupEvalCount(t, p, "proxy"); byBackend != 2 || byProxy != 1 {
			t.Errorf("groups' parts evaluated by their backends %v, by the proxy %v; want 2 (the 3.x groups) and 1 (the 2.42 group)", byBackend, byProxy)
		}
		// explain names the group evaluated by the proxy and why.
		r.Params.Set("explain", "true")
		if ex := e2eproxy.DoRequest(t, p.URL, r); ex.Code != 200 || !strings.Contains(string(ex.Body), "evaluated by the proxy over this group's data") || !strings.Contains(string(ex.Body), "compatibility table") {
			t.Errorf("explain: HTTP %d %s; want the 2.x group evaluated by the proxy, naming the compatibility table", ex.Code, ex.Body)
		}
		// The suite, the combined expressions and the sums, with the
		// shipped float_sums (reassociate), as the reference answers them.
		cfg := pushDownConfigSums(f, true, plan.FloatSumsReassociate)
		q := e2eproxy.StartProxy(t, cfg)
		reqs := append(promqlRequests(f.Data, func(string) bool { return false }), combinedRequests(f.Data)...)
		runSuiteWithin(t, f.Reference.URL, q.URL, append(reqs, sumRequests(f.Data)...), nil, len(reqs)/2, sumsTolerance)
		if byProxy := groupEvalCount(t, q, "proxy"); byProxy < float64(len(sumRequests(f.Data))) {
			t.Errorf("the 2.42 group's parts of only %v queries evaluated by the proxy", byProxy)
		}
	})

	t.Run("OnlyOtherEngineRelease", func(t *testing.T) {
		// Every group on 2.42: the suite and the sums answer as the
		// reference, with every group's part evaluated by the proxy over
		// the group's data, and explain says so.
		f := startShards(t, "v2only", []e2eutil.Kind{e2eutil.V2}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		p := e2eproxy.StartProxy(t, pushDownConfigSums(f, true, plan.FloatSumsReassociate))
		reqs := append(promqlRequests(f.Data, func(string) bool { return false }), combinedRequests(f.Data)...)
		runSuiteWithin(t, f.Reference.URL, p.URL, append(reqs, sumRequests(f.Data)...), nil, len(reqs)/2, sumsTolerance)
		pushed, byBackend, byProxy := pushDownCount(t, p, "pushed"), groupEvalCount(t, p, "backend"), groupEvalCount(t, p, "proxy")
		t.Logf("2.42 only: %v queries split by group, %v groups' parts evaluated by the proxy", pushed, byProxy)
		if byBackend != 0 || pushed < float64(len(sumRequests(f.Data))) || byProxy < 3*pushed {
			t.Errorf("split %v, groups' parts by backends %v, by the proxy %v; want none by backends and every group's part of at least the %d sums by the proxy", pushed, byBackend, byProxy, len(sumRequests(f.Data)))
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
		cfg := e2eproxy.BaseConfig(f)
		for i := range cfg.Discovery.Static {
			cfg.Discovery.Static[i].Labels = map[string]string{"cluster": f.Data.Clusters[i]}
		}
		p := e2eproxy.StartProxy(t, cfg)
		reqs := append(promqlRequests(f.Data, func(string) bool { return false }), combinedRequests(f.Data)...)
		runSuiteWithin(t, f.Reference.URL, p.URL, append(reqs, sumRequests(f.Data)...), nil, len(reqs)/2, sumsTolerance)
		pushed, fallback := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback")
		t.Logf("with a 3.5 group: %v queries pushed, %v fell back", pushed, fallback)
		if pushed < float64(len(sumRequests(f.Data))) {
			t.Errorf("with a 3.5 group only %v queries pushed", pushed)
		}
		// What 3.5 evaluates differently is not sent to it: the proxy
		// evaluates the LTS group's part over its data, and explain says why.
		r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`max by (namespace) (quantile_over_time(0.9, memory_usage_bytes[10m]))`}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))}}}
		fellBefore, byProxyBefore, byBackendBefore := pushDownCount(t, p, "fallback"), groupEvalCount(t, p, "proxy"), groupEvalCount(t, p, "backend")
		e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
		fell, byProxy, byBackend := pushDownCount(t, p, "fallback")-fellBefore, groupEvalCount(t, p, "proxy")-byProxyBefore, groupEvalCount(t, p, "backend")-byBackendBefore
		if fell != 0 || byProxy != 1 || byBackend != 2 {
			t.Errorf("quantile_over_time with a 3.5 group: %v fell back, groups' parts by the proxy %v, by backends %v; want 0, 1 (the 3.5 group) and 2", fell, byProxy, byBackend)
		}
		r.Params.Set("explain", "true")
		if ex := e2eproxy.DoRequest(t, p.URL, r); !strings.Contains(string(ex.Body), "quantile_over_time() differs") {
			t.Errorf("explain: %s", ex.Body)
		}
	})

	t.Run("DelayedNameRemoval", func(t *testing.T) {
		// A backend started with promql-delayed-name-removal keeps
		// __name__ through functions until the end, as the proxy's engine
		// does not: its group's part is evaluated by the proxy.
		f := startShards(t, "delayed", []e2eutil.Kind{e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster, func(i int) []e2eutil.Option {
			if i == 1 {
				return []e2eutil.Option{e2eutil.WithFlags("--enable-feature=promql-delayed-name-removal")}
			}
			return nil
		})
		r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`max by (namespace) (rate(http_requests_total[5m]))`}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))}}}
		p := e2eproxy.StartProxy(t, pushDownConfig(f, true))
		e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
		if pushed, fallback, byProxy := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "fallback"), groupEvalCount(t, p, "proxy"); pushed != 1 || fallback != 0 || byProxy != 1 {
			t.Errorf("pushed %v, fell back %v, groups' parts by the proxy %v; want 1, 0 and 1", pushed, fallback, byProxy)
		}
		ex := e2eproxy.APIRequest{Path: r.Path, Params: url.Values{"query": r.Params["query"], "time": r.Params["time"], "explain": {"true"}}}
		if body := string(e2eproxy.DoRequest(t, p.URL, ex).Body); !strings.Contains(body, "--enable-feature=promql-delayed-name-removal") || strings.Count(body, "evaluated by the proxy") != 1 {
			t.Errorf("explain does not say the flagged group's part is evaluated by the proxy, and why: %s", body)
		}
		// The control: the same query over the same shards without the flag is pushed.
		g := startShards(t, "undelayed", []e2eutil.Kind{e2eutil.V3}, func(i int) func(labels.Labels) bool {
			return func(l labels.Labels) bool { return l.Get("cluster") == datagen.DefaultConfig().Clusters[i] }
		}, ownCluster)
		q := e2eproxy.StartProxy(t, pushDownConfig(g, true))
		e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, g.Reference.URL, r), e2eproxy.DoRequest(t, q.URL, r))
		if pushed, byProxy := pushDownCount(t, q, "pushed"), groupEvalCount(t, q, "proxy"); pushed != 1 || byProxy != 0 {
			t.Errorf("without the flag: pushed %v, groups' parts by the proxy %v; want 1 and 0", pushed, byProxy)
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
		reqs := promqlRequests(f.Data, func(q string) bool { return strings.Contains(q, datagen.GlobalCluster) })
		p := e2eproxy.StartProxy(t, pushDownConfig(f, true))
		e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
		if pushDownCount(t, p, "fallback") == 0 {
			t.Error("no query fell back, yet groups 0 and 1 share the global series")
		}
		// A query reading a series held by two groups is evaluated in the proxy.
		before := pushDownCount(t, p, "pushed")
		r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`max by (job) (up)`}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))}}}
		e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
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

func sumRequests(data datagen.Config) []e2eproxy.APIRequest { return exprRequests(data, sumExprs) }

// sumsTolerance is the relative difference allowed between an answer with
// float_sums: reassociate and the reference. The README's bound for sums
// of inputs of one sign is 7·2⁻⁵³ (8e-16); histogram_quantile interpolates
// between buckets and can magnify it, so the test allows more.
const sumsTolerance = 1e-12

// compareWithin is CompareAnswers allowing sample values (and only those)
// to differ by a relative tol; it counts what was bit-equal.
func compareWithin(t testing.TB, what string, want, got e2eproxy.APIAnswer, tol float64, tl *e2eproxy.Tally) {
	t.Helper()
	tl.Answers++
	if want.Code != got.Code {
		t.Errorf("%s: HTTP %d, reference %d\nproxy: %s\nreference: %s", what, got.Code, want.Code, e2eproxy.Clip(got.Body), e2eproxy.Clip(want.Body))
		return
	}
	if bytes.Equal(want.Body, got.Body) {
		tl.BitEqual++ // not decoded: its samples are counted in neither tally
		return
	}
	w, g := e2eproxy.Normalize(t, want.Body), e2eproxy.Normalize(t, got.Body)
	within := tl.SamplesWithin
	if d := e2eproxy.Within(w, g, tol, false, tl); d != "" {
		t.Errorf("%s: %s\nproxy:     %s\nreference: %s", what, d, e2eproxy.Clip(got.Body), e2eproxy.Clip(want.Body))
	} else if tl.SamplesWithin == within {
		// Within compares everything but sample values exactly, and
		// found no sample that needed the tolerance: bit-equal.
		tl.BitEqual++
	}
}

// runSuiteWithin is RunSuiteMinData comparing within tol.
func runSuiteWithin(t *testing.T, reference, proxy string, reqs []e2eproxy.APIRequest, header http.Header, minData int, tol float64) e2eproxy.Tally {
	t.Helper()
	var tl e2eproxy.Tally
	withData := 0
	for _, r := range reqs {
		want := e2eproxy.DoRequest(t, reference, r)
		if e2eproxy.HasData(t, want) {
			withData++
		}
		r.Header = header
		compareWithin(t, r.String(), want, e2eproxy.DoRequest(t, proxy, r), tol, &tl)
	}
	if withData < minData {
		t.Errorf("only %d of %d reference answers hold data: the suite does not exercise the data", withData, len(reqs))
	}
	t.Logf("%d requests compared within %g: %d answers bit-equal; samples of the others: %d bit-equal, %d within (largest relative difference %.3g)", len(reqs), tol, tl.BitEqual, tl.SamplesExact, tl.SamplesWithin, tl.MaxRel)
	return tl
}

// testPushDownCostChoice: with the shipped min_samples_per_point, a query
// whose pushed answers are as large as what the backends read (an
// aggregation keeping every series: one sample read per point answered) is
// pushed once, then evaluated in the proxy with the reason in explain; a
// query reading many samples per point stays pushed. Both answer the
// reference's answer every time. The mixed probe's order is learned across
// queries: the second query grouping by cluster reads no series to prove
// it.
func testPushDownCostChoice(t *testing.T, f *e2eproxy.Fleet) {
	cfg := pushDownConfigSums(f, true, plan.FloatSumsReassociate)
	cfg.Engine.PushDown.MinSamplesPerPoint = plan.DefaultMinSamplesPerPoint
	cfg.Proxy.EnableCaching = false // every round evaluated, none answered from the results cache
	p := e2eproxy.StartProxy(t, cfg)
	start, end := f.Data.Start.Add(40*time.Minute), f.Data.Start.Add(100*time.Minute)
	ask := func(q string) e2eproxy.APIRequest {
		return e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{
			"query": {q}, "start": {e2eproxy.FormatTime(start)}, "end": {e2eproxy.FormatTime(end)}, "step": {"15"}}}
	}
	const (
		asLarge = `max by (cluster, namespace, job, instance) (memory_usage_bytes)`
		reduces = `max(max_over_time(memory_usage_bytes[30m]))`
	)
	// These series store their cluster: the first query grouping by it
	// finds so with its folded probe and reads them all; from then on the
	// probe folded is the side finding none (series lacking cluster).
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, []e2eproxy.APIRequest{ask(`max by (cluster) (up)`)}, nil)
	for round := range 3 {
		for _, c := range []struct {
			q      string
			pushed bool
		}{{asLarge, round == 0}, {reduces, true}} {
			pushed, cheaper := pushDownCount(t, p, "pushed"), pushDownCount(t, p, "cheaper_in_proxy")
			e2eproxy.RunSuite(t, f.Reference.URL, p.URL, []e2eproxy.APIRequest{ask(c.q)}, nil)
			gotPushed, gotCheaper := pushDownCount(t, p, "pushed")-pushed, pushDownCount(t, p, "cheaper_in_proxy")-cheaper
			if want := map[bool]float64{true: 1}[c.pushed]; gotPushed != want || gotCheaper != 1-want {
				t.Errorf("round %d, %s: pushed %v, evaluated in the proxy as cheaper %v; want pushed %v", round, c.q, gotPushed, gotCheaper, c.pushed)
			}
		}
	}
	ex := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {asLarge}, "explain": {"true"}}})
	if want := "kept in proxy: range queries: evaluated in the proxy: pushed"; ex.Code != 200 || !strings.Contains(string(ex.Body), want) || !strings.Contains(string(ex.Body), "min_samples_per_point") {
		t.Errorf("explain of %s: HTTP %d %s; want it to hold %q and the key", asLarge, ex.Code, ex.Body, want)
	}
	ex = e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {reduces}, "explain": {"true"}}})
	if ex.Code != 200 || strings.Contains(string(ex.Body), "min_samples_per_point") {
		t.Errorf("explain of %s: HTTP %d %s; want no cost reason", reduces, ex.Code, ex.Body)
	}
}
