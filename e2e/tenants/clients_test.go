package tenants

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// clientWorld is a proxy serving HTTPS with JWT authentication and tenancy,
// a tenant's token, and that tenant's oracle.
type clientWorld struct {
	f       *e2eproxy.Fleet
	proxy   *e2eproxy.Proxy
	caFile  string
	token   string // team-a
	admin   string
	oracle  *e2eutil.Prometheus
	https   *http.Client
	secrets []string
}

// TestClients points real, unmodified Prometheus clients at the proxy (HTTPS,
// bearer token) and compares what they get with what the same clients get
// from the tenant's oracle: promtool, client_golang's API client and the
// calls Grafana's Prometheus data source makes. It also checks the proxy's
// own metrics and the dashboard and alerts shipped for them.
func TestClients(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	w := startClientWorld(t, f)
	t.Run("promtool", func(t *testing.T) { testPromtool(t, w) })
	t.Run("client_golang", func(t *testing.T) { testClientGolang(t, w) })
	t.Run("grafana", func(t *testing.T) { testGrafanaCalls(t, w) })
	t.Run("metrics", func(t *testing.T) { testMetricsMove(t, w) })
}

const clientsSecret = "clients-test-secret-0123456789abcdef"

func startClientWorld(t *testing.T, f *e2eproxy.Fleet) *clientWorld {
	ca := newTestCA(t, "proxy CA")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, ca.issue(t, "proxy", certOpts{}), certFile, keyFile)
	cfg := e2eproxy.ConfigFromYAML(t, fmt.Sprintf(`server:
  tls: {cert_file: %s, key_file: %s}
auth:
  type: jwt
  jwt:
    secret_key: %s
    issuer: clients-test
    audience: prometheus-multi-tenant-proxy
    admin_claim: groups=platform-admins
`, certFile, keyFile, clientsSecret))
	tc := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	cfg.Discovery, cfg.Tenants = tc.Discovery, tc.Tenants
	p, _ := startLoggedProxy(t, cfg)
	w := &clientWorld{f: f, proxy: p, caFile: ca.file}
	w.token = w.sign(t, jwt.MapClaims{"namespace": "team-a", "sub": "grafana"})
	w.admin = w.sign(t, jwt.MapClaims{"groups": []string{"platform-admins"}, "sub": "prometheus"})
	w.oracle = e2eproxy.OracleFor(t, f, "team-a", e2eproxy.PolicyOf(t, p, "team-a"))
	w.https = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	return w
}

func (w *clientWorld) sign(t testing.TB, claims jwt.MapClaims) string {
	claims["iss"], claims["aud"], claims["exp"] = "clients-test", "prometheus-multi-tenant-proxy", time.Now().Add(time.Hour).Unix()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(clientsSecret))
	if err != nil {
		t.Fatal(err)
	}
	w.secrets = append(w.secrets, s)
	return s
}

// canon makes two clients' outputs comparable: JSON, with series lists
// sorted (their order is not defined), numbers kept as written.
func canon(t testing.TB, b []byte) string {
	t.Helper()
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, e2eproxy.Clip(b))
	}
	var sortLists func(x any)
	sortLists = func(x any) {
		switch x := x.(type) {
		case []any:
			for _, y := range x {
				sortLists(y)
			}
			sort.SliceStable(x, func(i, j int) bool { return sortKey(x[i]) < sortKey(x[j]) })
		case map[string]any:
			for _, y := range x {
				sortLists(y)
			}
		}
	}
	// Only lists of series and label sets are unordered; value lists of a
	// series are ordered by time and hold no objects, so sorting objects
	// leaves them alone.
	sortLists(v)
	out, _ := json.Marshal(v)
	return string(out)
}

func sortKey(x any) string {
	m, ok := x.(map[string]any)
	if !ok {
		return "" // scalars keep their order (stable sort)
	}
	if metric, ok := m["metric"]; ok {
		x = metric
	}
	b, _ := json.Marshal(x)
	return string(b)
}

func promtool(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(e2eutil.PromtoolBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, errb.String())
	}
	return out.String(), nil
}

func unixArg(tm time.Time) string { return strconv.FormatInt(tm.Unix(), 10) }

func testPromtool(t *testing.T, w *clientWorld) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, []byte(w.token))
	httpConfig := filepath.Join(dir, "http.yaml")
	writeFile(t, httpConfig, fmt.Appendf(nil, "authorization:\n  type: Bearer\n  credentials_file: %s\ntls_config:\n  ca_file: %s\n", tokenFile, w.caFile))
	d := w.f.Data
	at, start, end := d.Start.Add(61*time.Minute), d.Start.Add(10*time.Minute), d.Start.Add(110*time.Minute)
	var calls [][]string
	for _, e := range []string{
		`up`,
		`http_requests_total`,
		`sum by (namespace, code) (rate(http_requests_total[5m]))`,
		`histogram_quantile(0.9, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`,
		`count by (__name__) ({__name__=~".+"})`,
		`{namespace="team-b"}`,
		`absent(memory_usage_bytes)`,
	} {
		calls = append(calls,
			[]string{"query", "instant", "-o", "json", "--time=" + unixArg(at), "SERVER", e},
			[]string{"query", "range", "-o", "json", "--start=" + unixArg(start), "--end=" + unixArg(end), "--step=1m", "SERVER", e})
	}
	calls = append(calls,
		[]string{"query", "series", "-o", "json", "--match=http_requests_total", "--match={namespace=\"team-b\"}", "--start=" + unixArg(start), "--end=" + unixArg(end), "SERVER"},
		[]string{"query", "labels", "-o", "json", "--start=" + unixArg(start), "--end=" + unixArg(end), "SERVER", "__name__"},
		// A range, as Grafana sends: without one promtool asks 9999h back,
		// past the default max_query_length of a listing.
		[]string{"query", "labels", "-o", "json", "--match=http_requests_total", "--start=" + unixArg(start), "--end=" + unixArg(end), "SERVER", "job"},
	)
	withData := 0
	for _, c := range calls {
		args := func(server string, auth bool) []string {
			var out []string
			for _, a := range c {
				if a == "SERVER" {
					if auth {
						out = append(out, "--http.config.file="+httpConfig)
					}
					a = server
				}
				out = append(out, a)
			}
			return out
		}
		want, err := promtool(t, args(w.oracle.URL, false)...)
		if err != nil {
			t.Fatalf("promtool %v against the oracle: %v", c, err)
		}
		got, err := promtool(t, args(w.proxy.URL, true)...)
		if err != nil {
			t.Errorf("promtool %v against the proxy: %v", c, err)
			continue
		}
		if canon(t, []byte(want)) != canon(t, []byte(got)) {
			t.Errorf("promtool %v: proxy and oracle differ\nproxy:  %s\noracle: %s", c, e2eproxy.Clip([]byte(got)), e2eproxy.Clip([]byte(want)))
		}
		if len(want) > 10 {
			withData++
		}
	}
	// up and {namespace="team-b"} are outside team-a's rules: empty on both sides.
	if withData < len(calls)-4 {
		t.Errorf("only %d of %d promtool answers hold data", withData, len(calls))
	}
	// Without the token promtool gets the proxy's 401.
	out, err := promtool(t, "query", "instant", "--http.config.file="+writeTLSOnly(t, dir, w.caFile), w.proxy.URL, "up")
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Errorf("promtool without a token: err %v, output %s", err, out)
	}
}

func writeTLSOnly(t testing.TB, dir, caFile string) string {
	p := filepath.Join(dir, "tls-only.yaml")
	writeFile(t, p, fmt.Appendf(nil, "tls_config:\n  ca_file: %s\n", caFile))
	return p
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return canon(t, b)
}

func testClientGolang(t *testing.T, w *clientWorld) {
	rt, err := config_util.NewRoundTripperFromConfig(config_util.HTTPClientConfig{
		Authorization: &config_util.Authorization{Type: "Bearer", Credentials: config_util.Secret(w.token)},
		TLSConfig:     config_util.TLSConfig{CAFile: w.caFile},
	}, "clients-test")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewClient(api.Config{Address: w.proxy.URL, RoundTripper: rt})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := api.NewClient(api.Config{Address: w.oracle.URL})
	if err != nil {
		t.Fatal(err)
	}
	proxy, oracle := promv1.NewAPI(pc), promv1.NewAPI(oc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := w.f.Data
	at, start, end := d.Start.Add(61*time.Minute), d.Start.Add(10*time.Minute), d.Start.Add(110*time.Minute)

	calls, withData := 0, 0
	same := func(what string, want, got any, werr, gerr error) {
		t.Helper()
		calls++
		if werr == nil {
			if j := jsonOf(t, want); j != "[]" && j != "{}" && j != "null" {
				withData++
			}
		}
		if (werr == nil) != (gerr == nil) {
			t.Errorf("%s: oracle err %v, proxy err %v", what, werr, gerr)
			return
		}
		if werr != nil {
			var we, ge *promv1.Error
			if !errors.As(werr, &we) || !errors.As(gerr, &ge) || we.Type != ge.Type {
				t.Errorf("%s: oracle error %v, proxy error %v", what, werr, gerr)
			}
			return
		}
		if a, b := jsonOf(t, want), jsonOf(t, got); a != b {
			t.Errorf("%s: proxy and oracle differ\nproxy:  %s\noracle: %s", what, e2eproxy.Clip([]byte(b)), e2eproxy.Clip([]byte(a)))
		}
	}

	bi, err := proxy.Buildinfo(ctx)
	if err != nil || !strings.HasPrefix(bi.Version, "3.") || bi.GoVersion == "" {
		t.Errorf("buildinfo: %+v, %v", bi, err)
	}
	for _, e := range []string{`up`, `rate(http_requests_total[5m])`, `topk(3, http_requests_total)`, `{__name__=~".+"}`, `vector(1)`, `rate(up)`} {
		wv, _, _, werr := oracle.Query(ctx, e, at)
		gv, _, _, gerr := proxy.Query(ctx, e, at)
		same("Query "+e, wv, gv, werr, gerr)
		r := promv1.Range{Start: start, End: end, Step: time.Minute}
		wv, _, _, werr = oracle.QueryRange(ctx, e, r)
		gv, _, _, gerr = proxy.QueryRange(ctx, e, r)
		same("QueryRange "+e, wv, gv, werr, gerr)
	}
	for _, m := range [][]string{{`http_requests_total`}, {`{namespace=~".+"}`}, {`up`, `{__name__=~"http_.*"}`}} {
		ws, _, _, werr := oracle.Series(ctx, m, start, end)
		gs, _, _, gerr := proxy.Series(ctx, m, start, end)
		same(fmt.Sprint("Series ", m), ws, gs, werr, gerr)
		wl, _, _, werr := oracle.LabelNames(ctx, m, start, end)
		gl, _, _, gerr := proxy.LabelNames(ctx, m, start, end)
		same(fmt.Sprint("LabelNames ", m), wl, gl, werr, gerr)
		wlv, _, _, werr := oracle.LabelValues(ctx, "job", m, start, end)
		glv, _, _, gerr := proxy.LabelValues(ctx, "job", m, start, end)
		same(fmt.Sprint("LabelValues job ", m), wlv, glv, werr, gerr)
	}
	// With a range: without one the proxy reads limits' default window
	// back from now, and this data is older.
	wl, _, _, werr := oracle.LabelNames(ctx, nil, start, end)
	gl, _, _, gerr := proxy.LabelNames(ctx, nil, start, end)
	same("LabelNames, no match[]", wl, gl, werr, gerr)
	wmd, werr := oracle.Metadata(ctx, "", "")
	gmd, gerr := proxy.Metadata(ctx, "", "")
	same("Metadata", wmd, gmd, werr, gerr)
	wex, werr := oracle.QueryExemplars(ctx, "http_requests_total", start, end)
	gex, gerr := proxy.QueryExemplars(ctx, "http_requests_total", start, end)
	same("QueryExemplars", wex, gex, werr, gerr)
	if withData < calls/2 {
		t.Errorf("only %d of %d client_golang answers hold data", withData, calls)
	}
}

// grafanaRequest is one call the way Grafana's Prometheus data source
// sends it (httpMethod POST, the default since Grafana 8).
func (w *clientWorld) grafanaDo(t testing.TB, base string, r e2eproxy.APIRequest, auth bool) e2eproxy.APIAnswer {
	t.Helper()
	var req *http.Request
	var err error
	if r.Post {
		req, err = http.NewRequest(http.MethodPost, base+r.Path, strings.NewReader(r.Params.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, err = http.NewRequest(http.MethodGet, base+r.Path+"?"+r.Params.Encode(), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "Grafana/11.3.0")
	req.Header.Set("Accept", "application/json, text/plain, */*")
	req.Header.Set("X-Grafana-Org-Id", "1")
	req.Header.Set("X-Dashboard-Uid", "abc123")
	req.Header.Set("X-Panel-Id", "4")
	client := http.DefaultClient
	if auth {
		req.Header.Set("Authorization", "Bearer "+w.token)
		client = w.https
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return e2eproxy.APIAnswer{Code: resp.StatusCode, Body: body}
}

func testGrafanaCalls(t *testing.T, w *clientWorld) {
	d := w.f.Data
	start, end := e2eproxy.FormatTime(d.Start.Add(20*time.Minute)), e2eproxy.FormatTime(d.Start.Add(110*time.Minute))
	window := func(v url.Values) url.Values {
		v.Set("start", start)
		v.Set("end", end)
		return v
	}
	// Opening the data source, the query editor's metric browser, then a
	// dashboard panel.
	buildinfo := w.grafanaDo(t, w.proxy.URL, e2eproxy.APIRequest{Path: "/api/v1/status/buildinfo", Params: url.Values{}}, true)
	var bi struct {
		Status string
		Data   struct{ Version string }
	}
	if err := json.Unmarshal(buildinfo.Body, &bi); err != nil || buildinfo.Code != 200 || bi.Status != "success" || !regexp.MustCompile(`^[23]\.\d+\.\d+`).MatchString(bi.Data.Version) {
		t.Errorf("buildinfo: HTTP %d %s", buildinfo.Code, buildinfo.Body)
	}
	calls := []e2eproxy.APIRequest{
		{Path: "/api/v1/query", Post: true, Params: url.Values{"query": {"1+1"}, "time": {end}}},
		{Path: "/api/v1/labels", Post: true, Params: window(url.Values{})},
		{Path: "/api/v1/label/__name__/values", Params: window(url.Values{})},
		{Path: "/api/v1/metadata", Params: url.Values{}},
		{Path: "/api/v1/metadata", Params: url.Values{"metric": {"http_requests_total"}}},
		{Path: "/api/v1/labels", Post: true, Params: window(url.Values{"match[]": {"http_requests_total"}})},
		{Path: "/api/v1/label/job/values", Params: window(url.Values{"match[]": {"http_requests_total"}})},
		{Path: "/api/v1/label/code/values", Params: window(url.Values{"match[]": {`http_requests_total{job="api"}`}})},
		{Path: "/api/v1/series", Post: true, Params: window(url.Values{"match[]": {`http_requests_total{job="api"}`}})},
		{Path: "/api/v1/query_range", Post: true, Params: window(url.Values{"query": {`sum by (code) (rate(http_requests_total{job="api"}[2m]))`}, "step": {"30"}})},
		{Path: "/api/v1/query_range", Post: true, Params: window(url.Values{"query": {`histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[2m])))`}, "step": {"60"}})},
		{Path: "/api/v1/query", Post: true, Params: url.Values{"query": {`sum by (job) (http_requests_total)`}, "time": {end}}},
		{Path: "/api/v1/query_exemplars", Post: true, Params: window(url.Values{"query": {`http_requests_total`}})},
		{Path: "/api/v1/query_range", Post: true, Params: window(url.Values{"query": {`rate(http_requests_total[`}, "step": {"30"}})},
	}
	withData := 0
	for _, r := range calls {
		want := w.grafanaDo(t, w.oracle.URL, r, false)
		got := w.grafanaDo(t, w.proxy.URL, r, true)
		e2eproxy.CompareAnswers(t, "grafana "+r.String(), want, got)
		if e2eproxy.HasData(t, want) {
			withData++
		}
	}
	if withData < len(calls)/2 {
		t.Errorf("only %d of %d Grafana calls hold data", withData, len(calls))
	}
}

// scrape reads /metrics as admin.
func (w *clientWorld) scrape(t testing.TB) map[string]*metricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.proxy.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+w.admin)
	resp, err := w.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: HTTP %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]*metricFamily{}
	for name, f := range fams {
		mf := &metricFamily{}
		for _, m := range f.GetMetric() {
			s := metricSample{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			case m.Untyped != nil:
				s.value = m.GetUntyped().GetValue()
			}
			mf.samples = append(mf.samples, s)
		}
		out[name] = mf
	}
	return out
}

type metricSample struct {
	labels map[string]string
	value  float64 // histograms: the observation count
}

type metricFamily struct{ samples []metricSample }

// sum adds the samples whose labels include match.
func (f *metricFamily) sum(match map[string]string) float64 {
	if f == nil {
		return 0
	}
	total := 0.0
	for _, s := range f.samples {
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			total += s.value
		}
	}
	return total
}

func testMetricsMove(t *testing.T, w *clientWorld) {
	before := w.scrape(t)
	q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"sum(rate(http_requests_total[5m]))"}, "time": {e2eproxy.FormatTime(w.f.Data.Start.Add(time.Hour))}}}
	if a := w.grafanaDo(t, w.proxy.URL, q, true); a.Code != 200 {
		t.Fatalf("query: HTTP %d %s", a.Code, a.Body)
	}
	// One refused request, to move the failure counter.
	if resp, err := w.https.Get(w.proxy.URL + "/api/v1/query?query=up"); err == nil {
		_ = resp.Body.Close()
	}
	after := w.scrape(t)

	moved := []struct {
		name  string
		match map[string]string
	}{
		{"prometheus_proxy_requests_total", map[string]string{"endpoint": "/api/v1/query", "method": "GET", "code": "200"}},
		{"prometheus_proxy_request_duration_seconds", map[string]string{"endpoint": "/api/v1/query"}},
		{"prometheus_proxy_backend_requests_total", map[string]string{"result": "success", "kind": "read"}},
		{"prometheus_proxy_backend_request_duration_seconds", map[string]string{"kind": "read"}},
		{"prometheus_proxy_tenant_requests_total", map[string]string{"tenant": "team-a", "code": "200"}},
		{"prometheus_proxy_auth_failures_total", map[string]string{"reason": "missing"}},
		{"prometheus_proxy_requests_total", map[string]string{"endpoint": "/metrics", "code": "200"}},
	}
	for _, m := range moved {
		b, a := before[m.name].sum(m.match), after[m.name].sum(m.match)
		if a <= b {
			t.Errorf("%s%v did not move: %v → %v", m.name, m.match, b, a)
		}
	}
	for name, want := range map[string]float64{
		"prometheus_proxy_targets_discovered": float64(len(w.f.Shards)),
		"prometheus_proxy_targets_healthy":    float64(len(w.f.Shards)),
		"prometheus_proxy_groups_discovered":  float64(len(w.f.Shards)),
		"prometheus_proxy_tenants_active":     3, // team-a, team-b, team-c
	} {
		if got := after[name].sum(nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := len(after["prometheus_proxy_group_healthy_replicas"].samplesOrNil()); n != len(w.f.Shards) {
		t.Errorf("prometheus_proxy_group_healthy_replicas has %d series, want one per group", n)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "prometheus_proxy_requests_in_flight", "prometheus_proxy_requests_rejected_total"} {
		if after[name] == nil {
			t.Errorf("%s is missing from /metrics", name)
		}
	}
	for name, f := range after {
		for _, s := range f.samples {
			if v, ok := s.labels["tenant"]; ok && v != "team-a" && v != "(admin)" {
				t.Errorf("%s carries tenant %q, which made no request", name, v)
			}
		}
	}
	t.Run("deploy", func(t *testing.T) { testDeployFiles(t, after) })
}

func (f *metricFamily) samplesOrNil() []metricSample {
	if f == nil {
		return nil
	}
	return f.samples
}

// testDeployFiles checks the shipped alert rules with promtool (syntax and
// their unit tests) and that every metric the dashboard and the alerts read
// is one the proxy serves: in this scrape, or (for metrics of parts this
// test does not exercise, such as the cache) named in the source.
func testDeployFiles(t *testing.T, scraped map[string]*metricFamily) {
	root := e2eutil.RepoRoot(t)
	rules := filepath.Join(root, "deploy", "prometheus", "alerts.yaml")
	if out, err := promtool(t, "check", "rules", rules); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(e2eutil.PromtoolBinary(t), "test", "rules", "alerts_test.yaml")
	cmd.Dir = filepath.Dir(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}

	var exprs []string
	var ruleFile struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yamlUnmarshalFile(rules, &ruleFile); err != nil {
		t.Fatal(err)
	}
	for _, g := range ruleFile.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	dash, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "proxy-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	walkExprs(d, func(e string) { exprs = append(exprs, e) })
	if len(exprs) < 20 {
		t.Fatalf("found only %d expressions in the dashboard and alerts", len(exprs))
	}

	source := goSource(t, root)
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$job", "x", "$instance", "x")
	p := parser.NewParser(parser.Options{})
	for _, e := range exprs {
		if strings.HasPrefix(e, "label_values(") {
			e = strings.TrimSuffix(strings.TrimPrefix(e, "label_values("), ")")
			e = e[:strings.LastIndex(e, ",")]
		}
		expr, err := p.ParseExpr(vars.Replace(e))
		if err != nil {
			t.Errorf("expression does not parse: %v\n%s", err, e)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			if name == "" || name == "up" {
				return nil
			}
			family := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base := strings.TrimSuffix(name, suffix); base != name && scraped[base] != nil {
					family = base
				}
			}
			if scraped[family] == nil && !strings.Contains(source, `"`+name+`"`) {
				t.Errorf("%s is read by the dashboard or alerts but the proxy does not serve it", name)
			}
			return nil
		})
	}
}

func walkExprs(x any, f func(string)) {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			if s, ok := v.(string); ok && (k == "expr" || (k == "query" && strings.HasPrefix(s, "label_values("))) {
				f(s)
			}
			walkExprs(v, f)
		}
	case []any:
		for _, v := range x {
			walkExprs(v, f)
		}
	}
}

// goSource concatenates the project's non-test Go files.
func goSource(t testing.TB, root string) string {
	var b strings.Builder
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "tools") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b.Write(src)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func yamlUnmarshalFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, v)
}
