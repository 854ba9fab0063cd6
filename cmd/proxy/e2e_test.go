package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// fleet is the shared test world: one Prometheus per shard of the generated
// data (mixing the 3.x build the proxy's engine comes from and Debian's
// 2.42), and one reference Prometheus (3.x) holding the union.
type fleet struct {
	data      datagen.Config
	shards    []*e2eutil.Prometheus
	reference *e2eutil.Prometheus
}

// shardKinds mixes Prometheus versions, as real fleets do.
var shardKinds = []e2eutil.Kind{e2eutil.V3, e2eutil.V2, e2eutil.V3}

func openMetrics(t testing.TB, cfg datagen.Config, shard int, keep func(labels.Labels) bool) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	if err := datagen.WriteOpenMetrics(&buf, cfg, shard, keep); err != nil {
		t.Fatalf("datagen: %v", err)
	}
	return &buf
}

func startFleet(t testing.TB) *fleet {
	t.Helper()
	f := &fleet{data: datagen.DefaultConfig()}
	f.shards = make([]*e2eutil.Prometheus, f.data.Shards())
	for i := range f.shards {
		f.shards[i] = e2eutil.StartPrometheus(t, shardKinds[i%len(shardKinds)], openMetrics(t, f.data, i, nil), e2eutil.WithName(f.data.Clusters[i]))
	}
	f.reference = e2eutil.StartPrometheus(t, e2eutil.V3, openMetrics(t, f.data, -1, nil), e2eutil.WithName("reference"))
	return f
}

// staticConfig points the proxy at the fleet, one group per shard.
func (f *fleet) staticConfig() []discovery.StaticGroup {
	var gs []discovery.StaticGroup
	for i, p := range f.shards {
		gs = append(gs, discovery.StaticGroup{Name: f.data.Clusters[i], URLs: []string{p.URL}})
	}
	return gs
}

// proxyUnderTest is an in-process proxy listening on 127.0.0.1.
type proxyUnderTest struct {
	URL string
	// ManagementURL is the management listener's, when configured.
	ManagementURL string
	app           *app
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

// Bytes is a copy of what was written so far.
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.Buffer.Bytes())
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func startProxy(t testing.TB, cfg Config) *proxyUnderTest {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("PROXY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	p, _ := startProxyLogging(t, cfg, level)
	return p
}

// startProxyLogging starts the proxy in-process on 127.0.0.1 with its log
// kept at level, and returns the log so tests can read what it writes.
func startProxyLogging(t testing.TB, cfg Config, level slog.Level) (*proxyUnderTest, *syncBuffer) {
	t.Helper()
	if err := cfg.validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := newApp(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mgmt net.Listener
	mgmtURL := ""
	if cfg.Server.ManagementAddress != "" {
		// Whatever the configured address, tests listen on loopback.
		if mgmt, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		mgmtURL = "http://" + mgmt.Addr().String()
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln, mgmt) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy serve: %v", err)
		}
		a.Close()
		if t.Failed() {
			t.Logf("proxy log:\n%s", clip(logs.Bytes()))
		}
	})
	scheme := "http"
	if cfg.Server.TLS.CertFile != "" {
		scheme = "https"
	}
	return &proxyUnderTest{URL: scheme + "://" + ln.Addr().String(), ManagementURL: mgmtURL, app: a}, logs
}

func baseConfig(f *fleet) Config {
	cfg := defaultConfig()
	cfg.Discovery.Static = f.staticConfig()
	cfg.Proxy.EnableRequestLogging = false
	return cfg
}

// TestE2E runs every end-to-end scenario against one shared fleet, since
// starting real servers is the expensive part.
func TestE2E(t *testing.T) {
	f := startFleet(t)
	t.Run("QueryPathEqualsReference", func(t *testing.T) { testQueryPath(t, f) })
	t.Run("OnlyPrometheus2Backends", func(t *testing.T) { testOnlyV2(t, f) })
	t.Run("UnroutedPaths", func(t *testing.T) { testUnroutedPaths(t, f) })
	t.Run("MissingShardIsNoticed", func(t *testing.T) { testMissingShardIsNoticed(t, f) })
	t.Run("Tenancy", func(t *testing.T) { testTenancy(t, f) })
	t.Run("TenancyRuleChanges", func(t *testing.T) { testTenancyRuleChanges(t, f) })
	t.Run("TenancyCrossNamespaceAllowed", func(t *testing.T) { testCrossNamespaceAllowed(t, f) })
	t.Run("CacheMemory", func(t *testing.T) { testCacheMemory(t, f) })
	t.Run("CacheRedis", func(t *testing.T) { testCacheRedis(t, f) })
	t.Run("CacheSlidingWindow", func(t *testing.T) { testCacheSlidingWindow(t, f) })
	t.Run("CachePolicyChange", func(t *testing.T) { testCachePolicyChange(t, f) })
	t.Run("Doors", func(t *testing.T) { testDoors(t, f) })
}

func testQueryPath(t *testing.T, f *fleet) {
	p := startProxy(t, baseConfig(f))
	n := runSuite(t, f.reference.URL, p.URL, suiteRequests(f.data), nil)
	t.Logf("%d requests (%d PromQL expressions) compared with the reference", n, len(suiteExprs))
}

// testOnlyV2 reads all data through 2.42 backends: remote read must work
// with the old version alone, too.
func testOnlyV2(t *testing.T, f *fleet) {
	var groups []discovery.StaticGroup
	for i := range f.data.Shards() {
		p := e2eutil.StartPrometheus(t, e2eutil.V2, openMetrics(t, f.data, i, nil), e2eutil.WithName("v2-"+f.data.Clusters[i]))
		groups = append(groups, discovery.StaticGroup{Name: f.data.Clusters[i], URLs: []string{p.URL}})
	}
	cfg := baseConfig(f)
	cfg.Discovery.Static = groups
	p := startProxy(t, cfg)
	var reqs []apiRequest
	for _, r := range suiteRequests(f.data) {
		if strings.HasPrefix(r.path, "/api/v1/query") {
			reqs = append(reqs, r)
		}
	}
	runSuite(t, f.reference.URL, p.URL, reqs, nil)
}

func testUnroutedPaths(t *testing.T, f *fleet) {
	p := startProxy(t, baseConfig(f))
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
func testMissingShardIsNoticed(t *testing.T, f *fleet) {
	cfg := baseConfig(f)
	cfg.Discovery.Static = cfg.Discovery.Static[:2]
	p := startProxy(t, cfg)
	differ := 0
	reqs := suiteRequests(f.data)
	for _, r := range reqs {
		if diffAnswers(t, doRequest(t, f.reference.URL, r), doRequest(t, p.URL, r)) != "" {
			differ++
		}
	}
	if differ < len(reqs)/3 {
		t.Errorf("without one shard only %d of %d answers differ from the reference", differ, len(reqs))
	}
}
