package query

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
)

// BenchmarkProxyVsReference times the same uncached queries against the
// reference Prometheus (all data in one server) and through the proxy (three
// backends), interleaved so machine drift hits both alike. It reports each
// side's time per query set and their ratio.
func BenchmarkProxyVsReference(b *testing.B) {
	f := e2eproxy.StartFleet(b)
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = false
	p := e2eproxy.StartProxy(b, cfg)
	start, end := f.Data.Start.Add(10*time.Minute), f.Data.Start.Add(110*time.Minute)
	queries := []e2eproxy.APIRequest{}
	for _, q := range []string{
		`sum by (namespace, code) (rate(http_requests_total[5m]))`,
		`histogram_quantile(0.9, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`,
		`topk(3, memory_usage_bytes)`,
		`count by (__name__) ({__name__=~".+"})`,
	} {
		queries = append(queries, e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{
			"query": {q}, "start": {e2eproxy.FormatTime(start)}, "end": {e2eproxy.FormatTime(end)}, "step": {"60"},
		}})
	}
	benchSides(b, queries, []string{"ref", "proxy"}, []string{f.Reference.URL, p.URL})
}

// BenchmarkPushDown times the same uncached queries against the reference,
// the proxy without push-down and the proxy with it, interleaved, over
// backends disjoint by cluster (each holds only its cluster's series). It
// reports each side's time per query set and the ratios to the reference.
func BenchmarkPushDown(b *testing.B) {
	data := datagen.DefaultConfig()
	f := &e2eproxy.Fleet{Data: data}
	f.Shards = make([]*e2eutil.Prometheus, data.Shards())
	for i := range f.Shards {
		own := data.Clusters[i]
		f.Shards[i] = e2eutil.StartPrometheus(b, e2eutil.V3, e2eproxy.OpenMetrics(b, data, i, func(l labels.Labels) bool { return l.Get("cluster") == own }), e2eutil.WithName("bench-"+own))
	}
	f.Reference = e2eutil.StartPrometheus(b, e2eutil.V3, e2eproxy.OpenMetrics(b, data, -1, ownCluster), e2eutil.WithName("bench-reference"))
	off, on, sums := pushDownConfig(f, false), pushDownConfig(f, true), pushDownConfigSums(f, true, plan.FloatSumsReassociate)
	off.Proxy.EnableCaching, on.Proxy.EnableCaching, sums.Proxy.EnableCaching = false, false, false
	pOff, pOn, pSums := e2eproxy.StartProxy(b, off), e2eproxy.StartProxy(b, on), e2eproxy.StartProxy(b, sums)
	start, end := data.Start.Add(10*time.Minute), data.Start.Add(110*time.Minute)
	var queries []e2eproxy.APIRequest
	for _, q := range []string{
		`sum by (namespace, code) (rate(http_requests_total[5m]))`,
		`histogram_quantile(0.9, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`,
		`max by (namespace) (rate(http_requests_total[5m]))`,
		`count by (__name__) ({__name__=~".+"})`,
		`sum by (cluster, namespace) (rate(http_requests_total[5m]))`,
		`topk(3, memory_usage_bytes)`,
		// The dashboards' other shapes: exact push-down leaves them in the
		// proxy, float_sums: reassociate pushes their sums and means.
		`avg by (namespace) (memory_usage_bytes{namespace=~"team-.*"})`,
		`topk(5, sum by (instance) (rate(http_requests_total[5m])))`,
		`sum(increase(http_requests_total[1h]))`,
		`1 - avg by (cluster) (rate(node_cpu_seconds_total{mode="idle"}[5m]))`,
	} {
		queries = append(queries,
			e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{"query": {q}, "start": {e2eproxy.FormatTime(start)}, "end": {e2eproxy.FormatTime(end)}, "step": {"60"}}},
			e2eproxy.APIRequest{Path: "/api/v1/query", Post: true, Params: url.Values{"query": {q}, "time": {e2eproxy.FormatTime(end)}}})
	}
	// each[side][i] is the time side spent on queries[i], summed over b.N.
	each := make([][]time.Duration, 4)
	for i := range each {
		each[i] = make([]time.Duration, len(queries))
	}
	run := func(side int, base string) time.Duration {
		var total time.Duration
		for i, q := range queries {
			t0 := time.Now()
			if a := e2eproxy.DoRequest(b, base, q); a.Code != 200 {
				b.Fatalf("%s: HTTP %d: %s", q, a.Code, e2eproxy.Clip(a.Body))
			}
			d := time.Since(t0)
			each[side][i] += d
			total += d
		}
		return total
	}
	sides := []string{f.Reference.URL, pOff.URL, pOn.URL, pSums.URL}
	for i, u := range sides {
		run(i, u) // warm page caches and connections
	}
	for i := range each {
		clear(each[i])
	}
	var ref, tOff, tOn, tSums time.Duration
	b.ResetTimer()
	for range b.N {
		ref += run(0, sides[0])
		tOff += run(1, sides[1])
		tOn += run(2, sides[2])
		tSums += run(3, sides[3])
	}
	b.StopTimer()
	for i, q := range queries {
		r := float64(each[0][i])
		b.Logf("%-11s off %.2f on %.2f sums %.2f  %s", strings.TrimPrefix(q.Path, "/api/v1/"), float64(each[1][i])/r, float64(each[2][i])/r, float64(each[3][i])/r, q.Params.Get("query"))
	}
	b.ReportMetric(float64(ref.Nanoseconds())/float64(b.N), "ref-ns/set")
	b.ReportMetric(float64(tOff)/float64(ref), "off/ref")
	b.ReportMetric(float64(tOn)/float64(ref), "on/ref")
	b.ReportMetric(float64(tSums)/float64(ref), "sums/ref")
	b.ReportMetric(pushDownCount(b, pOn, "pushed")/float64(b.N+1), "pushed/set")
	b.ReportMetric(pushDownCount(b, pSums, "pushed")/float64(b.N+1), "sums-pushed/set")
}
