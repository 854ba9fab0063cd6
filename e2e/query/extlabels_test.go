package query

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// extFleet is a fleet as prometheus-operator builds them: the series carry
// no cluster label, each Prometheus has it in global.external_labels (with
// prometheus and, for the HA pair, prometheus_replica), and the reference
// holds the union with those labels stored.
type extFleet struct {
	data      datagen.Config
	groups    []discovery.StaticGroup
	pair      []*e2eutil.Prometheus // the HA pair (group 0)
	reference *e2eutil.Prometheus
}

const extPrometheusLabel = "monitoring/k8s"

// shardSeries relabels one shard's series: without the cluster label for a
// backend (stored: false), with the labels its external labels would add
// for the reference (stored: true).
func shardRelabel(cfg datagen.Config, shard int, stored bool) func(labels.Labels) labels.Labels {
	return func(l labels.Labels) labels.Labels {
		b := labels.NewBuilder(l).Del("cluster")
		if stored {
			b.Set("cluster", cfg.Clusters[shard]).Set("prometheus", extPrometheusLabel)
		}
		return b.Labels()
	}
}

// relabeledOpenMetrics writes the series of several shards, each relabeled,
// as one OpenMetrics text (every family once, as OpenMetrics requires).
// keep (nil: all) filters on the relabeled series.
func relabeledOpenMetrics(t testing.TB, cfg datagen.Config, shards []int, stored bool, keep func(labels.Labels) bool) io.Reader {
	t.Helper()
	return writeRelabeled(t, cfg, shards, stored, keep, nil)
}

// relabeledOpenMetricsExtra is the reference's data with more labels
// stored per shard (those a cluster entry of the proxy's config adds).
func relabeledOpenMetricsExtra(t testing.TB, cfg datagen.Config, shards []int, extra map[int]map[string]string) io.Reader {
	t.Helper()
	return writeRelabeled(t, cfg, shards, true, nil, extra)
}

func writeRelabeled(t testing.TB, cfg datagen.Config, shards []int, stored bool, keep func(labels.Labels) bool, extra map[int]map[string]string) io.Reader {
	t.Helper()
	var order []string
	families := map[string]*bytes.Buffer{}
	for _, shard := range shards {
		relabel := shardRelabel(cfg, shard, stored)
		err := datagen.ForEachSeriesSamples(cfg, shard, nil, func(l labels.Labels, ts []int64, vs []float64) error {
			l = relabel(l)
			if len(extra[shard]) > 0 {
				b := labels.NewBuilder(l)
				for k, v := range extra[shard] {
					b.Set(k, v)
				}
				l = b.Labels()
			}
			if keep != nil && !keep(l) {
				return nil
			}
			name := l.Get(model.MetricNameLabel)
			buf := families[name]
			if buf == nil {
				buf = &bytes.Buffer{}
				families[name] = buf
				order = append(order, name)
			}
			var prefix strings.Builder
			prefix.WriteString(name)
			prefix.WriteByte('{')
			first := true
			l.Range(func(lb labels.Label) {
				if lb.Name == model.MetricNameLabel {
					return
				}
				if !first {
					prefix.WriteByte(',')
				}
				first = false
				prefix.WriteString(lb.Name + "=" + strconv.Quote(lb.Value))
			})
			prefix.WriteString("} ")
			for i := range ts {
				buf.WriteString(prefix.String())
				buf.WriteString(strconv.FormatFloat(vs[i], 'g', -1, 64))
				buf.WriteString(" " + strconv.FormatInt(ts[i]/1000, 10) + "." + strconv.FormatInt(1000+ts[i]%1000, 10)[1:] + "\n")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("datagen: %v", err)
		}
	}
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	for _, name := range order {
		_, _ = w.WriteString("# TYPE " + name + " unknown\n")
		_, _ = w.Write(families[name].Bytes())
	}
	_, _ = w.WriteString("# EOF\n")
	_ = w.Flush()
	return &out
}

func allShards(cfg datagen.Config) []int {
	out := make([]int, cfg.Shards())
	for i := range out {
		out[i] = i
	}
	return out
}

// startExtFleet: group 0 is an HA pair (3.x and 2.42, differing only in
// prometheus_replica), group 1 a 2.42, group 2 a 3.x; no group is given
// labels in the proxy's configuration.
func startExtFleet(t testing.TB) *extFleet {
	t.Helper()
	f := &extFleet{data: datagen.DefaultConfig()}
	kinds := [][]e2eutil.Kind{{e2eutil.V3, e2eutil.V2}, {e2eutil.V2}, {e2eutil.V3}}
	for shard, ks := range kinds {
		g := discovery.StaticGroup{Name: "prometheus-" + f.data.Clusters[shard]}
		for replica, kind := range ks {
			ext := map[string]string{"cluster": f.data.Clusters[shard], "prometheus": extPrometheusLabel}
			if len(ks) > 1 {
				ext["prometheus_replica"] = "prometheus-k8s-" + strconv.Itoa(replica)
			}
			p := e2eutil.StartPrometheus(t, kind, relabeledOpenMetrics(t, f.data, []int{shard}, false, nil),
				e2eutil.WithName(g.Name+"-"+strconv.Itoa(replica)), e2eutil.WithExternalLabels(ext))
			g.URLs = append(g.URLs, p.URL)
			if shard == 0 {
				f.pair = append(f.pair, p)
			}
		}
		f.groups = append(f.groups, g)
	}
	f.reference = e2eutil.StartPrometheus(t, e2eutil.V3, relabeledOpenMetrics(t, f.data, allShards(f.data), true, nil), e2eutil.WithName("reference-stored-labels"))
	return f
}

func (f *extFleet) config() app.Config {
	cfg := app.DefaultConfig()
	cfg.Discovery.Static = f.groups
	cfg.Proxy.EnableRequestLogging = false
	return cfg
}

// startExtProxy starts a proxy over the fleet and waits until it has read
// every replica's external labels.
func startExtProxy(t testing.TB, cfg app.Config) *e2eproxy.Proxy {
	t.Helper()
	p := e2eproxy.StartProxy(t, cfg)
	waitExternalLabels(t, p)
	return p
}

func waitExternalLabels(t testing.TB, p *e2eproxy.Proxy) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing := ""
		for _, g := range p.App.Backends().Status() {
			for _, r := range g.Replicas {
				if r.ExternalLabels == nil {
					missing = g.Group + " " + r.URL
				}
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy has not read the external labels of %s", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// extRequests are the requests about external labels: every matcher type
// on cluster, aggregation by it, replica labels, and the label endpoints.
func extRequests(cfg datagen.Config) []e2eproxy.APIRequest {
	instants, ranges := e2eproxy.SuiteTimes(cfg)
	exprs := []string{
		`up{cluster=~"cluster-a|cluster-b"}`,
		`up{cluster!="cluster-a"}`,
		`up{cluster!~"cluster-a|cluster-c"}`,
		`up{cluster=~"cluster-.*"}`,
		`up{cluster=~"cluster-(b|z)"}`,
		`up{cluster=""}`,
		`up{cluster="cluster-b"}`,
		`up{cluster="nowhere"}`,
		`{cluster="cluster-c", __name__=~"memory_.*"}`,
		`count by (cluster) (up)`,
		`count by (cluster, prometheus) ({__name__=~".+"})`,
		`sum by (cluster) (rate(http_requests_total{cluster!~"cluster-c"}[5m]))`,
		`up{prometheus="monitoring/k8s", cluster!=""}`,
		`up{prometheus_replica="prometheus-k8s-0"}`,
		`count(up{prometheus_replica=""})`,
		`count(up{prometheus_replica!~"prometheus-k8s-.*"})`,
		`up{cluster!~"cluster-a.*"} or on () vector(0)`,
		`absent(up{cluster="cluster-d"})`,
	}
	var reqs []e2eproxy.APIRequest
	for i, e := range exprs {
		reqs = append(reqs, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {e}, "time": {e2eproxy.FormatTime(instants[i%len(instants)])}}, Post: i%2 == 0})
		r := ranges[i%len(ranges)]
		reqs = append(reqs, e2eproxy.APIRequest{Path: "/api/v1/query_range", Params: url.Values{
			"query": {e}, "start": {e2eproxy.FormatTime(r.Start)}, "end": {e2eproxy.FormatTime(r.End)}, "step": {strconv.FormatFloat(r.Step.Seconds(), 'f', -1, 64)},
		}})
	}
	start, end := e2eproxy.FormatTime(cfg.Start.Add(20*time.Minute)), e2eproxy.FormatTime(cfg.Start.Add(40*time.Minute))
	for _, ms := range [][]string{
		nil,
		{`up`},
		{`up{cluster=~"cluster-a|cluster-c"}`},
		{`{cluster!="cluster-a", __name__="memory_usage_bytes"}`},
		{`{cluster=~"cluster-b", namespace="team-a"}`, `memory_usage_bytes{cluster!~"cluster-b"}`},
		{`up{cluster=""}`},
		{`up{prometheus_replica="prometheus-k8s-1"}`},
	} {
		p := url.Values{"start": {start}, "end": {end}}
		for _, m := range ms {
			p.Add("match[]", m)
		}
		reqs = append(reqs,
			e2eproxy.APIRequest{Path: "/api/v1/labels", Params: p},
			e2eproxy.APIRequest{Path: "/api/v1/label/cluster/values", Params: p},
			e2eproxy.APIRequest{Path: "/api/v1/label/prometheus/values", Params: p},
			e2eproxy.APIRequest{Path: "/api/v1/label/prometheus_replica/values", Params: p},
			e2eproxy.APIRequest{Path: "/api/v1/label/job/values", Params: p},
		)
		if len(ms) > 0 {
			reqs = append(reqs, e2eproxy.APIRequest{Path: "/api/v1/series", Params: p, Post: true})
		}
	}
	return reqs
}

// TestExternalLabels runs the differential suites over a fleet whose
// cluster label lives only in the backends' external labels.
func TestExternalLabels(t *testing.T) {
	f := startExtFleet(t)
	t.Run("QueryPathEqualsReference", func(t *testing.T) {
		// The shipped configuration pushes down, sums re-associated: within
		// sumsTolerance. The 2.42 group gets nothing sent; the proxy
		// evaluates its parts over its data.
		p := startExtProxy(t, f.config())
		reqs := e2eproxy.SuiteRequests(f.data)
		runSuiteWithin(t, f.reference.URL, p.URL, reqs, nil, len(reqs)/2, sumsTolerance)
		if pushed, byProxy := pushDownCount(t, p, "pushed"), groupEvalCount(t, p, "proxy"); pushed == 0 || byProxy == 0 {
			t.Errorf("pushed %v queries, the 2.42 group's parts evaluated by the proxy %v times; want some of each", pushed, byProxy)
		}
	})
	t.Run("ExternalLabelMatchersEqualReference", func(t *testing.T) {
		p := startExtProxy(t, f.config())
		reqs := extRequests(f.data)
		runSuiteWithin(t, f.reference.URL, p.URL, reqs, nil, 30, sumsTolerance)
		n := len(reqs)
		// The answers must have been about clusters at all.
		a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/label/cluster/values", Params: e2eproxy.AllData(f.data)})
		for _, c := range f.data.Clusters {
			if !strings.Contains(string(a.Body), `"`+c+`"`) {
				t.Errorf("/api/v1/label/cluster/values lacks %s: %s", c, a.Body)
			}
		}
		t.Logf("%d requests on external labels compared", n)
	})
	t.Run("DebugTargetsShowExternalLabels", func(t *testing.T) {
		p := startExtProxy(t, f.config())
		for _, g := range p.App.Backends().Status() {
			if g.ExternalLabels["cluster"] == "" || g.ExternalLabels["prometheus_replica"] != "" {
				t.Errorf("group %s shows external labels %v; want cluster and no replica label", g.Group, g.ExternalLabels)
			}
			if g.ExternalLabelsConflict != "" {
				t.Errorf("group %s: unexpected conflict %s", g.Group, g.ExternalLabelsConflict)
			}
		}
	})
	t.Run("HAPairByteIdentical", func(t *testing.T) { testHAPairByteIdentical(t, f) })
	t.Run("Tenancy", func(t *testing.T) { testExtTenancy(t, f) })
	t.Run("GroupOwnHTTPClientAndPathPrefix", func(t *testing.T) { testGroupHTTPClient(t, f) })
}

// testHAPairByteIdentical: with round-robin over the HA pair, 20 identical
// queries in a row give byte-identical JSON; without replica labels the same
// run shows the flapping legend (the negative control).
func testHAPairByteIdentical(t *testing.T, f *extFleet) {
	at := e2eproxy.FormatTime(f.data.Start.Add(45 * time.Minute))
	reqs := []e2eproxy.APIRequest{
		{Path: "/api/v1/query", Params: url.Values{"query": {`up`}, "time": {at}}},
		{Path: "/api/v1/query_range", Params: url.Values{"query": {`rate(http_requests_total{cluster="cluster-a"}[5m])`},
			"start": {e2eproxy.FormatTime(f.data.Start.Add(10 * time.Minute))}, "end": {e2eproxy.FormatTime(f.data.Start.Add(60 * time.Minute))}, "step": {"60"}}},
		{Path: "/api/v1/series", Params: url.Values{"match[]": {`up`}, "start": {at}, "end": {at}}},
	}
	run := func(cfg app.Config) (identical bool, replicasUsed int) {
		p := startExtProxy(t, cfg)
		identical = true
		for _, r := range reqs {
			first := e2eproxy.DoRequest(t, p.URL, r)
			if first.Code != http.StatusOK || !e2eproxy.HasData(t, first) {
				t.Fatalf("%s: HTTP %d %s", r, first.Code, e2eproxy.Clip(first.Body))
			}
			for i := 1; i < 20; i++ {
				if got := e2eproxy.DoRequest(t, p.URL, r); !bytes.Equal(got.Body, first.Body) {
					identical = false
					t.Logf("%s: answer %d differs:\n%s\nfirst:\n%s", r, i, e2eproxy.Clip(got.Body), e2eproxy.Clip(first.Body))
					break
				}
			}
		}
		metrics := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/metrics"})
		for _, rp := range f.pair {
			if bytes.Contains(metrics.Body, []byte(`backend="`+rp.URL+`"`)) {
				replicasUsed++
			}
		}
		return identical, replicasUsed
	}
	cfg := f.config()
	cfg.Proxy.EnableCaching = false
	identical, used := run(cfg)
	if !identical {
		t.Error("answers through the HA pair are not byte-identical")
	}
	if used != 2 {
		t.Errorf("round-robin used %d of the pair's replicas; the test needs both", used)
	}
	cfg.Discovery.ReplicaLabels = []string{}
	if identical, _ := run(cfg); identical {
		t.Error("negative control: with no replica labels the pair's answers should alternate between replicas")
	}
}

// testExtTenancy: tenant rules naming the external label cluster (in
// labelSelectors and in a selector) give what a Prometheus holding only
// the tenant's series (labels stored) gives.
//
// No tenant here sees split series from cluster-b alone: that shard holds
// only their second half, and Prometheus' label endpoints answer from block
// indexes, not samples, so the oracle (one block over the whole time) would
// name them in an early window where the tenant's series (answered from
// the backends' series endpoint) have no sample.
func testExtTenancy(t *testing.T, f *extFleet) {
	dir := t.TempDir()
	files := map[string]string{
		"team-a.yaml": `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: cluster-c-only, namespace: team-a}
spec:
  source: team-a
  labelSelectors: {cluster: cluster-c}
  metrics: [up, http_requests_total, memory_usage_bytes, http_request_duration_seconds]
`,
		"team-b.yaml": `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: not-cluster-a, namespace: team-b}
spec:
  source: team-b
  metrics:
    - '{__name__=~"memory_.*|up", cluster!="cluster-b"}'
    - '{__name__="http_requests_total", cluster=~"cluster-a|cluster-c"}'
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := f.config()
	cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
	cfg.Tenants.AdminNamespaces = []string{"monitoring"}
	p := startExtProxy(t, cfg)
	reqs := append(e2eproxy.SuiteRequests(f.data), extRequests(f.data)...)
	for _, ns := range []string{"team-a", "team-b"} {
		t.Run(ns, func(t *testing.T) {
			pol, err := p.App.Tenants().Policy(ns)
			if err != nil {
				t.Fatal(err)
			}
			oracle := extOracle(t, f, ns, pol)
			runSuiteWithin(t, oracle.URL, p.URL, reqs, e2eproxy.TenantHeader(ns), 40, sumsTolerance)
		})
	}
	// Tenants that are clusters: tenants.namespace_label names the external
	// label, so spec.source is decided against each group's cluster.
	t.Run("source-is-external-label", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cluster-c.yaml"), []byte(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: own-cluster, namespace: cluster-c}
spec:
  source: cluster-c
  metrics: [up, memory_usage_bytes, 'http_.*']
`), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := f.config()
		cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
		cfg.Tenants.NamespaceLabel = "cluster"
		p := startExtProxy(t, cfg)
		pol, err := p.App.Tenants().Policy("cluster-c")
		if err != nil {
			t.Fatal(err)
		}
		oracle := extOracle(t, f, "cluster-c", pol)
		runSuiteWithin(t, oracle.URL, p.URL, reqs, e2eproxy.TenantHeader("cluster-c"), 40, sumsTolerance)
	})
}

func extOracle(t testing.TB, f *extFleet, ns string, pol *tenancy.Policy) *e2eutil.Prometheus {
	t.Helper()
	return e2eutil.StartPrometheus(t, e2eutil.V3, relabeledOpenMetrics(t, f.data, allShards(f.data), true, pol.Matches), e2eutil.WithName("oracle-"+ns))
}

// backendFront is a reverse proxy in front of one real Prometheus, as a
// gateway in front of a hosted Prometheus or Mimir tenant would be. It
// serves the backend under prefix and, when token is set, only to requests
// carrying it (and header X-Scope-OrgID: orgID).
type backendFront struct {
	URL                string
	authorized, denied atomic.Int64
	withAuthorization  atomic.Int64 // requests that carried any Authorization header
}

func startBackendFront(t testing.TB, backend, prefix, token, orgID string) *backendFront {
	t.Helper()
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	bf := &backendFront{}
	rev := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
			pr.Out.Header.Del("Authorization")
		},
		FlushInterval: -1, // remote read streams
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			bf.withAuthorization.Add(1)
		}
		if !strings.HasPrefix(r.URL.Path, prefix+"/") {
			bf.denied.Add(1)
			http.Error(w, "not under "+prefix, http.StatusNotFound)
			return
		}
		if token != "" && (r.Header.Get("Authorization") != "Bearer "+token || r.Header.Get("X-Scope-OrgID") != orgID) {
			bf.denied.Add(1)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		bf.authorized.Add(1)
		e2eproxy.ForwardBuffered(w, r, rev)
	}))
	t.Cleanup(srv.Close)
	bf.URL = srv.URL
	return bf
}

// testGroupHTTPClient: one group sits behind an authenticating gateway
// under a path prefix and is configured (in YAML, as a user would) with its
// own bearer token file and header; another sits behind a gateway that only
// records what it is sent. Answers equal the reference; the token goes to
// its group only.
func testGroupHTTPClient(t *testing.T, f *extFleet) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	guarded := startBackendFront(t, f.groups[2].URLs[0], "/prometheus", "s3cret", "tenant-1")
	open := startBackendFront(t, f.groups[1].URLs[0], "/prom", "", "")
	config := fmt.Sprintf(`discovery:
  health_check_interval: 1s
  static:
    - name: %s
      urls: [%q, %q]
    - name: %s
      urls: [%q]
      path_prefix: /prom
    - name: %s
      urls: [%q]
      path_prefix: /prometheus
      http_client:
        authorization: {credentials_file: %q}
        http_headers:
          X-Scope-OrgID: {values: [tenant-1]}
proxy:
  enable_request_logging: false
`, f.groups[0].Name, f.groups[0].URLs[0], f.groups[0].URLs[1], f.groups[1].Name, open.URL, f.groups[2].Name, guarded.URL, tokenFile)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p := startExtProxy(t, cfg)
	reqs := append(e2eproxy.SuiteRequests(f.data), extRequests(f.data)...)
	runSuiteWithin(t, f.reference.URL, p.URL, reqs, nil, len(reqs)/2, sumsTolerance)
	if guarded.authorized.Load() == 0 || guarded.denied.Load() != 0 {
		t.Errorf("guarded group: %d authorized, %d denied requests; want all authorized", guarded.authorized.Load(), guarded.denied.Load())
	}
	if open.withAuthorization.Load() != 0 || open.denied.Load() != 0 || open.authorized.Load() == 0 {
		t.Errorf("other group: %d requests with credentials, %d outside the prefix, %d served; want none, none, some",
			open.withAuthorization.Load(), open.denied.Load(), open.authorized.Load())
	}
}
