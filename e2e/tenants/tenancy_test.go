// Package tenants tests end to end who sees what: tenant rules from files
// and Kubernetes, authentication (JWT, API keys, TLS, Kubernetes tokens),
// the clients Grafana and promtool, and the doors a request comes through.
package tenants

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

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// rawRequest sends a request exactly as given (duplicated parameters in URL
// and body) and returns the answer.
func rawRequest(t testing.TB, method, u, body string, h http.Header) e2eproxy.APIAnswer {
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
	return e2eproxy.APIAnswer{Code: resp.StatusCode, Body: []byte(b.String())}
}

// assertNoForeignNamespace fails if any label set in the answer carries a
// namespace other than allowed.
func assertNoForeignNamespace(t testing.TB, what string, a e2eproxy.APIAnswer, allowed string) {
	t.Helper()
	var v struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(a.Body, &v); err != nil {
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

// TestTenancy runs the tenant scenarios against one shared fleet, since
// starting real servers is the expensive part.
func TestTenancy(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	t.Run("Tenancy", func(t *testing.T) { testTenancy(t, f) })
	t.Run("TenancyRuleChanges", func(t *testing.T) { testTenancyRuleChanges(t, f) })
	t.Run("TenancyCrossNamespaceAllowed", func(t *testing.T) { testCrossNamespaceAllowed(t, f) })
	t.Run("Doors", func(t *testing.T) { testDoors(t, f) })
}

func testTenancy(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	testTenancyAs(t, f, cfg, e2eproxy.TenantHeader)
	t.Run("team-a,team-b", func(t *testing.T) { testTenancyUnion(t, f, cfg) })
}

// testTenancyUnion: a request naming two namespaces answers exactly what a
// Prometheus holding the union of their visible series answers, however the
// two are named; a namespace without rules in the list refuses it.
func testTenancyUnion(t *testing.T, f *e2eproxy.Fleet, cfg app.Config) {
	p := e2eproxy.StartProxy(t, cfg)
	a, b := e2eproxy.PolicyOf(t, p, "team-a"), e2eproxy.PolicyOf(t, p, "team-b")
	union := tenancy.Union(a, b)
	if union.Fingerprint == a.Fingerprint || union.Fingerprint == b.Fingerprint {
		t.Fatal("the union shares a part's fingerprint")
	}
	oracle := e2eproxy.OracleFor(t, f, "team-a-and-b", union)
	reqs := e2eproxy.SuiteRequests(f.Data)
	for _, name := range []string{"cold", "warm"} {
		t.Run(name, func(t *testing.T) {
			e2eproxy.RunSuiteMinData(t, oracle.URL, p.URL, reqs, e2eproxy.TenantHeader("team-a,team-b"), 40)
			for _, r := range e2eproxy.AttackRequests(f) {
				want := e2eproxy.DoRequest(t, oracle.URL, r)
				r.Header = e2eproxy.TenantHeader("team-b, team-a")
				e2eproxy.CompareAnswers(t, "attack "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
			}
		})
	}
	// The parts' cached answers are not the union's, nor the other way round.
	for _, ns := range []string{"team-a", "team-b"} {
		oracle := e2eproxy.OracleFor(t, f, ns, e2eproxy.PolicyOf(t, p, ns))
		e2eproxy.RunSuiteMinData(t, oracle.URL, p.URL, reqs[:min(len(reqs), 10)], e2eproxy.TenantHeader(ns), 0)
	}
	q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"up"}}, Header: e2eproxy.TenantHeader("team-a,nobody")}
	if ans := e2eproxy.DoRequest(t, p.URL, q); ans.Code != http.StatusForbidden || !strings.Contains(string(ans.Body), "nobody") {
		t.Errorf("a namespace without rules in the list: HTTP %d %s, want 403 naming it", ans.Code, e2eproxy.Clip(ans.Body))
	}
	q.Params.Set("namespace", "team-a,team-b")
	q.Header = e2eproxy.TenantHeader("team-a,team-b")
	if ans := e2eproxy.DoRequest(t, p.URL, q); ans.Code != http.StatusOK {
		t.Errorf("header and parameter naming the same list: HTTP %d %s", ans.Code, e2eproxy.Clip(ans.Body))
	}
	q.Header = http.Header{"X-Tenant-Namespace": {"team-a", "team-b"}}
	q.Params.Del("namespace")
	if ans := e2eproxy.DoRequest(t, p.URL, q); ans.Code != http.StatusBadRequest {
		t.Errorf("the header repeated: HTTP %d, want 400", ans.Code)
	}
}

// testTenancyAs is the tenancy differential suite for a proxy configured
// with cfg, whose requests act as namespace ns with the headers as(ns).
func testTenancyAs(t *testing.T, f *e2eproxy.Fleet, cfg app.Config, as func(ns string) http.Header) {
	p := e2eproxy.StartProxy(t, cfg)
	reqs := e2eproxy.SuiteRequests(f.Data)
	attacks := e2eproxy.AttackRequests(f)

	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		t.Run(ns, func(t *testing.T) {
			pol := e2eproxy.PolicyOf(t, p, ns)
			oracle := e2eproxy.OracleFor(t, f, ns, pol)
			for _, name := range []string{"cold", "warm"} {
				t.Run(name, func(t *testing.T) {
					e2eproxy.RunSuiteMinData(t, oracle.URL, p.URL, reqs, as(ns), 40)
					for _, r := range attacks {
						want := e2eproxy.DoRequest(t, oracle.URL, r)
						r.Header = as(ns)
						got := e2eproxy.DoRequest(t, p.URL, r)
						e2eproxy.CompareAnswers(t, "attack "+r.String(), want, got)
						// absent() and label_replace() write label values
						// themselves; equality with the oracle covers them.
						if q := r.Params.Get("query"); !strings.Contains(q, "absent(") && !strings.Contains(q, "label_replace(") {
							assertNoForeignNamespace(t, "attack "+r.String(), got, ns)
						}
					}
				})
			}
			// Duplicated parameters: the proxy must pick exactly what
			// Prometheus picks, and whatever it picks stays the tenant's.
			for _, c := range []struct{ method, query, body string }{
				{"POST", "/api/v1/query?query=memory_usage_bytes&time=" + e2eproxy.FormatTime(f.Data.Start.Add(time.Hour)), "query=http_requests_total&query=up"},
				{"POST", "/api/v1/series?match[]=memory_usage_bytes&" + e2eproxy.AllData(f.Data).Encode(), "match[]=http_requests_total"},
				{"GET", "/api/v1/query?query=http_requests_total&query=memory_usage_bytes&time=" + e2eproxy.FormatTime(f.Data.Start.Add(time.Hour)), ""},
				{"POST", "/api/v1/labels?match[]={namespace=\"team-b\"}&" + e2eproxy.AllData(f.Data).Encode(), "match[]=up"},
			} {
				want := rawRequest(t, c.method, oracle.URL+c.query, c.body, nil)
				got := rawRequest(t, c.method, p.URL+c.query, c.body, as(ns))
				e2eproxy.CompareAnswers(t, "duplicated params "+c.method+" "+c.query+" "+c.body, want, got)
				assertNoForeignNamespace(t, c.query, got, ns)
			}
		})
	}
	t.Run("admin-equals-union", func(t *testing.T) {
		e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, as("monitoring"))
	})
	t.Run("refusals", func(t *testing.T) {
		q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"up"}}}
		if a := e2eproxy.DoRequest(t, p.URL, q); a.Code != http.StatusUnauthorized || !strings.Contains(string(a.Body), `"status":"error"`) {
			t.Errorf("no tenant: HTTP %d %s, want 401 Prometheus JSON", a.Code, a.Body)
		}
		q.Header = as("nobody")
		if a := e2eproxy.DoRequest(t, p.URL, q); a.Code != http.StatusForbidden || !strings.Contains(string(a.Body), `"errorType":"forbidden"`) {
			t.Errorf("unknown namespace: HTTP %d %s, want 403 Prometheus JSON", a.Code, a.Body)
		}
		for _, path := range []string{"/debug/tenants", "/debug/targets", "/metrics"} {
			if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: path, Header: as("team-a")}); a.Code != http.StatusForbidden {
				t.Errorf("%s as team-a: HTTP %d, want 403", path, a.Code)
			}
			if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: path, Header: as("monitoring")}); a.Code != http.StatusOK {
				t.Errorf("%s as monitoring: HTTP %d, want 200", path, a.Code)
			}
		}
	})
}

// testTenancyRuleChanges edits MetricAccess files while the proxy runs:
// answers follow within 5 s, a foreign source grants nothing unless allowed,
// and entries matching everything stay inside the source namespace.
func testTenancyRuleChanges(t *testing.T, f *e2eproxy.Fleet) {
	dir := e2eproxy.TenantFiles(t)
	p := e2eproxy.StartProxy(t, e2eproxy.TenantConfig(f, dir))
	at := e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))
	count := func(ns, expr string) (int, string) { return resultCount(t, p, ns, expr, at) }
	eventually := func(what string, cond func() bool) {
		t.Helper()
		e2eproxy.WaitFor(t, 5*time.Second, what, cond)
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
	a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/debug/tenants", Header: e2eproxy.TenantHeader("monitoring")})
	if !strings.Contains(string(a.Body), "sneaky") || !strings.Contains(strings.ToLower(string(a.Body)), "source") {
		t.Errorf("/debug/tenants does not report the refused object: %s", e2eproxy.Clip(a.Body))
	}

	// Deleting a namespace's last object: 403 within 5 s.
	if err := os.Remove(filepath.Join(dir, "team-a.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually("deleted tenant refused", func() bool { n, _ := count("team-a", `up`); return n == -http.StatusForbidden })
}

// testCrossNamespaceAllowed: with allow_cross_namespace_source, an object
// may name another namespace as its source.
func testCrossNamespaceAllowed(t *testing.T, f *e2eproxy.Fleet) {
	dir := e2eproxy.TenantFiles(t)
	if err := os.WriteFile(filepath.Join(dir, "sneaky.yaml"), []byte(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: delegated, namespace: platform}
spec:
  source: team-b
  metrics: ["memory_usage_bytes", "up", "http_requests_total"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := e2eproxy.TenantConfig(f, dir)
	cfg.Tenants.AllowCrossNamespaceSource = true
	p := e2eproxy.StartProxy(t, cfg)
	pol := e2eproxy.PolicyOf(t, p, "platform")
	oracle := e2eproxy.OracleFor(t, f, "platform", pol)
	for _, r := range e2eproxy.AttackRequests(f) {
		want := e2eproxy.DoRequest(t, oracle.URL, r)
		r.Header = e2eproxy.TenantHeader("platform")
		e2eproxy.CompareAnswers(t, r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
	}
}

var ioCopy = io.Copy

// resultCount asks an instant query at time at as tenant ns and returns how
// many series answered, or minus the HTTP status when it failed, with the body.
func resultCount(t testing.TB, p *e2eproxy.Proxy, ns, expr, at string) (int, string) {
	t.Helper()
	a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {expr}, "time": {at}}, Header: e2eproxy.TenantHeader(ns)})
	if a.Code != http.StatusOK {
		return -a.Code, string(a.Body)
	}
	var v struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	_ = json.Unmarshal(a.Body, &v)
	return len(v.Data.Result), string(a.Body)
}
