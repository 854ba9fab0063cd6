package main

import (
	"net/url"
	"testing"
	"time"
)

// BenchmarkProxyVsReference times the same uncached queries against the
// reference Prometheus (all data in one server) and through the proxy (three
// backends), interleaved so machine drift hits both alike. It reports each
// side's time per query set and their ratio.
func BenchmarkProxyVsReference(b *testing.B) {
	f := startFleet(b)
	cfg := baseConfig(f)
	cfg.Proxy.EnableCaching = false
	p := startProxy(b, cfg)
	start, end := f.data.Start.Add(10*time.Minute), f.data.Start.Add(110*time.Minute)
	queries := []apiRequest{}
	for _, q := range []string{
		`sum by (namespace, code) (rate(http_requests_total[5m]))`,
		`histogram_quantile(0.9, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`,
		`topk(3, memory_usage_bytes)`,
		`count by (__name__) ({__name__=~".+"})`,
	} {
		queries = append(queries, apiRequest{path: "/api/v1/query_range", post: true, params: url.Values{
			"query": {q}, "start": {formatTime(start)}, "end": {formatTime(end)}, "step": {"60"},
		}})
	}
	run := func(base string) time.Duration {
		t0 := time.Now()
		for _, q := range queries {
			if a := doRequest(b, base, q); a.code != 200 {
				b.Fatalf("%s: HTTP %d: %s", q, a.code, clip(a.body))
			}
		}
		return time.Since(t0)
	}
	run(f.reference.URL) // warm both servers' page caches
	run(p.URL)
	var ref, proxy time.Duration
	b.ResetTimer()
	for range b.N {
		ref += run(f.reference.URL)
		proxy += run(p.URL)
	}
	b.ReportMetric(float64(ref.Nanoseconds())/float64(b.N), "ref-ns/set")
	b.ReportMetric(float64(proxy.Nanoseconds())/float64(b.N), "proxy-ns/set")
	b.ReportMetric(float64(proxy)/float64(ref), "proxy/ref")
}
