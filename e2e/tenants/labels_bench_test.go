package tenants

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
)

// BenchmarkTenantLabels times a tenant's label calls, answered from the
// series it may see (each checked against its policy), against the same
// calls as an admin, answered by the backends' label endpoints, and
// against the tenant's oracle Prometheus, interleaved in one run. It
// reports each side's time per set and the ratios.
func BenchmarkTenantLabels(b *testing.B) {
	f := e2eproxy.StartFleet(b)
	cfg := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(b))
	cfg.Proxy.EnableCaching = false
	p := e2eproxy.StartProxy(b, cfg)
	const ns = "team-a"
	oracle := e2eproxy.OracleFor(b, f, ns, e2eproxy.PolicyOf(b, p, ns))
	start, end := e2eproxy.FormatTime(f.Data.Start.Add(10*time.Minute)), e2eproxy.FormatTime(f.Data.Start.Add(110*time.Minute))
	window := url.Values{"start": {start}, "end": {end}}
	reqs := []e2eproxy.APIRequest{
		{Path: "/api/v1/labels", Params: window},
		{Path: "/api/v1/label/__name__/values", Params: window},
		{Path: "/api/v1/label/instance/values", Params: window},
		{Path: "/api/v1/label/job/values", Params: url.Values{"start": {start}, "end": {end}, "match[]": {`{__name__=~"http_.*"}`}}},
	}
	run := func(base string, h http.Header) time.Duration {
		t0 := time.Now()
		for _, r := range reqs {
			r.Header = h
			if a := e2eproxy.DoRequest(b, base, r); a.Code != http.StatusOK {
				b.Fatalf("%s: HTTP %d: %s", r, a.Code, e2eproxy.Clip(a.Body))
			}
		}
		return time.Since(t0)
	}
	run(p.URL, e2eproxy.TenantHeader(ns))
	run(p.URL, e2eproxy.TenantHeader("monitoring"))
	run(oracle.URL, nil)
	var tenant, admin, ref time.Duration
	b.ResetTimer()
	for range b.N {
		tenant += run(p.URL, e2eproxy.TenantHeader(ns))
		admin += run(p.URL, e2eproxy.TenantHeader("monitoring"))
		ref += run(oracle.URL, nil)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tenant.Nanoseconds())/n, "tenant-ns/set")
	b.ReportMetric(float64(admin.Nanoseconds())/n, "admin-ns/set")
	b.ReportMetric(float64(ref.Nanoseconds())/n, "oracle-ns/set")
	b.ReportMetric(float64(tenant)/float64(admin), "tenant/admin")
	b.ReportMetric(float64(tenant)/float64(ref), "tenant/oracle")
}
