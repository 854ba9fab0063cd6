//go:build linux

package load

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// Knobs: flags, or the environment when running through `make test`. The
// defaults keep the whole test (servers, build, load) around a minute.
var (
	clients     = flag.Int("load.clients", envInt("LOAD_CLIENTS", 8), "concurrent clients (LOAD_CLIENTS)")
	duration    = flag.Duration("load.duration", envDuration("LOAD_DURATION", 15*time.Second), "how long the clients send (LOAD_DURATION)")
	maxRequests = flag.Int("load.max-requests", envInt("LOAD_MAX_REQUESTS", 200_000), "stop after this many requests (LOAD_MAX_REQUESTS)")
	maxRSSMiB   = flag.Int("load.max-rss-mib", envInt("LOAD_MAX_RSS_MIB", 1024), "fail when the proxy's peak RSS exceeds this (LOAD_MAX_RSS_MIB)")
	reportPath  = flag.String("load.report", os.Getenv("LOAD_REPORT"), "also write the report as JSON to this file (LOAD_REPORT)")
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Report is what one run measured.
type Report struct {
	Clients        int     `json:"clients"`
	Seconds        float64 `json:"seconds"`
	Requests       int     `json:"requests"`
	Failed         int     `json:"failed"`
	QPS            float64 `json:"qps"`
	P50Millis      float64 `json:"p50_ms"`
	P90Millis      float64 `json:"p90_ms"`
	P99Millis      float64 `json:"p99_ms"`
	MaxMillis      float64 `json:"max_ms"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	PeakHeapMiB    float64 `json:"peak_heap_inuse_mib"`
	KilledAfterSec float64 `json:"replica_killed_after_s"`
	KilledReplica  string  `json:"killed_replica"`
	// FailedOver is how many backend calls met the killed replica and were
	// retried on its partner.
	FailedOver int      `json:"calls_failed_over"`
	Failures   []string `json:"failures,omitempty"`
}

// TestLoad starts three groups of two real Prometheus replicas each (one
// built from the engine's module version, one Debian 2.42), the proxy binary
// in front, and N clients sending a mix of queries for M seconds. Half way,
// one replica is killed. Every answer must be complete and equal to the
// answer given before the load started.
func TestLoad(t *testing.T) {
	data := datagen.DefaultConfig()
	var groups [][]*e2eutil.Prometheus
	for shard, cluster := range data.Clusters {
		var replicas []*e2eutil.Prometheus
		for i, kind := range []e2eutil.Kind{e2eutil.V3, e2eutil.V2} {
			om := datagen.Reader(data, shard, nil)
			replicas = append(replicas, e2eutil.StartPrometheus(t, kind, om, e2eutil.WithName(fmt.Sprintf("%s-%d", cluster, i))))
			_ = om.Close()
		}
		groups = append(groups, replicas)
	}
	proxy := startProxyBinary(t, data.Clusters, groups)
	work := workload(data)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *clients, MaxConnsPerHost: *clients}}
	t.Cleanup(client.CloseIdleConnections)

	// What each request must answer, every time: asked before the load,
	// with every replica up.
	want := make([]answer, len(work))
	for i, w := range work {
		a, err := send(client, proxy.url, w)
		if err != nil || a.problem() != "" {
			t.Fatalf("%s before the load: %v %s", w, err, a.problem())
		}
		want[i] = a
	}

	victim := groups[1][0]
	rep := run(t, client, proxy, work, want, func() { victim.Kill() })
	rep.KilledReplica = victim.URL
	rep.FailedOver = int(proxy.metricSum(client, "prometheus_proxy_backend_requests_total", `backend="`+victim.URL+`"`, `result="error"`))

	out, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("load report:\n%s", out)
	fmt.Printf("load: %d clients, %.0fs, %d requests, %d failed, %.1f QPS, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms, peak RSS %.1f MiB, peak heap in use %.1f MiB; replica %s killed after %.1fs, %d calls failed over\n",
		rep.Clients, rep.Seconds, rep.Requests, rep.Failed, rep.QPS, rep.P50Millis, rep.P90Millis, rep.P99Millis, rep.MaxMillis, rep.PeakRSSMiB, rep.PeakHeapMiB, rep.KilledReplica, rep.KilledAfterSec, rep.FailedOver)
	if *reportPath != "" {
		if err := os.WriteFile(*reportPath, append(out, '\n'), 0o644); err != nil {
			t.Error(err)
		}
	}

	// Answers stream: a read of the killed replica that had already handed
	// series to the engine cannot fail over within the read, so its query
	// is evaluated once more with that replica tried last. No answer may
	// fail or differ.
	if rep.Failed != 0 || len(rep.Failures) != 0 {
		t.Errorf("%d of %d answers failed (%d recorded); first ones:\n%s", rep.Failed, rep.Requests, len(rep.Failures), strings.Join(rep.Failures, "\n"))
	}
	t.Logf("queries evaluated again after a stream broke off: %.0f", proxy.metricSum(client, "prometheus_proxy_reevaluations_total"))
	if rep.Requests < *clients {
		t.Errorf("only %d requests in %.0fs", rep.Requests, rep.Seconds)
	}
	if rep.PeakRSSMiB > float64(*maxRSSMiB) {
		t.Errorf("peak RSS %.0f MiB is over the bound of %d MiB", rep.PeakRSSMiB, *maxRSSMiB)
	}
	if rep.KilledAfterSec > 0 && rep.FailedOver == 0 {
		t.Error("no backend call met the killed replica: failover under load was not exercised")
	}
	if st := replicaHealthy(t, client, proxy.url, victim.URL); st {
		t.Errorf("the killed replica %s is still reported healthy in /debug/targets", victim.URL)
	}
}

// request is one API call of the workload.
type request struct {
	path   string
	params url.Values
	post   bool
}

func (r request) String() string {
	m := "GET"
	if r.post {
		m = "POST"
	}
	return m + " " + r.path + "?" + r.params.Encode()
}

// workload is a mix of what dashboards send: instant and range queries of
// several costs, label values for variables, series lookups.
func workload(data datagen.Config) []request {
	at := func(d time.Duration) string {
		return strconv.FormatInt(data.Start.Add(d).Unix(), 10)
	}
	rng := func(q string, from, to time.Duration, step string) request {
		return request{path: "/api/v1/query_range", post: true, params: url.Values{"query": {q}, "start": {at(from)}, "end": {at(to)}, "step": {step}}}
	}
	inst := func(q string, d time.Duration) request {
		return request{path: "/api/v1/query", params: url.Values{"query": {q}, "time": {at(d)}}}
	}
	return []request{
		inst(`up`, time.Hour),
		inst(`sum by (cluster) (rate(http_requests_total[5m]))`, 90*time.Minute),
		inst(`count by (__name__) ({__name__=~".+"})`, time.Hour),
		inst(`topk(3, memory_usage_bytes)`, 100*time.Minute),
		rng(`sum by (namespace, code) (rate(http_requests_total[5m]))`, 30*time.Minute, 90*time.Minute, "60"),
		rng(`histogram_quantile(0.9, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`, 10*time.Minute, 110*time.Minute, "60"),
		rng(`avg by (cluster) (temperature_celsius)`, 0, 2*time.Hour, "30"),
		{path: "/api/v1/labels"},
		{path: "/api/v1/label/job/values"},
		{path: "/api/v1/series", params: url.Values{"match[]": {`up{namespace="team-a"}`}}},
	}
}

// answer is a successful, complete answer, or what was wrong with it.
type answer struct {
	code       int
	retryAfter time.Duration
	raw        []byte
	normalized []byte
	warnings   []string
}

func (a answer) problem() string {
	if a.code != http.StatusOK {
		return fmt.Sprintf("HTTP %d: %.300s", a.code, a.raw)
	}
	if len(a.warnings) > 0 {
		return fmt.Sprintf("partial answer: %q", a.warnings)
	}
	return ""
}

// problemOf is what went wrong with a request: the error sending it, or
// what is wrong with its answer ("" for nothing).
func problemOf(a answer, err error) string {
	if err != nil {
		return err.Error()
	}
	return a.problem()
}

func send(c *http.Client, base string, r request) (answer, error) {
	var (
		resp *http.Response
		err  error
	)
	if r.post {
		resp, err = c.PostForm(base+r.path, r.params)
	} else {
		u := base + r.path
		if len(r.params) > 0 {
			u += "?" + r.params.Encode()
		}
		resp, err = c.Get(u)
	}
	if err != nil {
		return answer{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{code: resp.StatusCode, raw: body}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		a.retryAfter = time.Duration(secs) * time.Second
	}
	if a.code == http.StatusOK {
		var env struct {
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return a, fmt.Errorf("not JSON: %w", err)
		}
		a.warnings = env.Warnings
	}
	return a, nil
}

// same reports whether two answers hold the same data. Byte equality is the
// cheap common case; otherwise series order is normalized away.
func same(a, b *answer) bool {
	if bytes.Equal(a.raw, b.raw) {
		return true
	}
	for _, x := range []*answer{a, b} {
		if x.normalized == nil {
			x.normalized = normalize(x.raw)
		}
	}
	return bytes.Equal(a.normalized, b.normalized)
}

func normalize(body []byte) []byte {
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return body
	}
	key := func(x any) string { b, _ := json.Marshal(x); return string(b) }
	switch d := v["data"].(type) {
	case map[string]any:
		if res, ok := d["result"].([]any); ok {
			sort.Slice(res, func(i, j int) bool {
				return key(res[i].(map[string]any)["metric"]) < key(res[j].(map[string]any)["metric"])
			})
		}
	case []any:
		sort.Slice(d, func(i, j int) bool { return key(d[i]) < key(d[j]) })
	}
	out, _ := json.Marshal(v)
	return out
}

// run sends the workload from the clients until the duration or the request
// budget runs out, calling kill half way, and measures as it goes.
func run(t *testing.T, client *http.Client, proxy *proxyProcess, work []request, want []answer, kill func()) Report {
	t.Helper()
	var (
		sent     atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		failures []string
		failed   int
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	start := time.Now()
	deadline := start.Add(*duration)
	killAt := *duration / 2
	killTimer := time.AfterFunc(killAt, kill)
	defer killTimer.Stop()

	var peakHeap atomic.Uint64
	wg.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if h := proxy.heapInUse(client); h > peakHeap.Load() {
				peakHeap.Store(h)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	var clientsWG sync.WaitGroup
	for c := range *clients {
		clientsWG.Go(func() {
			var mine []time.Duration
			for i := c; time.Now().Before(deadline) && sent.Add(1) <= int64(*maxRequests); i++ {
				w := i % len(work)
				t0 := time.Now()
				a, err := send(client, proxy.url, work[w])
				took := time.Since(t0)
				mine = append(mine, took)
				problem := problemOf(a, err)
				if problem == "" && !same(&a, &want[w]) {
					problem = fmt.Sprintf("answer differs from the one before the load: %.300s", a.raw)
				}
				if problem != "" {
					mu.Lock()
					failed++
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("%.1fs %s: %s", time.Since(start).Seconds(), work[w], problem))
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	clientsWG.Wait()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()

	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	rep := Report{
		Clients:        *clients,
		Seconds:        elapsed.Seconds(),
		Requests:       len(lat),
		Failed:         failed,
		QPS:            float64(len(lat)) / elapsed.Seconds(),
		P50Millis:      pct(0.50),
		P90Millis:      pct(0.90),
		P99Millis:      pct(0.99),
		MaxMillis:      pct(1),
		PeakRSSMiB:     float64(proxy.peakRSS(t)) / (1 << 20),
		PeakHeapMiB:    float64(peakHeap.Load()) / (1 << 20),
		KilledAfterSec: killAt.Seconds(),
		Failures:       failures,
	}
	if elapsed < killAt {
		rep.KilledAfterSec = 0 // the request budget ran out first
	}
	return rep
}

// proxyProcess is the proxy binary running on 127.0.0.1.
type proxyProcess struct {
	url  string
	proc *e2ehost.Process
}

// proxyBinary builds the proxy once per test binary (or takes PROXY_BINARY).
func proxyBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("PROXY_BINARY"); bin != "" {
		return bin
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "proxy-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		bin := filepath.Join(dir, "prometheus-multi-tenant-proxy")
		if err := e2ehost.BuildProxy(context.Background(), e2eutil.RepoRoot(t), bin); err != nil {
			built.err = fmt.Errorf("%w (or set PROXY_BINARY)", err)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

var built struct {
	once     sync.Once
	bin, dir string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// startProxyBinary starts the proxy binary with one group per cluster of
// the given replicas. sections are more top-level YAML sections; one
// starting with "proxy:" replaces the default proxy section.
func startProxyBinary(t *testing.T, clusters []string, groups [][]*e2eutil.Prometheus, sections ...string) *proxyProcess {
	t.Helper()
	dir := t.TempDir()
	bin := proxyBinary(t)
	var cfg strings.Builder
	cfg.WriteString("discovery:\n  load_balancing: round-robin\n  health_check_interval: 1s\n  static:\n")
	for i, replicas := range groups {
		fmt.Fprintf(&cfg, "    - name: %s\n      urls:\n", clusters[i])
		for _, p := range replicas {
			fmt.Fprintf(&cfg, "        - %s\n", p.URL)
		}
	}
	proxySection := "proxy:\n  enable_caching: false\n  enable_request_logging: false\n  max_concurrent_requests: 256\n  backend_timeout: 10s\n"
	for _, sec := range sections {
		if strings.HasPrefix(sec, "proxy:") {
			proxySection = ""
		}
	}
	cfg.WriteString(proxySection)
	for _, sec := range sections {
		cfg.WriteString(strings.TrimSuffix(sec, "\n") + "\n")
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &proxyProcess{proc: &e2ehost.Process{Name: "proxy", Path: bin, LogPath: filepath.Join(dir, "proxy.log")}}
	t.Cleanup(func() {
		p.proc.Stop(syscall.SIGTERM, 20*time.Second)
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.proc.LogTail(16<<10))
		}
	})
	err := p.proc.StartOnFreePort(3, func(port int) error {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p.url = "http://" + addr
		p.proc.Args = []string{"--config=" + cfgPath, "--listen-address=" + addr, "--log-level=warn"}
		return nil
	}, 30*time.Second, func() error { return e2ehost.HTTPReady(http.DefaultClient, p.url+"/ready", "")() })
	if err != nil {
		t.Fatal(err) // the log follows at the end of the test
	}
	http.DefaultClient.CloseIdleConnections()
	return p
}

// peakRSS is the proxy's high-water mark of resident memory, in bytes.
func (p *proxyProcess) peakRSS(t *testing.T) uint64 { return p.memory(t, e2ehost.PeakRSS) }

// rss is the proxy's resident memory now, in bytes.
func (p *proxyProcess) rss(t *testing.T) uint64 { return p.memory(t, e2ehost.RSS) }

func (p *proxyProcess) memory(t *testing.T, read func(pid int) (int64, error)) uint64 {
	v, err := read(p.proc.PID())
	if err != nil {
		t.Errorf("proxy memory: %v", err)
	}
	return uint64(v)
}

// heapInUse reads the proxy's go_memstats_heap_inuse_bytes (0 if absent).
func (p *proxyProcess) heapInUse(c *http.Client) uint64 {
	return uint64(p.metricSum(c, "go_memstats_heap_inuse_bytes"))
}

// metricSum adds up the proxy's samples of a metric whose label text holds
// every fragment (0 when the proxy does not answer).
func (p *proxyProcess) metricSum(c *http.Client, name string, fragments ...string) float64 {
	resp, err := c.Get(p.url + "/metrics")
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	sum, _ := e2eutil.SumMetric(resp.Body, name, fragments...)
	return sum
}

// replicaHealthy reads one replica's state from /debug/targets.
func replicaHealthy(t *testing.T, c *http.Client, base, replica string) bool {
	t.Helper()
	resp, err := c.Get(base + "/debug/targets")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var groups []struct {
		Replicas []struct {
			URL     string `json:"url"`
			Healthy bool   `json:"healthy"`
		} `json:"replicas"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&groups); err != nil {
		t.Fatalf("/debug/targets: %v", err)
	}
	for _, g := range groups {
		for _, r := range g.Replicas {
			if r.URL == replica {
				return r.Healthy
			}
		}
	}
	t.Fatalf("/debug/targets does not list %s", replica)
	return false
}
