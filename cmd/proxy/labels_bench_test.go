package main

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// BenchmarkTenantLabels times a tenant's label calls, answered from the
// series it may see (each checked against its policy), against the same
// calls as an admin, answered by the backends' label endpoints, and
// against the tenant's oracle Prometheus, interleaved in one run. It
// reports each side's time per set and the ratios.
func BenchmarkTenantLabels(b *testing.B) {
	f := startFleet(b)
	cfg := tenantConfig(f, tenantFiles(b))
	cfg.Proxy.EnableCaching = false
	p := startProxy(b, cfg)
	const ns = "team-a"
	oracle := oracleFor(b, f, ns, policyOf(b, p, ns))
	start, end := formatTime(f.data.Start.Add(10*time.Minute)), formatTime(f.data.Start.Add(110*time.Minute))
	window := url.Values{"start": {start}, "end": {end}}
	reqs := []apiRequest{
		{path: "/api/v1/labels", params: window},
		{path: "/api/v1/label/__name__/values", params: window},
		{path: "/api/v1/label/instance/values", params: window},
		{path: "/api/v1/label/job/values", params: url.Values{"start": {start}, "end": {end}, "match[]": {`{__name__=~"http_.*"}`}}},
	}
	run := func(base string, h http.Header) time.Duration {
		t0 := time.Now()
		for _, r := range reqs {
			r.header = h
			if a := doRequest(b, base, r); a.code != http.StatusOK {
				b.Fatalf("%s: HTTP %d: %s", r, a.code, clip(a.body))
			}
		}
		return time.Since(t0)
	}
	run(p.URL, tenantHeader(ns))
	run(p.URL, tenantHeader("monitoring"))
	run(oracle.URL, nil)
	var tenant, admin, ref time.Duration
	b.ResetTimer()
	for range b.N {
		tenant += run(p.URL, tenantHeader(ns))
		admin += run(p.URL, tenantHeader("monitoring"))
		ref += run(oracle.URL, nil)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tenant.Nanoseconds())/n, "tenant-ns/set")
	b.ReportMetric(float64(admin.Nanoseconds())/n, "admin-ns/set")
	b.ReportMetric(float64(ref.Nanoseconds())/n, "oracle-ns/set")
	b.ReportMetric(float64(tenant)/float64(admin), "tenant/admin")
	b.ReportMetric(float64(tenant)/float64(ref), "tenant/oracle")
}
