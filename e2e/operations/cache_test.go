package operations

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cache"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// readRecorder sits between the proxy and one backend and records the time
// range of every remote-read query it forwards.
type readRecorder struct {
	URL string

	mu     sync.Mutex
	ranges [][2]int64
}

func newReadRecorder(t testing.TB, backend string) *readRecorder {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	rec := &readRecorder{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/read" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if raw, err := snappy.Decode(nil, body); err == nil {
				var req prompb.ReadRequest
				if err := req.Unmarshal(raw); err == nil {
					rec.mu.Lock()
					for _, q := range req.Queries {
						rec.ranges = append(rec.ranges, [2]int64{q.StartTimestampMs, q.EndTimestampMs})
					}
					rec.mu.Unlock()
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

// take returns and forgets the recorded ranges.
func (r *readRecorder) take() [][2]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ranges
	r.ranges = nil
	return out
}

func cacheHits(t *testing.T, p *e2eproxy.Proxy) float64 {
	return e2eproxy.MetricSum(t, p, "prometheus_proxy_cache_requests_total", `result="hit"`)
}

func backendReads(t *testing.T, p *e2eproxy.Proxy) float64 {
	return e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total", `kind="read"`)
}

// TestCache runs the results cache's scenarios against one shared fleet,
// since starting real servers is the expensive part.
func TestCache(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	t.Run("CacheMemory", func(t *testing.T) { testCacheMemory(t, f) })
	t.Run("CacheRedis", func(t *testing.T) { testCacheRedis(t, f) })
	t.Run("CacheSlidingWindow", func(t *testing.T) { testCacheSlidingWindow(t, f) })
	t.Run("CachePolicyChange", func(t *testing.T) { testCachePolicyChange(t, f) })
}

// testCacheMemory: cold and warm answers both equal the reference, and warm
// answers come from the cache instead of the backends.
func testCacheMemory(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = true
	p := e2eproxy.StartProxy(t, cfg)
	reqs := e2eproxy.SuiteRequests(f.Data)

	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
	coldReads, coldHits := backendReads(t, p), cacheHits(t, p)
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
	warmReads, warmHits := backendReads(t, p)-coldReads, cacheHits(t, p)-coldHits
	t.Logf("cold: %.0f backend reads; warm: %.0f backend reads, %.0f cache hits", coldReads, warmReads, warmHits)
	if warmHits == 0 {
		t.Fatal("the warm run hit no cache entry")
	}
	if warmReads > coldReads/4 {
		t.Errorf("the warm run read the backends %.0f times, cold %.0f: the cache saved too little", warmReads, coldReads)
	}
}

// testCacheRedis: the same with Redis, and Redis killed between the runs:
// every answer still equals the reference, served from the backends.
func testCacheRedis(t *testing.T, f *e2eproxy.Fleet) {
	redis := e2eutil.StartRedis(t)
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = true
	cfg.Cache.Backend = cache.BackendRedis
	cfg.Cache.Redis.Addresses = []string{redis.Addr}
	cfg.Cache.Redis.Shared = false // this proxy alone: unsigned is allowed
	p := e2eproxy.StartProxy(t, cfg)
	reqs := e2eproxy.SuiteRequests(f.Data)

	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
	hits := cacheHits(t, p)
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
	if cacheHits(t, p) == hits {
		t.Fatal("the warm run hit no Redis entry")
	}
	redis.Kill()
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil) // 0 failed answers without Redis
	if b := e2eproxy.MetricSum(t, p, "prometheus_proxy_cache_requests_total", `result="bypass"`); b == 0 {
		t.Error("Redis was down but no bypass was counted")
	}
}

// testCacheSlidingWindow: a dashboard refresh with the end moved by one step
// reads only the new tail from the backends.
func testCacheSlidingWindow(t *testing.T, f *e2eproxy.Fleet) {
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = true
	var recs []*readRecorder
	for i := range cfg.Discovery.Static {
		rec := newReadRecorder(t, cfg.Discovery.Static[i].URLs[0])
		cfg.Discovery.Static[i].URLs = []string{rec.URL}
		recs = append(recs, rec)
	}
	p := e2eproxy.StartProxy(t, cfg)
	step := time.Minute
	start, end := f.Data.Start.Add(10*time.Minute), f.Data.Start.Add(100*time.Minute)
	query := func(start, end time.Time) e2eproxy.APIRequest {
		return e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{
			"query": {`sum by (namespace) (rate(http_requests_total[5m]))`},
			"start": {e2eproxy.FormatTime(start)}, "end": {e2eproxy.FormatTime(end)}, "step": {"60"},
		}}
	}
	take := func() (n int, earliest int64) {
		earliest = 1 << 62
		for _, r := range recs {
			for _, rg := range r.take() {
				n++
				earliest = min(earliest, rg[0])
			}
		}
		return n, earliest
	}
	for round := range 4 {
		s, e := start.Add(time.Duration(round)*step), end.Add(time.Duration(round)*step)
		r := query(s, e)
		e2eproxy.CompareAnswers(t, r.String(), e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
		n, earliest := take()
		if round == 0 {
			if n == 0 {
				t.Fatal("the cold query read nothing from the backends")
			}
			continue
		}
		// Only the newest point is missing: the engine reads it with its
		// 5m range and the 5m lookback, nothing older.
		tail := e.Add(-11 * time.Minute).UnixMilli()
		if n == 0 || earliest < tail {
			t.Errorf("refresh %d: %d backend reads from %s; want reads of the new tail only (from %s on)",
				round, n, time.UnixMilli(earliest).UTC(), time.UnixMilli(tail).UTC())
		}
	}
}

// testCachePolicyChange: two tenants share no entry, and a changed
// MetricAccess is answered from the new rules at once, never from an entry
// cached under the old ones.
func testCachePolicyChange(t *testing.T, f *e2eproxy.Fleet) {
	dir := e2eproxy.TenantFiles(t)
	cfg := e2eproxy.TenantConfig(f, dir)
	cfg.Proxy.EnableCaching = true
	p := e2eproxy.StartProxy(t, cfg)
	r := e2eproxy.APIRequest{Path: "/api/v1/query_range", Params: url.Values{
		"query": {`count by (__name__) ({__name__=~".+"})`},
		"start": {e2eproxy.FormatTime(f.Data.Start.Add(20 * time.Minute))}, "end": {e2eproxy.FormatTime(f.Data.Start.Add(80 * time.Minute))}, "step": {"120"},
	}}
	ask := func(ns string) e2eproxy.APIAnswer {
		r.Header = e2eproxy.TenantHeader(ns)
		return e2eproxy.DoRequest(t, p.URL, r)
	}
	a1, b1 := ask("team-a"), ask("team-b")
	if a2, b2 := ask("team-a"), ask("team-b"); !bytes.Equal(a1.Body, a2.Body) || !bytes.Equal(b1.Body, b2.Body) {
		t.Fatal("warm answers differ from cold ones")
	}
	if bytes.Equal(a1.Body, b1.Body) {
		t.Fatal("two tenants got the same answer")
	}
	before := p.App.Tenants().Generation()
	extra := strings.Replace(mustRead(t, dir+"/team-a.yaml"), "    - http_requests_total", "    - http_requests_total\n    - memory_usage_bytes", 1)
	writeTenantFile(t, dir+"/team-a.yaml", extra)
	deadline := time.Now().Add(5 * time.Second)
	for p.App.Tenants().Generation() == before {
		if time.Now().After(deadline) {
			t.Fatal("the changed MetricAccess file was not picked up within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a3 := ask("team-a"); bytes.Equal(a3.Body, a1.Body) || !strings.Contains(string(a3.Body), "memory_usage_bytes") {
		t.Errorf("after the policy change team-a got the old answer: %s", e2eproxy.Clip(a3.Body))
	}
	oracle := e2eproxy.OracleFor(t, f, "team-a-changed", e2eproxy.PolicyOf(t, p, "team-a"))
	e2eproxy.CompareAnswers(t, "changed policy", e2eproxy.DoRequest(t, oracle.URL, e2eproxy.APIRequest{Path: r.Path, Params: r.Params}), ask("team-a"))
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeTenantFile replaces a file the way editors and ConfigMap updates do.
func writeTenantFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
