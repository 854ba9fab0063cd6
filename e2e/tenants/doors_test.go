package tenants

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// testDoors: each way a hostile client or tenant could get more than it
// should, or hold the proxy's resources, is closed.
func testDoors(t *testing.T, f *e2eproxy.Fleet) {
	t.Run("MethodLabelBounded", func(t *testing.T) { testMethodLabelBounded(t, f) })
	t.Run("RepeatedTenantOrCredential", func(t *testing.T) { testRepeatedTenantOrCredential(t, f) })
	t.Run("AuthenticateBeforeBody", func(t *testing.T) { testAuthenticateBeforeBody(t, f) })
	t.Run("SlowHeaders", func(t *testing.T) { testSlowHeaders(t, f) })
	t.Run("BackendURLsRedacted", func(t *testing.T) { testBackendURLsRedacted(t, f) })
	t.Run("LabelsRecheckedAgainstPolicy", func(t *testing.T) { testLabelsRechecked(t, f) })
	t.Run("PostToGetOnlyEndpoints", func(t *testing.T) { testPostToGetOnly(t, f) })
	t.Run("ManagementListener", func(t *testing.T) { testManagementListener(t, f) })
	t.Run("HeaderAdminRefusedBeyondLoopback", func(t *testing.T) { testHeaderAdminRefused(t, f) })
}

// testMethodLabelBounded: a made-up method does not become a series.
func testMethodLabelBounded(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, e2eproxy.BaseConfig(f))
	for _, m := range []string{"BREW", "X-" + strings.Repeat("A", 40), "get"} {
		req, _ := http.NewRequest(m, p.URL+"/api/v1/query?query=up", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/metrics"})
	var methods []string
	for _, line := range strings.Split(string(a.Body), "\n") {
		if strings.HasPrefix(line, "prometheus_proxy_requests_total{") {
			_, rest, _ := strings.Cut(line, `method="`)
			m, _, _ := strings.Cut(rest, `"`)
			methods = append(methods, m)
		}
	}
	for _, m := range methods {
		if m != "GET" && m != "POST" && m != "other" {
			t.Errorf("prometheus_proxy_requests_total has method=%q; want GET, POST or other", m)
		}
	}
	if !strings.Contains(string(a.Body), `method="other"`) {
		t.Errorf("made-up methods are not counted as other:\n%s", e2eproxy.Clip(a.Body))
	}
}

// testRepeatedTenantOrCredential: two tenant headers, two namespace
// parameters, or header and parameter disagreeing: 400, never the first.
func testRepeatedTenantOrCredential(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t)))
	q := p.URL + "/api/v1/query?query=up"
	for _, c := range []struct {
		name   string
		url    string
		header http.Header
	}{
		{"two tenant headers", q, http.Header{"X-Tenant-Namespace": {"team-a", "monitoring"}}},
		{"two namespace parameters", q + "&namespace=team-a&namespace=monitoring", e2eproxy.TenantHeader("team-a")},
		{"header and parameter differ", q + "&namespace=monitoring", e2eproxy.TenantHeader("team-a")},
	} {
		a := rawRequest(t, http.MethodGet, c.url, "", c.header)
		if a.Code != http.StatusBadRequest || !strings.Contains(string(a.Body), `"status":"error"`) {
			t.Errorf("%s: HTTP %d %s, want 400 Prometheus JSON", c.name, a.Code, a.Body)
		}
	}
	if a := rawRequest(t, http.MethodGet, q+"&namespace=team-a", "", e2eproxy.TenantHeader("team-a")); a.Code != http.StatusOK {
		t.Errorf("header and parameter agreeing: HTTP %d %s", a.Code, a.Body)
	}
	// A JWT proxy: two Authorization headers.
	cfg := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	cfg.Auth.Type, cfg.Auth.JWT.SecretKey = authn.TypeJWT, strings.Repeat("k", 32)
	jp := e2eproxy.StartProxy(t, cfg)
	a := rawRequest(t, http.MethodGet, jp.URL+"/api/v1/query?query=up", "", http.Header{"Authorization": {"Bearer a", "Bearer b"}})
	if a.Code != http.StatusBadRequest {
		t.Errorf("two Authorization headers: HTTP %d %s, want 400", a.Code, a.Body)
	}
}

// testAuthenticateBeforeBody: a client without credentials is refused
// before the proxy reads (or waits for) its body.
func testAuthenticateBeforeBody(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	cfg.Auth.Type, cfg.Auth.APIKeys = authn.TypeAPIKey, []string{sha256Hex("key") + " team-a"}
	cfg.Proxy.MaxBodyBytes = 1024
	p := e2eproxy.StartProxy(t, cfg)
	big := "query=" + strings.Repeat("x", 4096)
	if a := rawRequest(t, http.MethodPost, p.URL+"/api/v1/query", big, nil); a.Code != http.StatusUnauthorized {
		t.Errorf("large body without credentials: HTTP %d %s, want 401", a.Code, a.Body)
	}
	if a := rawRequest(t, http.MethodPost, p.URL+"/api/v1/query", big, bearerHeader("key")); a.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("large body with credentials: HTTP %d %s, want 413", a.Code, a.Body)
	}
	// Headers announce a large body that never comes: the answer must not
	// wait for it.
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_, _ = fmt.Fprintf(conn, "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10485760\r\n\r\nquery=")
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a request without credentials whose body never comes: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("body never sent, no credentials: HTTP %d, want 401", resp.StatusCode)
	}
}

// testSlowHeaders: a client trickling headers is cut off after
// server.read_header_timeout, and an idle connection after idle_timeout.
func testSlowHeaders(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.BaseConfig(f)
	cfg.Server.ReadHeaderTimeout = model.Duration(300 * time.Millisecond)
	cfg.Server.IdleTimeout = model.Duration(300 * time.Millisecond)
	p := e2eproxy.StartProxy(t, cfg)
	addr := strings.TrimPrefix(p.URL, "http://")
	closedWithin := func(what string, send string) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		if _, err := io.WriteString(conn, send); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, conn)
		if took := time.Since(start); err != nil || took > 3*time.Second {
			t.Errorf("%s: connection still open after %v (err %v)", what, took.Round(time.Millisecond), err)
		}
	}
	closedWithin("headers never finished", "GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n")
	closedWithin("idle keep-alive connection", "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
}

// testBackendURLsRedacted: a group fails; the tenant's warning names the
// group, not the backend (whose URL holds a password); an admin's names the
// backend with the password hidden; /debug/targets never shows the password.
func testBackendURLsRedacted(t *testing.T, f *e2eproxy.Fleet) {
	fault := e2eutil.Status500(t)
	withPassword := "http://proxy:s3cr3t-pw@" + fault.Addr
	cfg := e2eproxy.FaultConfig(f, withPassword)
	cfg.Tenants.Files = []string{filepath.Join(e2eproxy.TenantFiles(t), "*.yaml")}
	cfg.Tenants.AdminNamespaces = []string{"monitoring"}
	p := e2eproxy.StartProxy(t, cfg)
	group := f.Data.Clusters[2]
	r := e2eproxy.Instant(f, "http_requests_total") // granted to team-a
	for _, c := range []struct {
		ns    string
		admin bool
	}{{"team-a", false}, {"monitoring", true}} {
		r.Header = e2eproxy.TenantHeader(c.ns)
		a := e2eproxy.DoRequest(t, p.URL, r)
		body := string(a.Body)
		if a.Code != http.StatusOK || !strings.Contains(body, "group "+group) {
			t.Errorf("%s: HTTP %d %s, want a warning naming group %s", c.ns, a.Code, e2eproxy.Clip(a.Body), group)
		}
		if strings.Contains(body, "s3cr3t-pw") {
			t.Errorf("%s sees the backend's password: %s", c.ns, e2eproxy.Clip(a.Body))
		}
		if seesBackend := strings.Contains(body, fault.Addr); seesBackend != c.admin {
			t.Errorf("%s sees the backend address: %v, want %v: %s", c.ns, seesBackend, c.admin, e2eproxy.Clip(a.Body))
		}
		r.Params = e2eproxy.CloneValues(r.Params)
		r.Params.Set("partial_response", "false")
		if a := e2eproxy.DoRequest(t, p.URL, r); c.ns == "team-a" && (strings.Contains(string(a.Body), fault.Addr) || a.Code != http.StatusServiceUnavailable) {
			t.Errorf("%s, aborted: HTTP %d %s", c.ns, a.Code, e2eproxy.Clip(a.Body))
		}
		r.Params.Del("partial_response")
	}
	a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/debug/targets", Header: e2eproxy.TenantHeader("monitoring")})
	if a.Code != http.StatusOK || strings.Contains(string(a.Body), "s3cr3t-pw") || !strings.Contains(string(a.Body), "xxxxx@"+fault.Addr) {
		t.Errorf("/debug/targets: HTTP %d %s, want the backend with its password hidden", a.Code, e2eproxy.Clip(a.Body))
	}
	m := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/metrics", Header: e2eproxy.TenantHeader("monitoring")})
	if strings.Contains(string(m.Body), "s3cr3t-pw") {
		t.Error("/metrics shows the backend's password")
	}
}

// testLabelsRechecked: behind a backend that ignores match[] on its label
// endpoints, a tenant still gets exactly its own label names and values.
func testLabelsRechecked(t *testing.T, f *e2eproxy.Fleet) {
	dir := e2eproxy.TenantFiles(t)
	cfg := e2eproxy.TenantConfig(f, dir)
	for i := range cfg.Discovery.Static {
		cfg.Discovery.Static[i].URLs = []string{e2eutil.IgnoreLabelMatchers(t, f.Shards[i].URL).URL}
	}
	p := e2eproxy.StartProxy(t, cfg)
	const ns = "team-a"
	oracle := e2eproxy.OracleFor(t, f, ns, e2eproxy.PolicyOf(t, p, ns))
	for _, r := range []e2eproxy.APIRequest{
		{Path: "/api/v1/labels", Params: e2eproxy.AllData(f.Data)},
		{Path: "/api/v1/labels", Params: e2eproxy.WithParams(e2eproxy.AllData(f.Data), "match[]", `{namespace="team-b"}`)},
		{Path: "/api/v1/label/namespace/values", Params: e2eproxy.AllData(f.Data)},
		{Path: "/api/v1/label/__name__/values", Params: e2eproxy.AllData(f.Data)},
		{Path: "/api/v1/label/job/values", Params: e2eproxy.WithParams(e2eproxy.AllData(f.Data), "match[]", `{__name__=~".+"}`)},
	} {
		want := e2eproxy.DoRequest(t, oracle.URL, r)
		r.Header = e2eproxy.TenantHeader(ns)
		e2eproxy.CompareAnswers(t, r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
	}
}

// testPostToGetOnly: endpoints Prometheus serves over GET only answer
// other methods as Prometheus does (405), not 404.
func testPostToGetOnly(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, e2eproxy.BaseConfig(f))
	for _, path := range []string{"/api/v1/label/job/values", "/api/v1/metadata", "/api/v1/status/buildinfo"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			code := func(base string) int {
				req, _ := http.NewRequest(method, base+path, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				return resp.StatusCode
			}
			want, got := code(f.Reference.URL), code(p.URL)
			if want != got {
				t.Errorf("%s %s: HTTP %d, Prometheus answers %d", method, path, got, want)
			}
		}
	}
}

// testManagementListener: /metrics, /health, /ready and Go's profiles
// (/debug/pprof/) answer on the management listener without credentials;
// the main port keeps them (and /debug) admin-only, and the rest of /debug
// is not on the management listener.
func testManagementListener(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	cfg.Server.ManagementAddress = "127.0.0.1:0"
	p := e2eproxy.StartProxy(t, cfg)
	for _, path := range []string{"/metrics", "/health", "/ready", "/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine"} {
		e2eutil.Eventually(t, 5*time.Second, path+" on the management listener", func() error {
			if a := e2eproxy.DoRequest(t, p.ManagementURL, e2eproxy.APIRequest{Path: path}); a.Code != http.StatusOK {
				return fmt.Errorf("HTTP %d %s", a.Code, e2eproxy.Clip(a.Body))
			}
			return nil
		})
		for _, h := range []http.Header{nil, e2eproxy.TenantHeader("team-a")} {
			if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: path, Header: h}); a.Code != http.StatusUnauthorized && a.Code != http.StatusForbidden {
				t.Errorf("%s on the main port with %v: HTTP %d, want 401 or 403", path, h, a.Code)
			}
		}
		if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: path, Header: e2eproxy.TenantHeader("monitoring")}); a.Code != http.StatusOK {
			t.Errorf("%s on the main port as admin: HTTP %d", path, a.Code)
		}
	}
	for _, path := range []string{"/debug/tenants", "/debug/targets", "/api/v1/query"} {
		if a := e2eproxy.DoRequest(t, p.ManagementURL, e2eproxy.APIRequest{Path: path, Header: e2eproxy.TenantHeader("monitoring")}); a.Code != http.StatusNotFound {
			t.Errorf("%s on the management listener: HTTP %d, want 404", path, a.Code)
		}
	}
}

// loopbackLie is a loopback listener that says it listens on every
// address, so the check can be tested without leaving loopback.
type loopbackLie struct{ net.Listener }

func (loopbackLie) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero, Port: 8080} }

// testHeaderAdminRefused: a trusted tenant header with admin namespaces does
// not serve beyond loopback unless explicitly allowed, and says so.
func testHeaderAdminRefused(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	serve := func(cfg app.Config) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		a, err := app.New(cfg, slog.New(slog.DiscardHandler), "test")
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Serve(ctx, loopbackLie{ln}, nil) }()
		select {
		case err := <-done:
			return err
		case <-time.After(500 * time.Millisecond):
			cancel()
			return <-done
		}
	}
	if err := serve(cfg); err == nil || !strings.Contains(err.Error(), "allow_unauthenticated_admin") {
		t.Errorf("auth none with admin namespaces on 0.0.0.0: err = %v, want a refusal", err)
	}
	cfg.Auth.None.AllowUnauthenticatedAdmin = true
	if err := serve(cfg); err != nil {
		t.Errorf("explicitly allowed: %v", err)
	}
	cfg.Auth.None.AllowUnauthenticatedAdmin = false
	cfg.Tenants.AdminNamespaces = nil
	if err := serve(cfg); err != nil {
		t.Errorf("no admin namespaces: %v", err)
	}
}

// TestMetadataOfHistogramFamily: a tenant granted a histogram by name gets
// its metadata (the family has no series of its own name), and never the
// HELP/TYPE of families it cannot see. The metadata is real: a Prometheus
// scrapes a proxy's own metrics.
func TestMetadataOfHistogramFamily(t *testing.T) {
	target := e2eproxy.StartProxy(t, func() app.Config {
		cfg := app.DefaultConfig()
		cfg.Discovery.Static = []discovery.StaticGroup{{Name: "none", URLs: []string{e2eutil.ClosedPort(t)}}}
		cfg.Server.ManagementAddress = "127.0.0.1:0"
		return cfg
	}())
	// Some traffic, so the histograms have buckets.
	for range 3 {
		e2eproxy.DoRequest(t, target.URL, e2eproxy.APIRequest{Path: "/health"})
	}
	scraper := e2eutil.StartPrometheus(t, e2eutil.V3, nil, e2eutil.WithName("scraper"), e2eutil.WithConfig(fmt.Sprintf(`global: {scrape_interval: 1s}
scrape_configs:
  - job_name: proxy
    static_configs:
      - targets: [%q]
        labels: {namespace: team-a}
`, strings.TrimPrefix(target.ManagementURL, "http://"))))
	const family = "prometheus_proxy_request_duration_seconds"
	e2eutil.Eventually(t, 20*time.Second, "scraped metadata", func() error {
		a := e2eproxy.DoRequest(t, scraper.URL, e2eproxy.APIRequest{Path: "/api/v1/metadata", Params: url.Values{"metric": {family}}})
		if !strings.Contains(string(a.Body), "histogram") {
			return fmt.Errorf("HTTP %d %s", a.Code, a.Body)
		}
		return nil
	})

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "team-a.yaml"), []byte(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: histogram, namespace: team-a}
spec:
  source: team-a
  metrics: [`+family+`]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "team-b.yaml"), []byte(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: other, namespace: team-b}
spec:
  source: team-b
  metrics: [`+family+`]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := app.DefaultConfig()
	cfg.Discovery.Static = []discovery.StaticGroup{{Name: "scraper", URLs: []string{scraper.URL}}}
	cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
	p := e2eproxy.StartProxy(t, cfg)
	families := func(ns string, params url.Values) map[string]json.RawMessage {
		t.Helper()
		a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/metadata", Params: params, Header: e2eproxy.TenantHeader(ns)})
		var v struct {
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(a.Body, &v); err != nil || a.Code != http.StatusOK {
			t.Fatalf("metadata as %s: HTTP %d %s", ns, a.Code, a.Body)
		}
		return v.Data
	}
	if got := families("team-a", url.Values{"metric": {family}}); !bytes.Contains(got[family], []byte(`"histogram"`)) {
		t.Errorf("team-a, metric=%s: %v, want the histogram family", family, got)
	}
	all := families("team-a", nil)
	if len(all) != 1 || all[family] == nil {
		t.Errorf("team-a, every family: %d families, want only %s", len(all), family)
	}
	// team-b is granted the same name, but no series of its namespace exist.
	if got := families("team-b", url.Values{"metric": {family}}); len(got) != 0 {
		t.Errorf("team-b sees metadata of a family it has no series of: %v", got)
	}
	if got := families("team-a", url.Values{"metric": {"prometheus_proxy_requests_total"}}); len(got) != 0 {
		t.Errorf("team-a sees metadata of a family it is not granted: %v", got)
	}
}
