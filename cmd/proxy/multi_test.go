//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// proxyProc is the proxy as a real process (this test binary re-executed,
// see TestMain), so that it can be sent SIGTERM like a pod.
type proxyProc struct {
	t      *testing.T
	name   string
	config string
	port   int
	URL    string
	log    *e2eproxy.SyncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

func startProxyProc(t *testing.T, name, config string) *proxyProc {
	t.Helper()
	p := &proxyProc{t: t, name: name, config: config, port: e2eutil.FreePort(t), log: &e2eproxy.SyncBuffer{}}
	p.URL = "http://127.0.0.1:" + strconv.Itoa(p.port)
	t.Cleanup(func() {
		p.mu.Lock()
		cmd, done := p.cmd, p.done
		p.mu.Unlock()
		if cmd != nil {
			_ = cmd.Process.Kill()
			if err := <-done; err != nil && t.Failed() {
				t.Logf("proxy %s: %v", name, err)
			}
		}
		if t.Failed() {
			t.Logf("proxy %s log:\n%s", name, e2eproxy.Clip(p.log.Bytes()))
		}
	})
	p.start()
	return p
}

// start runs the process and waits until /ready answers 200.
func (p *proxyProc) start() {
	p.t.Helper()
	self, err := os.Executable()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(self, "-config", p.config, "-listen-address", "127.0.0.1:"+strconv.Itoa(p.port), "-log-level", "info")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start proxy %s: %v", p.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	e2eutil.Eventually(p.t, 60*time.Second, "proxy "+p.name+" ready", func() error {
		select {
		case err := <-done:
			done <- err
			if err == nil {
				return errors.New("exited")
			}
			return fmt.Errorf("exited: %w", err)
		default:
		}
		resp, err := http.Get(p.URL + "/ready")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready: HTTP %d", resp.StatusCode)
		}
		return nil
	})
}

// term sends SIGTERM, checks that /ready fails while the proxy still
// serves (the drain), and waits for a clean exit.
func (p *proxyProc) term() {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	e2eutil.Eventually(p.t, 900*time.Millisecond, "proxy "+p.name+" fails /ready while draining", func() error {
		resp, err := http.Get(p.URL + "/ready")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
			return fmt.Errorf("/ready: HTTP %d %s", resp.StatusCode, body)
		}
		return nil
	})
	select {
	case err := <-done:
		if err != nil {
			p.t.Errorf("proxy %s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		p.t.Fatalf("proxy %s still running 60s after SIGTERM", p.name)
	}
}

func (p *proxyProc) metric(name string, fragments ...string) float64 {
	p.t.Helper()
	return e2eproxy.MetricSum(p.t, &e2eproxy.Proxy{URL: p.URL}, name, fragments...)
}

func (p *proxyProc) reads() float64 {
	return p.metric("prometheus_proxy_backend_requests_total", `kind="read"`)
}

func (p *proxyProc) cacheResult(result string) float64 {
	return p.metric("prometheus_proxy_cache_requests_total", `result="`+result+`"`)
}

// writeProxyConfig writes a proxy configuration over the given backends
// (one group per shard) with the given cache section (none: no cache).
func writeProxyConfig(t *testing.T, f *e2eproxy.Fleet, backends []string, cacheYAML string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("discovery:\n  static:\n")
	for i, u := range backends {
		fmt.Fprintf(&b, "    - name: %s\n      urls: [%q]\n", f.Data.Clusters[i], u)
	}
	fmt.Fprintf(&b, "proxy:\n  enable_caching: %t\n  enable_request_logging: false\n", cacheYAML != "")
	b.WriteString("server:\n  drain_delay: 1s\n  shutdown_timeout: 30s\n")
	b.WriteString(cacheYAML)
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// sharedCacheYAML: both proxies sign with the same key under one prefix.
func sharedCacheYAML(redis string) string {
	return "cache:\n  backend: redis\n  split_interval: 10m\n  key_prefix: 'e2e:'\n" +
		"  signing_key: '" + strings.Repeat("k", 32) + "'\n" +
		"  redis:\n    timeout: 1s\n" + redis
}

// dashboard is a set of panels whose answers are all settled and
// cacheable, so that a warm dashboard needs no backend read at all.
func dashboard(cfg datagen.Config) []e2eproxy.APIRequest {
	start, end := cfg.Start.Add(10*time.Minute), cfg.Start.Add(110*time.Minute)
	exprs := []string{
		`sum by (namespace) (rate(http_requests_total[5m]))`,
		`sum by (cluster) (rate(http_requests_total[5m]))`,
		`topk(3, sum by (namespace, job) (rate(http_requests_total[5m])))`,
		`max by (namespace) (memory_usage_bytes)`,
		`count by (__name__) ({__name__=~".+"})`,
	}
	var out []e2eproxy.APIRequest
	for _, e := range exprs {
		for _, step := range []string{"60", "120"} {
			out = append(out, e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{
				"query": {e}, "start": {e2eproxy.FormatTime(start)}, "end": {e2eproxy.FormatTime(end)}, "step": {step},
			}})
		}
		out = append(out, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{
			"query": {e}, "time": {e2eproxy.FormatTime(cfg.Start.Add(time.Hour))},
		}})
	}
	return out
}

// answered is a dashboard with the reference's answers.
type answered struct {
	reqs []e2eproxy.APIRequest
	want []e2eproxy.APIAnswer
}

func referenceAnswers(t *testing.T, f *e2eproxy.Fleet, reqs []e2eproxy.APIRequest) answered {
	t.Helper()
	a := answered{reqs: reqs}
	for _, r := range reqs {
		w := e2eproxy.DoRequest(t, f.Reference.URL, r)
		if w.Code != http.StatusOK || !e2eproxy.HasData(t, w) {
			t.Fatalf("reference: %s: HTTP %d %s", r, w.Code, e2eproxy.Clip(w.Body))
		}
		a.want = append(a.want, w)
	}
	return a
}

// check asks every panel through p and compares with the reference.
func (a answered) check(t *testing.T, base, what string) {
	t.Helper()
	for i, r := range a.reqs {
		e2eproxy.CompareAnswers(t, what+": "+r.String(), a.want[i], e2eproxy.DoRequest(t, base, r))
	}
}

// tryRequest is e2eproxy.DoRequest without failing the test: for load loops.
func tryRequest(client *http.Client, base string, r e2eproxy.APIRequest) (e2eproxy.APIAnswer, error) {
	req, err := e2eproxy.NewAPIRequest(base, r)
	if err != nil {
		return e2eproxy.APIAnswer{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return e2eproxy.APIAnswer{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return e2eproxy.APIAnswer{Code: resp.StatusCode, Body: body}, err
}

// load asks the panels over and over through the bases, by workers, until
// stop is closed; every request is asked once (no retry) and counted as
// failed unless its answer equals the reference.
type load struct {
	answered atomic.Int64
	mu       sync.Mutex
	failures []string
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLoad(t *testing.T, a answered, bases []string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Timeout: time.Minute}
	for w := range workers {
		l.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				k := i % len(a.reqs)
				got, err := tryRequest(client, bases[i%len(bases)], a.reqs[k])
				var fail string
				switch {
				case err != nil:
					fail = err.Error()
				case got.Code != a.want[k].Code:
					fail = fmt.Sprintf("HTTP %d: %s", got.Code, e2eproxy.Clip(got.Body))
				default:
					fail = e2eproxy.DiffAnswers(t, a.want[k], got)
				}
				l.answered.Add(1)
				if fail != "" {
					l.mu.Lock()
					l.failures = append(l.failures, a.reqs[k].String()+": "+fail)
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

// finish stops the loop and fails the test for any failed request.
func (l *load) finish(t *testing.T, what string) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	n := l.answered.Load()
	t.Logf("%s: %d requests, %d failed", what, n, len(l.failures))
	if n == 0 {
		t.Errorf("%s: the load loop asked nothing", what)
	}
	for i, f := range l.failures {
		if i == 5 {
			t.Errorf("... and %d more", len(l.failures)-5)
			break
		}
		t.Errorf("%s: failed request: %s", what, f)
	}
}

func shardURLs(f *e2eproxy.Fleet) []string {
	var out []string
	for _, s := range f.Shards {
		out = append(out, s.URL)
	}
	return out
}

// TestMultiProxy runs two proxy processes sharing one Redis Cluster or
// Sentinel-managed Redis, and restarts them under load behind a load
// balancer that follows /ready.
func TestMultiProxy(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	t.Run("RedisCluster", func(t *testing.T) { testSharedRedisCluster(t, f) })
	t.Run("RedisSentinel", func(t *testing.T) { testSharedRedisSentinel(t, f) })
	t.Run("RollingRestart", func(t *testing.T) { testRollingRestart(t, f) })
}

// warmAcross: a dashboard warmed through a is answered by b from the cache,
// with no backend read at all, and equal to the reference.
// It returns the backend reads of the cold pass.
func warmAcross(t *testing.T, dash answered, a, b *proxyProc) float64 {
	t.Helper()
	coldReads := a.reads()
	began := time.Now()
	dash.check(t, a.URL, "cold via a")
	cold := time.Since(began)
	coldReads = a.reads() - coldReads
	reads, hits := b.reads(), b.cacheResult("hit")
	began = time.Now()
	dash.check(t, b.URL, "warm via b")
	warm := time.Since(began)
	dr, dh := b.reads()-reads, b.cacheResult("hit")-hits
	t.Logf("cold via a: %.0f backend reads in %s; warm via b: %.0f backend reads, %.0f cache hits in %s (%.1fx faster)",
		coldReads, cold.Round(time.Millisecond), dr, dh, warm.Round(time.Millisecond), float64(cold)/float64(warm))
	if dr != 0 {
		t.Errorf("b read the backends %.0f times for a dashboard a had warmed", dr)
	}
	if dh == 0 {
		t.Error("b hit no cache entry")
	}
	return coldReads
}

// hitsAgain waits until the dashboard, refilled through a, is answered by b
// without a backend read.
func hitsAgain(t *testing.T, dash answered, a, b *proxyProc) {
	t.Helper()
	hits := b.cacheResult("hit")
	e2eutil.Eventually(t, 60*time.Second, "hits again", func() error {
		dash.check(t, a.URL, "refill via a")
		reads := b.reads()
		dash.check(t, b.URL, "via b")
		if d := b.reads() - reads; d != 0 {
			return fmt.Errorf("b read the backends %.0f times", d)
		}
		return nil
	})
	if b.cacheResult("hit") == hits {
		t.Error("no hits after the cache came back")
	}
}

func testSharedRedisCluster(t *testing.T, f *e2eproxy.Fleet) {
	cl := e2eutil.StartRedisCluster(t, 3)
	redisYAML := "    addresses: [" + strings.Join(cl.Addrs(), ", ") + "]\n"
	cfg := writeProxyConfig(t, f, shardURLs(f), sharedCacheYAML(redisYAML))
	a, b := startProxyProc(t, "a", cfg), startProxyProc(t, "b", cfg)
	dash := referenceAnswers(t, f, dashboard(f.Data))

	coldReads := warmAcross(t, dash, a, b)
	per := cl.KeysPerNode()
	t.Logf("keys per master: %v", per)
	for i, n := range per {
		if n <= 0 {
			t.Errorf("master %d holds no key: the dashboard's keys do not spread over the cluster (%v)", i, per)
		}
	}

	bypass := a.cacheResult("bypass") + b.cacheResult("bypass")
	l := startLoad(t, dash, []string{a.URL, b.URL}, 2)
	time.Sleep(time.Second)
	cl.Nodes[1].Kill()
	time.Sleep(3 * time.Second)
	l.finish(t, "master killed mid-run")
	d := a.cacheResult("bypass") + b.cacheResult("bypass") - bypass
	t.Logf("lookups bypassed while a master was down: %.0f", d)
	if d == 0 {
		t.Error("a master was down but no bypass was counted")
	}

	cl.Nodes[1].Restart()
	cl.WaitOK()
	hitsAgain(t, dash, a, b)

	// The miss storm: with the cache emptied (a failover to an empty node,
	// a flush), both proxies asked for the same dashboard at once each
	// compute it, since singleflight is per process.
	for _, n := range cl.Nodes {
		if _, err := n.Do("FLUSHALL"); err != nil {
			t.Fatal(err)
		}
	}
	before := a.reads() + b.reads()
	var wg sync.WaitGroup
	for _, p := range []*proxyProc{a, b} {
		wg.Go(func() { dash.check(t, p.URL, "cold again via "+p.name) })
	}
	wg.Wait()
	storm := a.reads() + b.reads() - before
	t.Logf("cache emptied, dashboard asked through both proxies at once: %.0f backend reads; one cold pass through one proxy: %.0f (%.2fx)", storm, coldReads, storm/coldReads)
	if storm < coldReads {
		t.Errorf("%.0f backend reads for two cold passes, fewer than one cold pass (%.0f)", storm, coldReads)
	}
}

func testSharedRedisSentinel(t *testing.T, f *e2eproxy.Fleet) {
	s := e2eutil.StartRedisSentinel(t)
	redisYAML := "    master_name: " + s.MasterName + "\n    addresses: [" + strings.Join(s.SentinelAddrs(), ", ") + "]\n"
	cfg := writeProxyConfig(t, f, shardURLs(f), sharedCacheYAML(redisYAML))
	a, b := startProxyProc(t, "a", cfg), startProxyProc(t, "b", cfg)
	dash := referenceAnswers(t, f, dashboard(f.Data))

	warmAcross(t, dash, a, b)
	first, err := s.MasterAddr()
	if err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, dash, []string{a.URL, b.URL}, 2)
	time.Sleep(time.Second)
	s.Node(first).Kill()
	e2eutil.Eventually(t, 60*time.Second, "failover", func() error {
		m, err := s.MasterAddr()
		if err != nil {
			return fmt.Errorf("master: %w", err)
		}
		if m == first {
			return fmt.Errorf("master still %q", m)
		}
		return nil
	})
	time.Sleep(time.Second)
	l.finish(t, "master killed, failover")
	hitsAgain(t, dash, a, b)
}

// readyLB sends each request to one of its backends whose /ready answered
// 200 at the last look (every 50ms), as a Kubernetes Service follows
// readiness; it never retries. Each forwarded request gets its own
// connection, as an iptables Service's would.
type readyLB struct {
	URL      string
	backends []*lbBackend
	next     atomic.Int64
	noTarget atomic.Int64
}

type lbBackend struct {
	target   *url.URL
	proxy    *httputil.ReverseProxy
	ready    atomic.Bool
	inflight atomic.Int64
	served   atomic.Int64
}

func startReadyLB(t *testing.T, targets ...string) *readyLB {
	lb := &readyLB{}
	tr := &http.Transport{DisableKeepAlives: true}
	for _, s := range targets {
		u, _ := url.Parse(s)
		b := &lbBackend{target: u, proxy: httputil.NewSingleHostReverseProxy(u)}
		b.proxy.Transport = tr
		lb.backends = append(lb.backends, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for {
			for _, b := range lb.backends {
				resp, err := probe.Get(b.target.String() + "/ready")
				ok := err == nil && resp.StatusCode == http.StatusOK
				if resp != nil {
					_ = resp.Body.Close()
				}
				b.ready.Store(ok)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int64(len(lb.backends))
		start := lb.next.Add(1)
		for i := range n {
			b := lb.backends[(start+i)%n]
			if b.ready.Load() {
				b.inflight.Add(1)
				defer b.inflight.Add(-1)
				b.served.Add(1)
				b.proxy.ServeHTTP(w, r)
				return
			}
		}
		lb.noTarget.Add(1)
		http.Error(w, "no ready backend", http.StatusServiceUnavailable)
	}))
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	lb.URL = srv.URL
	return lb
}

// testRollingRestart: two proxies behind a load balancer that follows
// /ready are restarted one after the other (SIGTERM, exit, start) under a
// steady load; no request fails, none is retried, and requests that were in
// flight at SIGTERM are answered.
func testRollingRestart(t *testing.T, f *e2eproxy.Fleet) {
	// Without a cache every request reaches the backends, so requests are
	// in flight when a proxy is told to stop.
	cfg := writeProxyConfig(t, f, shardURLs(f), "")
	procs := []*proxyProc{startProxyProc(t, "a", cfg), startProxyProc(t, "b", cfg)}
	lb := startReadyLB(t, procs[0].URL, procs[1].URL)
	e2eutil.Eventually(t, 10*time.Second, "load balancer sees both proxies", func() error {
		for i, b := range lb.backends {
			if !b.ready.Load() {
				return fmt.Errorf("backend %d not ready", i)
			}
		}
		return nil
	})
	dash := referenceAnswers(t, f, dashboard(f.Data))
	l := startLoad(t, dash, []string{lb.URL}, 4)
	time.Sleep(time.Second)
	var inflightAtTerm int64
	for i, p := range procs {
		served := lb.backends[i].served.Load()
		if served == 0 {
			t.Errorf("proxy %s served nothing before its restart", p.name)
		}
		inflight := lb.backends[i].inflight.Load()
		inflightAtTerm += inflight
		began := time.Now()
		p.term()
		t.Logf("proxy %s: SIGTERM with %d requests in flight through it, exited after %s", p.name, inflight, time.Since(began).Round(time.Millisecond))
		p.start()
		e2eutil.Eventually(t, 10*time.Second, "load balancer sees "+p.name+" again", func() error {
			if !lb.backends[i].ready.Load() {
				return fmt.Errorf("not ready")
			}
			return nil
		})
		after := lb.backends[i].served.Load()
		time.Sleep(time.Second)
		if lb.backends[i].served.Load() == after {
			t.Errorf("proxy %s served nothing after its restart", p.name)
		}
	}
	l.finish(t, "rolling restart")
	if n := lb.noTarget.Load(); n > 0 {
		t.Errorf("%d requests found no ready proxy", n)
	}
	if inflightAtTerm == 0 {
		t.Error("no request was in flight at either SIGTERM: the test proved nothing about draining")
	}
}
