package operations

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// The alerting world: two Prometheus 3.x backends, each scraping its shard
// of a tiny OpenMetrics target (with exemplars) every second and evaluating
// the same recording and alerting rules, and one reference Prometheus that
// scrapes both shards with the same rules. The proxy's exemplars, rules and
// alerts must equal the reference's for an admin, and for a tenant equal
// what the README's visibility rule leaves of the reference's answer
// (computed here, independently of the proxy's code).

const exemplarBucket = 5 // seconds: one exemplar per series per bucket

// alertingSeries are the target's series by shard. The shared series is in
// both shards, so exemplars must be merged and de-duplicated.
var alertingSeries = [][]struct {
	counter map[string]string // app_requests_total, with exemplars
	queue   float64           // app_queue_depth of the same namespace/instance; <0: none
}{
	{
		{map[string]string{"namespace": "team-a", "job": "api", "instance": "a0"}, 10},
		{map[string]string{"namespace": "team-b", "job": "web", "instance": "b0"}, 3},
		{map[string]string{"namespace": "shared", "job": "api", "instance": "s"}, -1},
	},
	{
		{map[string]string{"namespace": "team-a", "job": "api", "instance": "a1"}, 2},
		{map[string]string{"namespace": "team-c", "job": "db", "instance": "c1"}, 50},
		{map[string]string{"namespace": "shared", "job": "api", "instance": "s"}, -1},
	},
}

const alertingRules = `groups:
  - name: app
    interval: 1s
    rules:
      - record: namespace:app_queue_depth:sum
        expr: sum by (namespace) (app_queue_depth)
      - record: team_a:app_queue_depth:max
        expr: max(app_queue_depth{namespace="team-a"})
        labels: {namespace: team-a}
      - alert: QueueDeep
        expr: app_queue_depth > 5
        labels: {severity: page}
        annotations: {summary: "queue of {{ $labels.instance }} is deep"}
      - alert: QueueDeepLong
        expr: app_queue_depth > 5
        for: 1h
      - alert: TeamAQueueNonEmpty
        expr: app_queue_depth{namespace="team-a"} > 0
        labels: {namespace: team-a}
      - alert: TeamBQueueHuge
        expr: app_queue_depth{namespace="team-b"} > 1000
        labels: {namespace: team-b, severity: page}
`

// alertingTenants are the MetricAccess objects of the test, and
// visibleTo is what each may see, written out by hand from the README.
const alertingTenants = `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: apps, namespace: team-a}
spec:
  source: team-a
  metrics: ['app_.*', 'ALERTS', 'team_a:app_queue_depth:max', '{bad']
---
apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: pager, namespace: team-b}
spec:
  source: team-b
  metrics: ['app_queue_depth', 'app_requests_total', 'ALERTS{severity="page"}']
`

var visibleTo = map[string]func(l map[string]string) bool{
	"team-a": func(l map[string]string) bool {
		n := l["__name__"]
		return l["namespace"] == "team-a" && (strings.HasPrefix(n, "app_") || n == "ALERTS" || n == "team_a:app_queue_depth:max")
	},
	"team-b": func(l map[string]string) bool {
		n := l["__name__"]
		return l["namespace"] == "team-b" && (n == "app_queue_depth" || n == "app_requests_total" || (n == "ALERTS" && l["severity"] == "page"))
	},
}

func serveAlertingTarget(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	for shard := range alertingSeries {
		mux.HandleFunc(fmt.Sprintf("/metrics/%d", shard), func(w http.ResponseWriter, r *http.Request) {
			b := time.Now().Unix() / exemplarBucket
			w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
			var sb strings.Builder
			sb.WriteString("# TYPE app_requests counter\n")
			for _, s := range alertingSeries[shard] {
				fmt.Fprintf(&sb, "app_requests_total%s %d # {trace_id=\"%s-%d\"} %d.5 %d.000\n", omLabels(s.counter), b, s.counter["instance"], b, b%7, b*exemplarBucket)
			}
			sb.WriteString("# TYPE app_queue_depth gauge\n")
			for _, s := range alertingSeries[shard] {
				if s.queue >= 0 {
					l := map[string]string{"namespace": s.counter["namespace"], "instance": s.counter["instance"]}
					fmt.Fprintf(&sb, "app_queue_depth%s %g\n", omLabels(l), s.queue)
				}
			}
			sb.WriteString("# EOF\n")
			_, _ = io.WriteString(w, sb.String())
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func omLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// scrapeConfig scrapes the given shards of the target; honor_labels keeps
// the exposed instance, so a shard's series are the same everywhere.
func scrapeConfig(target string, shards ...int) string {
	return scrapeConfigExt(target, "{}", shards...)
}

// scrapeConfigExt is scrapeConfig with global.external_labels (YAML flow map).
func scrapeConfigExt(target, externalLabels string, shards ...int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "global: {scrape_interval: 1s, evaluation_interval: 1s, external_labels: %s}\nrule_files: [rules.yml]\nscrape_configs:\n", externalLabels)
	for _, s := range shards {
		fmt.Fprintf(&sb, "  - job_name: shard%d\n    honor_labels: true\n    metrics_path: /metrics/%d\n    static_configs: [{targets: [%q]}]\n", s, s, target)
	}
	return sb.String()
}

type alertingWorld struct {
	target    string
	reference *e2eutil.Prometheus
	backends  []*e2eutil.Prometheus
	proxy     *e2eproxy.Proxy
	started   time.Time
	tokens    map[string]string // namespace (or "admin") -> bearer token
	tenantDir string
}

const alertingSecret = "alerting-test-secret-0123456789abcdef"

func startAlertingWorld(t testing.TB) *alertingWorld {
	target := serveAlertingTarget(t)
	flags := e2eutil.WithFlags("--enable-feature=exemplar-storage")
	files := map[string]string{"rules.yml": alertingRules}
	w := &alertingWorld{tokens: map[string]string{}, target: target}
	var groups []discovery.StaticGroup
	for i := range alertingSeries {
		p := e2eutil.StartPrometheus(t, e2eutil.V3, nil, e2eutil.WithName(fmt.Sprintf("shard%d", i)), flags, e2eutil.WithConfig(scrapeConfig(target, i)), e2eutil.WithFiles(files))
		w.backends = append(w.backends, p)
		groups = append(groups, discovery.StaticGroup{Name: fmt.Sprintf("shard%d", i), URLs: []string{p.URL}})
	}
	w.reference = e2eutil.StartPrometheus(t, e2eutil.V3, nil, e2eutil.WithName("reference"), flags, e2eutil.WithConfig(scrapeConfig(target, 0, 1)), e2eutil.WithFiles(files))
	w.started = time.Now()

	w.tenantDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(w.tenantDir, "tenants.yaml"), []byte(alertingTenants), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := e2eproxy.ConfigFromYAML(t, fmt.Sprintf(`auth:
  type: jwt
  jwt:
    secret_key: %s
    issuer: alerting-test
    audience: prometheus-multi-tenant-proxy
    admin_claim: groups=platform-admins
tenants:
  files: [%q]
  admin_namespaces: [monitoring]
`, alertingSecret, filepath.Join(w.tenantDir, "*.yaml")))
	cfg.Discovery.Static = groups
	cfg.Proxy.EnableRequestLogging = false
	w.proxy = e2eproxy.StartProxy(t, cfg)
	for ns := range visibleTo {
		w.tokens[ns] = signHS256(t, alertingSecret, jwt.MapClaims{"namespace": ns, "sub": "user-" + ns})
	}
	w.tokens["admin"] = signHS256(t, alertingSecret, jwt.MapClaims{"groups": []string{"platform-admins"}, "sub": "ops"})
	return w
}

func signHS256(t testing.TB, secret string, claims jwt.MapClaims) string {
	claims["iss"], claims["aud"], claims["exp"] = "alerting-test", "prometheus-multi-tenant-proxy", time.Now().Add(time.Hour).Unix()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (w *alertingWorld) get(t testing.TB, base, path string, params url.Values, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestAlertingAndExemplars(t *testing.T) {
	w := startAlertingWorld(t)
	w.waitSettled(t)
	t.Run("RulesAndAlerts", func(t *testing.T) { testRulesAndAlerts(t, w) })
	t.Run("Exemplars", func(t *testing.T) { testExemplars(t, w) })
	t.Run("GrafanaAlertList", func(t *testing.T) { testGrafanaAlertList(t, w) })
	t.Run("PartialRules", func(t *testing.T) { testPartialRules(t, w) })
	t.Run("GroupLabels", func(t *testing.T) { testAlertingGroupLabels(t, w) })
	t.Run("ExternalLabels", func(t *testing.T) { testAlertingExternalLabels(t, w) })
	t.Run("TenantStatus", func(t *testing.T) { testTenantStatus(t, w) })
	t.Run("Browser", func(t *testing.T) { testBrowserPage(t, w) })
}

// waitSettled waits until every rule of every server has been evaluated
// and the firing alerts are there, and exemplars cover some buckets.
func (w *alertingWorld) waitSettled(t testing.TB) {
	e2eproxy.WaitFor(t, 90*time.Second, "rules evaluated and alerts firing everywhere", func() bool {
		for _, p := range append([]*e2eutil.Prometheus{w.reference}, w.backends...) {
			_, body := w.get(t, p.URL, "/api/v1/rules", nil, "")
			rs := decodeRules(t, body)
			firing := 0
			for _, g := range rs.Data.Groups {
				for _, r := range g.Rules {
					if r.Health != "ok" {
						return false
					}
					if r.State == "firing" {
						firing++
					}
				}
			}
			if firing < 2 {
				return false
			}
		}
		return true
	})
	// Exemplars of several whole buckets after every server started.
	time.Sleep(time.Until(w.started.Add(7 * exemplarBucket * time.Second)))
}

type rulesAnswer struct {
	Status   string   `json:"status"`
	Warnings []string `json:"warnings"`
	Data     struct {
		Groups []struct {
			Name  string     `json:"name"`
			File  string     `json:"file"`
			Rules []ruleJSON `json:"rules"`
		} `json:"groups"`
	} `json:"data"`
}

type ruleJSON struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Query       string            `json:"query"`
	Duration    float64           `json:"duration"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Health      string            `json:"health"`
	State       string            `json:"state"`
	Alerts      []alertJSON       `json:"alerts"`
}

type alertJSON struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	Value       string            `json:"value"`
	ActiveAt    *time.Time        `json:"activeAt,omitempty"`
}

func decodeRules(t testing.TB, body []byte) rulesAnswer {
	t.Helper()
	var a rulesAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.Status != "success" {
		t.Fatalf("rules answer: %v: %s", err, e2eproxy.Clip(body))
	}
	return a
}

func alertKey(a alertJSON) string { return omLabels(a.Labels) + a.State }

// normAlerts drops what depends on when a server started evaluating.
func normAlerts(as []alertJSON) []alertJSON {
	out := make([]alertJSON, 0, len(as))
	for _, a := range as {
		a.ActiveAt = nil
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b alertJSON) int { return strings.Compare(alertKey(a), alertKey(b)) })
	return out
}

// flatRules merges the rules of all groups by rule name: the proxy shows
// one group per backend group, the reference one group for all.
func flatRules(a rulesAnswer) map[string]ruleJSON {
	out := map[string]ruleJSON{}
	rank := map[string]int{"inactive": 0, "pending": 1, "firing": 2}
	for _, g := range a.Data.Groups {
		for _, r := range g.Rules {
			prev, ok := out[r.Name]
			if ok {
				r.Alerts = append(prev.Alerts, r.Alerts...)
				if rank[prev.State] > rank[r.State] {
					r.State = prev.State
				}
			}
			out[r.Name] = r
		}
	}
	for n, r := range out {
		r.Alerts = normAlerts(r.Alerts)
		out[n] = r
	}
	return out
}

func withName(l map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range l {
		m[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// oracleRules applies the README's rule to the reference's rules.
func oracleRules(all map[string]ruleJSON, visible func(map[string]string) bool) map[string]ruleJSON {
	out := map[string]ruleJSON{}
	for name, r := range all {
		var alerts []alertJSON
		for _, a := range r.Alerts {
			if visible(withName(a.Labels, "__name__", "ALERTS", "alertstate", a.State)) {
				alerts = append(alerts, a)
			}
		}
		switch r.Type {
		case "recording":
			if !visible(withName(r.Labels, "__name__", r.Name)) {
				continue
			}
		case "alerting":
			if !visible(withName(r.Labels, "__name__", "ALERTS", "alertname", r.Name)) && len(alerts) == 0 {
				continue
			}
			r.Alerts = normAlerts(alerts)
			r.State = "inactive"
			for _, a := range alerts {
				if a.State == "firing" || (a.State == "pending" && r.State == "inactive") {
					r.State = a.State
				}
			}
		}
		out[name] = r
	}
	return out
}

func testRulesAndAlerts(t *testing.T, w *alertingWorld) {
	_, refBody := w.get(t, w.reference.URL, "/api/v1/rules", nil, "")
	ref := flatRules(decodeRules(t, refBody))
	_, refAlertsBody := w.get(t, w.reference.URL, "/api/v1/alerts", nil, "")
	refAlerts := decodeAlerts(t, refAlertsBody)
	if len(refAlerts) < 4 || len(ref) != 6 {
		t.Fatalf("reference holds %d rules and %d alerts, want 6 and ≥4: %s", len(ref), len(refAlerts), e2eproxy.Clip(refAlertsBody))
	}

	code, body := w.get(t, w.proxy.URL, "/api/v1/rules", nil, w.tokens["admin"])
	if code != 200 {
		t.Fatalf("admin rules: HTTP %d %s", code, body)
	}
	adm := decodeRules(t, body)
	var names []string
	for _, g := range adm.Data.Groups {
		names = append(names, g.Name)
	}
	if !reflect.DeepEqual(names, []string{"shard0/app", "shard1/app"}) {
		t.Errorf("admin sees groups %v, want one per backend group, named after it", names)
	}
	if got := flatRules(adm); !reflect.DeepEqual(got, ref) {
		t.Errorf("admin rules differ from the reference:\nproxy:     %s\nreference: %s", jsonString(got), jsonString(ref))
	}
	_, body = w.get(t, w.proxy.URL, "/api/v1/alerts", nil, w.tokens["admin"])
	if got := decodeAlerts(t, body); !reflect.DeepEqual(got, refAlerts) {
		t.Errorf("admin alerts differ:\nproxy:     %s\nreference: %s", jsonString(got), jsonString(refAlerts))
	}

	for ns, visible := range visibleTo {
		want := oracleRules(ref, visible)
		_, body := w.get(t, w.proxy.URL, "/api/v1/rules", nil, w.tokens[ns])
		got := flatRules(decodeRules(t, body))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: rules differ from the oracle:\nproxy:  %s\noracle: %s", ns, jsonString(got), jsonString(want))
		}
		if len(want) == 0 {
			t.Errorf("%s: the oracle lets no rule through: the test proves nothing", ns)
		}
		var wantAlerts []alertJSON
		for _, a := range refAlerts {
			if visible(withName(a.Labels, "__name__", "ALERTS", "alertstate", a.State)) {
				wantAlerts = append(wantAlerts, a)
			}
		}
		_, body = w.get(t, w.proxy.URL, "/api/v1/alerts", nil, w.tokens[ns])
		gotAlerts := decodeAlerts(t, body)
		if len(gotAlerts) != len(wantAlerts) || (len(wantAlerts) > 0 && !reflect.DeepEqual(gotAlerts, wantAlerts)) {
			t.Errorf("%s: alerts differ from the oracle:\nproxy:  %s\noracle: %s", ns, jsonString(gotAlerts), jsonString(wantAlerts))
		}
		for _, a := range gotAlerts {
			if a.Labels["namespace"] != ns {
				t.Errorf("%s sees a foreign alert %v", ns, a.Labels)
			}
		}
	}

	// Filters are the proxy's own and mean what Prometheus' do.
	for _, c := range []struct {
		params url.Values
		want   []string
	}{
		{url.Values{"type": {"record"}}, []string{"namespace:app_queue_depth:sum", "team_a:app_queue_depth:max"}},
		{url.Values{"type": {"alert"}, "rule_name[]": {"QueueDeep", "namespace:app_queue_depth:sum"}}, []string{"QueueDeep"}},
		{url.Values{"match[]": {`{severity="page"}`}}, []string{"QueueDeep", "TeamBQueueHuge"}},
		{url.Values{"rule_group[]": {"shard1/app"}, "rule_name[]": {"QueueDeep"}}, []string{"QueueDeep"}},
		{url.Values{"rule_group[]": {"app"}}, nil},
	} {
		_, body := w.get(t, w.proxy.URL, "/api/v1/rules", c.params, w.tokens["admin"])
		var got []string
		for n := range flatRules(decodeRules(t, body)) {
			got = append(got, n)
		}
		sort.Strings(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("rules?%s: %v, want %v", c.params.Encode(), got, c.want)
		}
	}
	// Pagination over the merged groups.
	_, body = w.get(t, w.proxy.URL, "/api/v1/rules", url.Values{"group_limit": {"1"}}, w.tokens["admin"])
	var page struct {
		Data struct {
			Groups []struct{ Name string } `json:"groups"`
			Next   string                  `json:"groupNextToken"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &page)
	if len(page.Data.Groups) != 1 || page.Data.Next == "" {
		t.Fatalf("group_limit=1: %s", e2eproxy.Clip(body))
	}
	_, body = w.get(t, w.proxy.URL, "/api/v1/rules", url.Values{"group_limit": {"1"}, "group_next_token": {page.Data.Next}}, w.tokens["admin"])
	if !strings.Contains(string(body), `"name":"shard1/app"`) || strings.Contains(string(body), "groupNextToken") {
		t.Errorf("second page: %s", e2eproxy.Clip(body))
	}
	for _, bad := range []url.Values{{"type": {"x"}}, {"match[]": {"{"}}, {"group_next_token": {"x"}}, {"group_limit": {"1"}, "group_next_token": {"nope"}}} {
		code, body := w.get(t, w.proxy.URL, "/api/v1/rules", bad, w.tokens["admin"])
		if code != 400 || !strings.Contains(string(body), `"errorType":"bad_data"`) {
			t.Errorf("rules?%s: HTTP %d %s, want 400 bad_data", bad.Encode(), code, body)
		}
	}
}

func decodeAlerts(t testing.TB, body []byte) []alertJSON {
	t.Helper()
	var a struct {
		Status string `json:"status"`
		Data   struct {
			Alerts []alertJSON `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Status != "success" || a.Data.Alerts == nil {
		t.Fatalf("alerts answer: %v: %s", err, e2eproxy.Clip(body))
	}
	return normAlerts(a.Data.Alerts)
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

type exemplarSeries struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []struct {
		Labels    map[string]string `json:"labels"`
		Value     string            `json:"value"`
		Timestamp json.Number       `json:"timestamp"`
	} `json:"exemplars"`
}

func decodeExemplars(t testing.TB, body []byte) []exemplarSeries {
	t.Helper()
	var a struct {
		Status string           `json:"status"`
		Data   []exemplarSeries `json:"data"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil || a.Status != "success" {
		t.Fatalf("exemplars answer: %v: %s", err, e2eproxy.Clip(body))
	}
	sort.Slice(a.Data, func(i, j int) bool { return omLabels(a.Data[i].SeriesLabels) < omLabels(a.Data[j].SeriesLabels) })
	if a.Data == nil {
		a.Data = []exemplarSeries{}
	}
	return a.Data
}

func testExemplars(t *testing.T, w *alertingWorld) {
	// Whole buckets every server scraped: from the first full one after all
	// started to the last one that ended a second ago.
	b := int64(exemplarBucket)
	start := (w.started.Unix()/b + 2) * b
	end := (time.Now().Unix()-1)/b*b - b
	if end < start {
		t.Fatalf("no common exemplar window yet (%d..%d)", start, end)
	}
	window := func(q string) url.Values {
		return url.Values{"query": {q}, "start": {fmt.Sprint(start)}, "end": {fmt.Sprint(end)}}
	}
	queries := []string{`app_requests_total`, `rate(app_requests_total{job="api"}[1m])`, `app_requests_total{namespace="shared"} or app_queue_depth`, `{__name__=~"app_.*"}`, `sum(app_requests_total{namespace="team-c"})`}
	for _, q := range queries {
		_, refBody := w.get(t, w.reference.URL, "/api/v1/query_exemplars", window(q), "")
		ref := decodeExemplars(t, refBody)
		if len(ref) == 0 || len(ref[0].Exemplars) < 2 {
			t.Fatalf("%s: the reference holds too few exemplars to compare: %s", q, e2eproxy.Clip(refBody))
		}
		_, body := w.get(t, w.proxy.URL, "/api/v1/query_exemplars", window(q), w.tokens["admin"])
		if got := decodeExemplars(t, body); !reflect.DeepEqual(got, ref) {
			t.Errorf("admin %s: exemplars differ:\nproxy:     %s\nreference: %s", q, e2eproxy.Clip(body), e2eproxy.Clip(refBody))
		}
		for ns, visible := range visibleTo {
			want := []exemplarSeries{}
			for _, s := range ref {
				if visible(s.SeriesLabels) {
					want = append(want, s)
				}
			}
			_, body := w.get(t, w.proxy.URL, "/api/v1/query_exemplars", window(q), w.tokens[ns])
			got := decodeExemplars(t, body)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s: exemplars differ from the oracle:\nproxy:  %s\noracle: %s", ns, q, jsonString(got), jsonString(want))
			}
			for _, s := range got {
				if s.SeriesLabels["namespace"] != ns {
					t.Errorf("%s sees a foreign series %v", ns, s.SeriesLabels)
				}
			}
		}
	}
	// Bad input is refused as Prometheus refuses it.
	for _, bad := range []url.Values{{"query": {"foo{"}}, {"query": {"up"}, "start": {"10"}, "end": {"5"}}} {
		code, body := w.get(t, w.proxy.URL, "/api/v1/query_exemplars", bad, w.tokens["team-a"])
		rc, rb := w.get(t, w.reference.URL, "/api/v1/query_exemplars", bad, "")
		if code != rc || code != 400 {
			t.Errorf("exemplars %s: HTTP %d %s, reference %d %s", bad.Encode(), code, body, rc, rb)
		}
	}
}

// testGrafanaAlertList sends what Grafana's alert list and its rules view
// send for a Prometheus data source, with a bearer token, unchanged.
func testGrafanaAlertList(t *testing.T, w *alertingWorld) {
	call := func(path string, params url.Values, token string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, w.proxy.URL+path+"?"+params.Encode(), nil)
		req.Header.Set("User-Agent", "Grafana/11.3.0")
		req.Header.Set("Accept", "application/json, text/plain, */*")
		req.Header.Set("X-Grafana-Org-Id", "1")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	tok := w.tokens["team-a"]
	if code, body := call("/api/v1/status/buildinfo", nil, tok); code != 200 {
		t.Fatalf("buildinfo: HTTP %d %s", code, body)
	}
	code, body := call("/api/v1/rules", nil, tok)
	if code != 200 {
		t.Fatalf("rules: HTTP %d %s", code, body)
	}
	rules := flatRules(decodeRules(t, body))
	code, body = call("/api/v1/alerts", nil, tok)
	if code != 200 {
		t.Fatalf("alerts: HTTP %d %s", code, body)
	}
	alerts := decodeAlerts(t, body)
	// What the list shows: every firing alert of a visible rule is among
	// the alerts, and no alert lacks its rule.
	for _, a := range alerts {
		r, ok := rules[a.Labels["alertname"]]
		if !ok || !slices.ContainsFunc(r.Alerts, func(x alertJSON) bool { return alertKey(x) == alertKey(a) }) {
			t.Errorf("alert %v has no rule in the rules answer", a.Labels)
		}
	}
	if len(alerts) == 0 {
		t.Error("team-a sees no alert: the sequence proves nothing")
	}
	if code, _ := call("/api/v1/rules", nil, ""); code != 401 {
		t.Errorf("rules without a token: HTTP %d, want 401", code)
	}
}

// testPartialRules: a dead group makes rules and alerts a partial answer
// with a warning, as for queries; partial_response=false refuses it.
func testPartialRules(t *testing.T, w *alertingWorld) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close()
	cfg := app.DefaultConfig()
	cfg.Discovery.Static = []discovery.StaticGroup{{Name: "shard0", URLs: []string{w.backends[0].URL}}, {Name: "dead", URLs: []string{dead}}}
	p := e2eproxy.StartProxy(t, cfg)
	for _, path := range []string{"/api/v1/rules", "/api/v1/alerts", "/api/v1/query_exemplars"} {
		params := url.Values{"query": {"app_requests_total"}}
		code, body := w.get(t, p.URL, path, params, "")
		if code != 200 || !strings.Contains(string(body), `"warnings":["partial response`) {
			t.Errorf("%s with a dead group: HTTP %d %s", path, code, e2eproxy.Clip(body))
		}
		params.Set("partial_response", "false")
		if code, body := w.get(t, p.URL, path, params, ""); code != 503 || !strings.Contains(string(body), `"errorType":"unavailable"`) {
			t.Errorf("%s partial_response=false: HTTP %d %s", path, code, e2eproxy.Clip(body))
		}
	}
}

// testAlertingGroupLabels: a group's labels are on its alerts, rules and
// exemplar series, as on its series.
func testAlertingGroupLabels(t *testing.T, w *alertingWorld) {
	cfg := app.DefaultConfig()
	shardOf := map[string]string{}
	for i, p := range w.backends {
		cluster := fmt.Sprintf("c%d", i)
		cfg.Discovery.Static = append(cfg.Discovery.Static, discovery.StaticGroup{Name: fmt.Sprintf("shard%d", i), URLs: []string{p.URL}, Labels: map[string]string{"cluster": cluster}})
		for _, s := range alertingSeries[i] {
			shardOf[s.counter["instance"]] = cluster
		}
	}
	p := e2eproxy.StartProxy(t, cfg)
	_, body := w.get(t, p.URL, "/api/v1/alerts", nil, "")
	alerts := decodeAlerts(t, body)
	if len(alerts) == 0 {
		t.Fatal("no alerts")
	}
	for _, a := range alerts {
		if want := shardOf[a.Labels["instance"]]; a.Labels["cluster"] != want {
			t.Errorf("alert %v: cluster %q, want %q", a.Labels, a.Labels["cluster"], want)
		}
	}
	_, body = w.get(t, p.URL, "/api/v1/rules", nil, "")
	for _, g := range decodeRules(t, body).Data.Groups {
		want := "c" + strings.TrimPrefix(strings.TrimSuffix(g.Name, "/app"), "shard")
		for _, r := range g.Rules {
			if r.Labels["cluster"] != want {
				t.Errorf("group %s rule %s: labels %v, want cluster=%s", g.Name, r.Name, r.Labels, want)
			}
		}
	}
	_, body = w.get(t, p.URL, "/api/v1/query_exemplars", url.Values{"query": {"app_requests_total"}}, "")
	ex := decodeExemplars(t, body)
	clusters := map[string]int{}
	for _, s := range ex {
		clusters[s.SeriesLabels["cluster"]]++
		if s.SeriesLabels["instance"] != "s" && s.SeriesLabels["cluster"] != shardOf[s.SeriesLabels["instance"]] {
			t.Errorf("exemplar series %v: wrong cluster", s.SeriesLabels)
		}
	}
	// The shared series is one per group now: the groups' labels tell them apart.
	if clusters["c0"] != 3 || clusters["c1"] != 3 {
		t.Errorf("exemplar series per cluster: %v, want 3 and 3", clusters)
	}
}

// BenchmarkAlertingVsReference measures rules, alerts and exemplars through
// the proxy (two groups, merged and filtered) against the reference
// Prometheus answering the same calls alone: compare ns/op of the
// sub-benchmarks of one run.
func BenchmarkAlertingVsReference(b *testing.B) {
	w := startAlertingWorld(b)
	w.waitSettled(b)
	calls := []struct {
		name, path string
		params     url.Values
	}{
		{"rules", "/api/v1/rules", nil},
		{"alerts", "/api/v1/alerts", nil},
		{"exemplars", "/api/v1/query_exemplars", url.Values{"query": {"app_requests_total"}}},
	}
	for _, c := range calls {
		for _, target := range []struct{ name, base, token string }{
			{"reference", w.reference.URL, ""},
			{"proxy-admin", w.proxy.URL, w.tokens["admin"]},
			{"proxy-tenant", w.proxy.URL, w.tokens["team-a"]},
		} {
			b.Run(c.name+"/"+target.name, func(b *testing.B) {
				for b.Loop() {
					if code, body := w.get(b, target.base, c.path, c.params, target.token); code != 200 {
						b.Fatalf("HTTP %d %s", code, e2eproxy.Clip(body))
					}
				}
			})
		}
	}
}

// testAlertingExternalLabels: backends whose external labels name their
// cluster (and replica) show them on alerts, rules and exemplars like on
// series: the cluster label added, the replica label dropped, and a
// matcher on the cluster decided by the proxy.
func testAlertingExternalLabels(t *testing.T, w *alertingWorld) {
	cfg := app.DefaultConfig()
	for i := range alertingSeries {
		ext := fmt.Sprintf("{cluster: e%d, prometheus_replica: r%d}", i, i)
		p := e2eutil.StartPrometheus(t, e2eutil.V3, nil, e2eutil.WithName(fmt.Sprintf("ext%d", i)), e2eutil.WithFlags("--enable-feature=exemplar-storage"),
			e2eutil.WithConfig(scrapeConfigExt(w.target, ext, i)), e2eutil.WithFiles(map[string]string{"rules.yml": alertingRules}))
		cfg.Discovery.Static = append(cfg.Discovery.Static, discovery.StaticGroup{Name: fmt.Sprintf("ext%d", i), URLs: []string{p.URL}})
	}
	p := e2eproxy.StartProxy(t, cfg)
	var alerts []alertJSON
	e2eproxy.WaitFor(t, time.Minute, "alerts of both clusters, with their cluster label", func() bool {
		_, body := w.get(t, p.URL, "/api/v1/alerts", nil, "")
		alerts = decodeAlerts(t, body)
		seen := map[string]bool{}
		for _, a := range alerts {
			seen[a.Labels["cluster"]] = true
		}
		return seen["e0"] && seen["e1"]
	})
	shardOf := map[string]string{}
	for i := range alertingSeries {
		for _, s := range alertingSeries[i] {
			shardOf[s.counter["instance"]] = fmt.Sprintf("e%d", i)
		}
	}
	for _, a := range alerts {
		if a.Labels["cluster"] != shardOf[a.Labels["instance"]] || a.Labels["prometheus_replica"] != "" {
			t.Errorf("alert %v: want cluster %s and no replica label", a.Labels, shardOf[a.Labels["instance"]])
		}
	}
	_, body := w.get(t, p.URL, "/api/v1/rules", nil, "")
	for _, g := range decodeRules(t, body).Data.Groups {
		for _, r := range g.Rules {
			if r.Labels["cluster"] == "" || r.Labels["prometheus_replica"] != "" {
				t.Errorf("group %s rule %s: labels %v", g.Name, r.Name, r.Labels)
			}
		}
	}
	e2eproxy.WaitFor(t, time.Minute, "exemplars of cluster e1", func() bool {
		_, body := w.get(t, p.URL, "/api/v1/query_exemplars", url.Values{"query": {`app_requests_total{cluster="e1"}`}}, "")
		return len(decodeExemplars(t, body)) == 3
	})
	_, body = w.get(t, p.URL, "/api/v1/query_exemplars", url.Values{"query": {`app_requests_total{cluster="e1"}`}}, "")
	for _, s := range decodeExemplars(t, body) {
		if s.SeriesLabels["cluster"] != "e1" || s.SeriesLabels["prometheus_replica"] != "" {
			t.Errorf("exemplar series %v: want cluster e1 only, no replica label", s.SeriesLabels)
		}
	}
}
