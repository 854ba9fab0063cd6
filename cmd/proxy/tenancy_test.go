package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// tenantFiles copies the shipped example MetricAccess files into a
// directory the test may change.
func tenantFiles(t testing.TB) string {
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

func tenantConfig(f *fleet, dir string) Config {
	cfg := baseConfig(f)
	cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
	cfg.Tenants.AdminNamespaces = []string{"monitoring"}
	cfg.Tenants.FileRefreshInterval = modelDuration(500 * time.Millisecond)
	return cfg
}

func tenantHeader(ns string) http.Header { return http.Header{"X-Tenant-Namespace": {ns}} }

// policyOf returns the proxy's compiled policy for ns.
func policyOf(t testing.TB, p *proxyUnderTest, ns string) *tenancy.Policy {
	t.Helper()
	pol, err := p.app.tenants.Policy(ns)
	if err != nil {
		t.Fatalf("policy of %s: %v", ns, err)
	}
	return pol
}

// oracleFor starts a Prometheus holding exactly the series pol lets through.
func oracleFor(t testing.TB, f *fleet, name string, pol *tenancy.Policy) *e2eutil.Prometheus {
	t.Helper()
	visible := 0
	datagen.ForEachSeries(f.data, func(l labels.Labels) {
		if pol.Matches(l) {
			visible++
		}
	})
	// A tenant that sees (almost) nothing would make the comparison trivial.
	if visible < 20 {
		t.Fatalf("tenant %s sees only %d series of the test data: the rules do not fit the data", name, visible)
	}
	t.Logf("tenant %s sees %d series", name, visible)
	return e2eutil.StartPrometheus(t, e2eutil.V3, openMetrics(t, f.data, -1, func(l labels.Labels) bool { return pol.Matches(l) }), e2eutil.WithName("oracle-"+name))
}

// attackRequests try to read around the tenant's rules. Each must answer
// exactly what the tenant's oracle answers: nothing leaks, and nothing that
// Prometheus would answer fails.
func attackRequests(f *fleet) []apiRequest {
	at := formatTime(f.data.Start.Add(45 * time.Minute))
	q := func(expr string) apiRequest {
		return apiRequest{path: "/api/v1/query", params: url.Values{"query": {expandExpr(expr, f.data)}, "time": {at}}}
	}
	// Listings name the data's range, as Grafana does: without one the
	// proxy reads only default_label_window back from now.
	all := allData(f.data)
	reqs := []apiRequest{
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
		{path: "/api/v1/series", params: withParams(all, "match[]", `memory_usage_bytes`, "match[]", `{namespace="team-b"}`)},
		{path: "/api/v1/series", params: withParams(all, "match[]", `{__name__=~".+"}`), post: true},
		{path: "/api/v1/labels", params: withParams(all, "match[]", `{namespace="team-b"}`)},
		{path: "/api/v1/labels", params: all},
		{path: "/api/v1/label/namespace/values", params: all},
		{path: "/api/v1/label/__name__/values", params: withParams(all, "match[]", `{namespace=~".+"}`)},
		{path: "/api/v1/label/cluster/values", params: all},
	}
	return reqs
}

// rawRequest sends a request exactly as given (duplicated parameters in URL
// and body) and returns the answer.
func rawRequest(t testing.TB, method, u, body string, h http.Header) apiAnswer {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var b strings.Builder
	if _, err := ioCopy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return apiAnswer{resp.StatusCode, []byte(b.String())}
}

// assertNoForeignNamespace fails if any label set in the answer carries a
// namespace other than allowed.
func assertNoForeignNamespace(t testing.TB, what string, a apiAnswer, allowed string) {
	t.Helper()
	var v struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		return
	}
	var found []string
	var walk func(x any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if ns, ok := x["namespace"].(string); ok && ns != allowed {
				found = append(found, ns)
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	var data any
	_ = json.Unmarshal(v.Data, &data)
	walk(data)
	if len(found) > 0 {
		t.Errorf("%s: foreign namespaces leaked: %v", what, found)
	}
}

func testTenancy(t *testing.T, f *fleet) {
	cfg := tenantConfig(f, tenantFiles(t))
	testTenancyAs(t, f, cfg, tenantHeader)
	t.Run("team-a,team-b", func(t *testing.T) { testTenancyUnion(t, f, cfg) })
}

// testTenancyUnion: a request naming two namespaces answers exactly what a
// Prometheus holding the union of their visible series answers, however the
// two are named; a namespace without rules in the list refuses it.
func testTenancyUnion(t *testing.T, f *fleet, cfg Config) {
	p := startProxy(t, cfg)
	a, b := policyOf(t, p, "team-a"), policyOf(t, p, "team-b")
	union := tenancy.Union(a, b)
	if union.Fingerprint == a.Fingerprint || union.Fingerprint == b.Fingerprint {
		t.Fatal("the union shares a part's fingerprint")
	}
	oracle := oracleFor(t, f, "team-a-and-b", union)
	reqs := suiteRequests(f.data)
	for _, name := range []string{"cold", "warm"} {
		t.Run(name, func(t *testing.T) {
			runSuiteMinData(t, oracle.URL, p.URL, reqs, tenantHeader("team-a,team-b"), 40)
			for _, r := range attackRequests(f) {
				want := doRequest(t, oracle.URL, r)
				r.header = tenantHeader("team-b, team-a")
				compareAnswers(t, "attack "+r.String(), want, doRequest(t, p.URL, r))
			}
		})
	}
	// The parts' cached answers are not the union's, nor the other way round.
	for _, ns := range []string{"team-a", "team-b"} {
		oracle := oracleFor(t, f, ns, policyOf(t, p, ns))
		runSuiteMinData(t, oracle.URL, p.URL, reqs[:min(len(reqs), 10)], tenantHeader(ns), 0)
	}
	q := apiRequest{path: "/api/v1/query", params: url.Values{"query": {"up"}}, header: tenantHeader("team-a,nobody")}
	if ans := doRequest(t, p.URL, q); ans.code != http.StatusForbidden || !strings.Contains(string(ans.body), "nobody") {
		t.Errorf("a namespace without rules in the list: HTTP %d %s, want 403 naming it", ans.code, clip(ans.body))
	}
	q.params.Set("namespace", "team-a,team-b")
	q.header = tenantHeader("team-a,team-b")
	if ans := doRequest(t, p.URL, q); ans.code != http.StatusOK {
		t.Errorf("header and parameter naming the same list: HTTP %d %s", ans.code, clip(ans.body))
	}
	q.header = http.Header{"X-Tenant-Namespace": {"team-a", "team-b"}}
	q.params.Del("namespace")
	if ans := doRequest(t, p.URL, q); ans.code != http.StatusBadRequest {
		t.Errorf("the header repeated: HTTP %d, want 400", ans.code)
	}
}

// testTenancyAs is the tenancy differential suite for a proxy configured
// with cfg, whose requests act as namespace ns with the headers as(ns).
func testTenancyAs(t *testing.T, f *fleet, cfg Config, as func(ns string) http.Header) {
	p := startProxy(t, cfg)
	reqs := suiteRequests(f.data)
	attacks := attackRequests(f)

	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		t.Run(ns, func(t *testing.T) {
			pol := policyOf(t, p, ns)
			oracle := oracleFor(t, f, ns, pol)
			for _, name := range []string{"cold", "warm"} {
				t.Run(name, func(t *testing.T) {
					runSuiteMinData(t, oracle.URL, p.URL, reqs, as(ns), 40)
					for _, r := range attacks {
						want := doRequest(t, oracle.URL, r)
						r.header = as(ns)
						got := doRequest(t, p.URL, r)
						compareAnswers(t, "attack "+r.String(), want, got)
						// absent() and label_replace() write label values
						// themselves; equality with the oracle covers them.
						if q := r.params.Get("query"); !strings.Contains(q, "absent(") && !strings.Contains(q, "label_replace(") {
							assertNoForeignNamespace(t, "attack "+r.String(), got, ns)
						}
					}
				})
			}
			// Duplicated parameters: the proxy must pick exactly what
			// Prometheus picks, and whatever it picks stays the tenant's.
			for _, c := range []struct{ method, query, body string }{
				{"POST", "/api/v1/query?query=memory_usage_bytes&time=" + formatTime(f.data.Start.Add(time.Hour)), "query=http_requests_total&query=up"},
				{"POST", "/api/v1/series?match[]=memory_usage_bytes&" + allData(f.data).Encode(), "match[]=http_requests_total"},
				{"GET", "/api/v1/query?query=http_requests_total&query=memory_usage_bytes&time=" + formatTime(f.data.Start.Add(time.Hour)), ""},
				{"POST", "/api/v1/labels?match[]={namespace=\"team-b\"}&" + allData(f.data).Encode(), "match[]=up"},
			} {
				want := rawRequest(t, c.method, oracle.URL+c.query, c.body, nil)
				got := rawRequest(t, c.method, p.URL+c.query, c.body, as(ns))
				compareAnswers(t, "duplicated params "+c.method+" "+c.query+" "+c.body, want, got)
				assertNoForeignNamespace(t, c.query, got, ns)
			}
		})
	}
	t.Run("admin-equals-union", func(t *testing.T) {
		runSuite(t, f.reference.URL, p.URL, reqs, as("monitoring"))
	})
	t.Run("refusals", func(t *testing.T) {
		q := apiRequest{path: "/api/v1/query", params: url.Values{"query": {"up"}}}
		if a := doRequest(t, p.URL, q); a.code != http.StatusUnauthorized || !strings.Contains(string(a.body), `"status":"error"`) {
			t.Errorf("no tenant: HTTP %d %s, want 401 Prometheus JSON", a.code, a.body)
		}
		q.header = as("nobody")
		if a := doRequest(t, p.URL, q); a.code != http.StatusForbidden || !strings.Contains(string(a.body), `"errorType":"forbidden"`) {
			t.Errorf("unknown namespace: HTTP %d %s, want 403 Prometheus JSON", a.code, a.body)
		}
		for _, path := range []string{"/debug/tenants", "/debug/targets", "/metrics"} {
			if a := doRequest(t, p.URL, apiRequest{path: path, header: as("team-a")}); a.code != http.StatusForbidden {
				t.Errorf("%s as team-a: HTTP %d, want 403", path, a.code)
			}
			if a := doRequest(t, p.URL, apiRequest{path: path, header: as("monitoring")}); a.code != http.StatusOK {
				t.Errorf("%s as monitoring: HTTP %d, want 200", path, a.code)
			}
		}
	})
}

// testTenancyRuleChanges edits MetricAccess files while the proxy runs:
// answers follow within 5 s, a foreign source grants nothing unless allowed,
// and entries matching everything stay inside the source namespace.
func testTenancyRuleChanges(t *testing.T, f *fleet) {
	dir := tenantFiles(t)
	p := startProxy(t, tenantConfig(f, dir))
	at := formatTime(f.data.Start.Add(time.Hour))
	count := func(ns, expr string) (int, string) { return resultCount(t, p, ns, expr, at) }
	eventually := func(what string, cond func() bool) {
		t.Helper()
		waitFor(t, 5*time.Second, what, cond)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if n, body := count("team-a", `memory_usage_bytes`); n != 0 {
		t.Fatalf("team-a sees memory_usage_bytes before any grant: %s", body)
	}
	write("team-a-extra.yaml", `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: extra, namespace: team-a}
spec:
  source: team-a
  metrics: ["memory_usage_bytes"]
`)
	eventually("new grant", func() bool { n, _ := count("team-a", `memory_usage_bytes`); return n > 0 })
	if n, body := count("team-a", `memory_usage_bytes{namespace!="team-a"}`); n != 0 {
		t.Errorf("grant reaches beyond source: %s", body)
	}
	if err := os.Remove(filepath.Join(dir, "team-a-extra.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually("revoked grant", func() bool { n, _ := count("team-a", `memory_usage_bytes`); return n == 0 })

	// Everything-matching entries stay inside the source namespace.
	write("team-b.yaml", `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: all, namespace: team-b}
spec:
  source: team-b
  metrics: [".*", '{__name__=~".+"}']
`)
	eventually("wide grant", func() bool { n, _ := count("team-b", `up`); return n > 0 })
	if n, body := count("team-b", `{__name__=~".+", namespace!="team-b"}`); n != 0 {
		t.Errorf("'.*' reaches beyond source: %s", body)
	}
	if n, body := count("team-b", `count by (namespace) ({__name__=~".+"})`); n != 1 {
		t.Errorf("'.*' grants %d namespaces, want 1: %s", n, body)
	}

	// A source naming another namespace grants nothing.
	write("sneaky.yaml", `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: steal, namespace: sneaky}
spec:
  source: team-b
  metrics: ["memory_usage_bytes"]
`)
	time.Sleep(1500 * time.Millisecond) // three refresh intervals
	if n, body := count("sneaky", `memory_usage_bytes`); n != -http.StatusForbidden {
		t.Errorf("cross-namespace source: got %d %s, want 403", n, body)
	}
	a := doRequest(t, p.URL, apiRequest{path: "/debug/tenants", header: tenantHeader("monitoring")})
	if !strings.Contains(string(a.body), "sneaky") || !strings.Contains(strings.ToLower(string(a.body)), "source") {
		t.Errorf("/debug/tenants does not report the refused object: %s", clip(a.body))
	}

	// Deleting a namespace's last object: 403 within 5 s.
	if err := os.Remove(filepath.Join(dir, "team-a.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually("deleted tenant refused", func() bool { n, _ := count("team-a", `up`); return n == -http.StatusForbidden })
}

// testCrossNamespaceAllowed: with allow_cross_namespace_source, an object
// may name another namespace as its source.
func testCrossNamespaceAllowed(t *testing.T, f *fleet) {
	dir := tenantFiles(t)
	if err := os.WriteFile(filepath.Join(dir, "sneaky.yaml"), []byte(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: delegated, namespace: platform}
spec:
  source: team-b
  metrics: ["memory_usage_bytes", "up", "http_requests_total"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := tenantConfig(f, dir)
	cfg.Tenants.AllowCrossNamespaceSource = true
	p := startProxy(t, cfg)
	pol := policyOf(t, p, "platform")
	oracle := oracleFor(t, f, "platform", pol)
	for _, r := range attackRequests(f) {
		want := doRequest(t, oracle.URL, r)
		r.header = tenantHeader("platform")
		compareAnswers(t, r.String(), want, doRequest(t, p.URL, r))
	}
}

func modelDuration(d time.Duration) model.Duration { return model.Duration(d) }

var ioCopy = io.Copy

// resultCount asks an instant query at time at as tenant ns and returns how
// many series answered, or minus the HTTP status when it failed, with the body.
func resultCount(t testing.TB, p *proxyUnderTest, ns, expr, at string) (int, string) {
	t.Helper()
	a := doRequest(t, p.URL, apiRequest{path: "/api/v1/query", params: url.Values{"query": {expr}, "time": {at}}, header: tenantHeader(ns)})
	if a.code != http.StatusOK {
		return -a.code, string(a.body)
	}
	var v struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	_ = json.Unmarshal(a.body, &v)
	return len(v.Data.Result), string(a.body)
}
