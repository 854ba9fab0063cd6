package main

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/testenv"
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
}

func combinedRequests(data datagen.Config) []apiRequest {
	instants, ranges := suiteTimes(data)
	var reqs []apiRequest
	for _, e := range combinedExprs {
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

// startShards starts one Prometheus per cluster holding what keep(i) lets
// through of shard i, and a reference holding what ref lets through of all.
func startShards(t *testing.T, name string, kinds []testenv.Kind, keep func(shard int) func(labels.Labels) bool, ref func(labels.Labels) bool) *fleet {
	f := &fleet{data: datagen.DefaultConfig()}
	f.shards = make([]*testenv.Prometheus, f.data.Shards())
	for i := range f.shards {
		f.shards[i] = testenv.StartPrometheus(t, kinds[i%len(kinds)], openMetrics(t, f.data, i, keep(i)), testenv.WithName(name+"-"+f.data.Clusters[i]))
	}
	f.reference = testenv.StartPrometheus(t, testenv.V3, openMetrics(t, f.data, -1, ref), testenv.WithName(name+"-reference"))
	return f
}

// pushDownConfig labels each group with its cluster, the label that makes
// the groups disjoint when each shard holds only its cluster's series.
func pushDownConfig(f *fleet, on bool) Config {
	cfg := baseConfig(f)
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
		f := startShards(t, "disjoint", []testenv.Kind{testenv.V3}, func(i int) func(labels.Labels) bool {
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
				if on && pushed < 30+float64(len(combinedRequests(f.data))) {
					t.Errorf("push-down on: only %v of %d queries pushed", pushed, len(reqs))
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
		t.Run("Tenants", func(t *testing.T) {
			dir := tenantFiles(t)
			cfg := pushDownConfig(f, true)
			tc := tenantConfig(f, dir)
			cfg.Tenants = tc.Tenants
			p := startProxy(t, cfg)
			attacks := attackRequests(f)
			for _, ns := range []string{"team-a", "team-b", "team-c"} {
				t.Run(ns, func(t *testing.T) {
					pol := policyOf(t, p, ns)
					oracle := testenv.StartPrometheus(t, testenv.V3, openMetrics(t, f.data, -1, func(l labels.Labels) bool { return ownCluster(l) && pol.Matches(l) }), testenv.WithName("pushdown-oracle-"+ns))
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
					// The plan a tenant sees carries its own rule in every
					// pushed selector.
					q := map[string]string{"team-a": `max by (cluster) (rate(http_requests_total[5m]))`, "team-b": `max by (cluster) (memory_usage_bytes)`, "team-c": `count by (cluster) (http_requests_total{job="api"})`}[ns]
					ex := doRequest(t, p.URL, apiRequest{path: "/api/v1/query", params: url.Values{"query": {q}, "explain": {"true"}}, header: tenantHeader(ns)})
					if ex.code != 200 || !strings.Contains(string(ex.body), "remote(") || !strings.Contains(string(ex.body), `namespace=\"`+ns+`\"`) {
						t.Errorf("explain for %s: HTTP %d %s", ns, ex.code, ex.body)
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
	})

	t.Run("NotDisjoint", func(t *testing.T) {
		// The global series are in groups 0 and 1 alike; the split series
		// in every group, each holding part of their time.
		f := startShards(t, "overlap", []testenv.Kind{testenv.V3}, func(i int) func(labels.Labels) bool {
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
