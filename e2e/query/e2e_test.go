// Package query tests the query path end to end: answers equal to one
// Prometheus holding all data, external labels, push-down, several
// Kubernetes clusters; and benchmarks it against the reference.
package query

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// TestE2E runs the query path's scenarios against one shared fleet, since
// starting real servers is the expensive part.
func TestE2E(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	t.Run("QueryPathEqualsReference", func(t *testing.T) { testQueryPath(t, f) })
	t.Run("OnlyPrometheus2Backends", func(t *testing.T) { testOnlyV2(t, f) })
	t.Run("UnroutedPaths", func(t *testing.T) { testUnroutedPaths(t, f) })
	t.Run("MissingShardIsNoticed", func(t *testing.T) { testMissingShardIsNoticed(t, f) })
}

func testQueryPath(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, e2eproxy.BaseConfig(f))
	reqs := e2eproxy.SuiteRequests(f.Data)
	n := e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
	t.Logf("%d requests (%d PromQL expressions) compared with the reference", n, len(e2eproxy.SuiteExprs))
	// The suites ask for plain answers; Grafana asks for gzip. A sample of
	// the suite asked that way answers gzipped and the same.
	gzipped := http.Header{"Accept-Encoding": {"gzip"}}
	for i := 0; i < len(reqs); i += 7 {
		r := reqs[i]
		want := e2eproxy.DoRequest(t, f.Reference.URL, r)
		r.Header = gzipped
		got := e2eproxy.DoRequest(t, p.URL, r)
		if got.Encoding != "gzip" {
			t.Errorf("%s: Content-Encoding %q, want gzip", r, got.Encoding)
		}
		e2eproxy.CompareAnswers(t, "gzip: "+r.String(), want, got)
	}
}

// testOnlyV2 reads all data through 2.42 backends: remote read must work
// with the old version alone, too.
func testOnlyV2(t *testing.T, f *e2eproxy.Fleet) {
	var groups []discovery.StaticGroup
	for i := range f.Data.Shards() {
		p := e2eutil.StartPrometheus(t, e2eutil.V2, e2eproxy.OpenMetrics(t, f.Data, i, nil), e2eutil.WithName("v2-"+f.Data.Clusters[i]))
		groups = append(groups, discovery.StaticGroup{Name: f.Data.Clusters[i], URLs: []string{p.URL}})
	}
	cfg := e2eproxy.BaseConfig(f)
	cfg.Discovery.Static = groups
	p := e2eproxy.StartProxy(t, cfg)
	var reqs []e2eproxy.APIRequest
	for _, r := range e2eproxy.SuiteRequests(f.Data) {
		if strings.HasPrefix(r.Path, "/api/v1/query") {
			reqs = append(reqs, r)
		}
	}
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
}

func testUnroutedPaths(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, e2eproxy.BaseConfig(f))
	for _, path := range []string{
		"/api/v1/read", "/api/v1/write", "/api/v1/admin/tsdb/delete_series", "/api/v1/admin/tsdb/snapshot",
		"/api/v1/targets", "/api/v1/status/config", "/api/v1/status/flags",
		"/api/v1/status/tsdb", "/federate", "/api/v1/otlp/v1/metrics", "/graph", "/-/quit", "/api/v1/notifications",
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, p.URL+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: HTTP %d, want 404: %s", method, path, resp.StatusCode, body)
			}
			if !strings.Contains(string(body), `"status":"error"`) {
				t.Errorf("%s %s: not a Prometheus JSON error: %s", method, path, body)
			}
		}
	}
}

// testMissingShardIsNoticed is the suite's negative control: a proxy that
// lacks one shard must be caught by the comparison.
func testMissingShardIsNoticed(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.BaseConfig(f)
	cfg.Discovery.Static = cfg.Discovery.Static[:2]
	p := e2eproxy.StartProxy(t, cfg)
	differ := 0
	reqs := e2eproxy.SuiteRequests(f.Data)
	for _, r := range reqs {
		if e2eproxy.DiffAnswers(t, e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r)) != "" {
			differ++
		}
	}
	if differ < len(reqs)/3 {
		t.Errorf("without one shard only %d of %d answers differ from the reference", differ, len(reqs))
	}
}
