package e2eproxy

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// TenantFiles copies the shipped example MetricAccess files into a
// directory the test may change.
func TenantFiles(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(e2eutil.RepoRoot(t), "examples", "tenants")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TenantConfig(f *Fleet, dir string) app.Config {
	cfg := BaseConfig(f)
	cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
	cfg.Tenants.AdminNamespaces = []string{"monitoring"}
	cfg.Tenants.FileRefreshInterval = ModelDuration(500 * time.Millisecond)
	return cfg
}

func TenantHeader(ns string) http.Header { return http.Header{"X-Tenant-Namespace": {ns}} }

// PolicyOf returns the proxy's compiled policy for ns.
func PolicyOf(t testing.TB, p *Proxy, ns string) *tenancy.Policy {
	t.Helper()
	pol, err := p.App.Tenants().Policy(ns)
	if err != nil {
		t.Fatalf("policy of %s: %v", ns, err)
	}
	return pol
}

// OracleFor starts a Prometheus holding exactly the series pol lets through.
func OracleFor(t testing.TB, f *Fleet, name string, pol *tenancy.Policy) *e2eutil.Prometheus {
	t.Helper()
	visible := 0
	datagen.ForEachSeries(f.Data, func(l labels.Labels) {
		if pol.Matches(l) {
			visible++
		}
	})
	// A tenant that sees (almost) nothing would make the comparison trivial.
	if visible < 20 {
		t.Fatalf("tenant %s sees only %d series of the test data: the rules do not fit the data", name, visible)
	}
	t.Logf("tenant %s sees %d series", name, visible)
	return e2eutil.StartPrometheus(t, e2eutil.V3, OpenMetrics(t, f.Data, -1, func(l labels.Labels) bool { return pol.Matches(l) }), e2eutil.WithName("oracle-"+name))
}

// AttackRequests try to read around the tenant's rules. Each must answer
// exactly what the tenant's oracle answers: nothing leaks, and nothing that
// Prometheus would answer fails.
func AttackRequests(f *Fleet) []APIRequest {
	at := FormatTime(f.Data.Start.Add(45 * time.Minute))
	q := func(expr string) APIRequest {
		return APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {ExpandExpr(expr, f.Data)}, "time": {at}}}
	}
	// Listings name the data's range, as Grafana does: without one the
	// proxy reads only default_label_window back from now.
	all := AllData(f.Data)
	reqs := []APIRequest{
		q(`{__name__=~".+"}`),
		q(`count by (namespace) ({__name__=~".+"})`),
		q(`count by (__name__, namespace) ({__name__=~".+", namespace=~".+"})`),
		q(`absent(memory_usage_bytes)`),
		q(`absent(http_requests_total{namespace="team-b"})`),
		q(`http_requests_total or memory_usage_bytes`),
		q(`up or on () memory_usage_bytes{namespace="team-b"}`),
		q(`http_requests_total unless on () memory_usage_bytes`),
		q(`label_replace(http_requests_total, "namespace", "team-b", "", "")`),
		q(`label_replace({__name__=~".+"}, "namespace", "monitoring", "namespace", ".*")`),
		q(`max_over_time(memory_usage_bytes[30m:1m] @ {at})`),
		q(`sum(rate({__name__=~"http_.*|memory_.*|node_.*"}[5m] @ {at}))`),
		q(`{namespace="team-b"}`),
		q(`{namespace=~"team-.*", __name__!=""}`),
		q(`{__name__=~"(?i)UP"}`),
		q(`group by (namespace, cluster) ({__name__=~".+"} offset 1h)`),
		{Path: "/api/v1/series", Params: WithParams(all, "match[]", `memory_usage_bytes`, "match[]", `{namespace="team-b"}`)},
		{Path: "/api/v1/series", Params: WithParams(all, "match[]", `{__name__=~".+"}`), Post: true},
		{Path: "/api/v1/labels", Params: WithParams(all, "match[]", `{namespace="team-b"}`)},
		{Path: "/api/v1/labels", Params: all},
		{Path: "/api/v1/label/namespace/values", Params: all},
		{Path: "/api/v1/label/__name__/values", Params: WithParams(all, "match[]", `{namespace=~".+"}`)},
		{Path: "/api/v1/label/cluster/values", Params: all},
	}
	return reqs
}

func ModelDuration(d time.Duration) model.Duration { return model.Duration(d) }
