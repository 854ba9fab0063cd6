//go:build linux

package load

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/harness"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

var chunkLimitMiB = envInt("MEM_CHUNK_LIMIT_MIB", 32)

// TestChunkBytesLimitMemory: count_over_time over every series of the bench
// dataset (about 104k series, 6h; the blocks of `make bench`, generated
// into .cache/bench when missing) and the whole window, through a proxy
// with max_fetched_chunk_bytes_per_query. The query must fail with 422
// naming the limit, and the proxy's peak RSS must stay under twice its idle
// RSS plus the limit: the answers are charged while they stream, not after
// they are held whole. MEM_BASELINE=1 also runs the query through a proxy
// without the limit, for comparison: that proxy reads every answer whole,
// then the engine refuses the result (count_over_time drops __name__, so
// series of different metrics collide), as Prometheus itself would.
func TestChunkBytesLimitMemory(t *testing.T) {
	root := e2eutil.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ds, err := harness.PrepareDataset(ctx, filepath.Join(root, ".cache", "bench"), harness.DefaultOptions().DataConfig(), testWriter{t})
	if err != nil {
		t.Fatalf("bench dataset: %v", err)
	}
	cfg := ds.Config
	var groups [][]*e2eutil.Prometheus
	for i, cluster := range cfg.Clusters {
		groups = append(groups, []*e2eutil.Prometheus{e2eutil.StartPrometheus(t, e2eutil.V3, nil, e2eutil.WithName(cluster), e2eutil.WithBlocks(ds.ShardDir(i)))})
	}
	limit := int64(chunkLimitMiB) << 20
	proxy := "proxy:\n  enable_caching: false\n  enable_request_logging: false\n  backend_timeout: 2m\n"
	end := strconv.FormatInt(cfg.Start.Add(cfg.Duration).Unix(), 10)
	window := model(cfg.Duration)
	heavy := request{path: "/api/v1/query", params: url.Values{"query": {`count_over_time({__name__=~".+"}[` + window + `])`}, "time": {end}}}
	light := request{path: "/api/v1/query", params: url.Values{"query": {`count(up{namespace="team-a"})`}, "time": {end}}}
	client := &http.Client{}
	defer client.CloseIdleConnections()

	measure := func(limits string) (idle, peak uint64, a answer, took time.Duration) {
		p := startProxyBinary(t, cfg.Clusters, groups, proxy, limits, "engine:\n  max_samples: 100000000\n  timeout: 2m\n")
		// Idle: started, every group asked once, settled.
		if a, err := send(client, p.url, light); err != nil || a.problem() != "" {
			t.Fatalf("light query: %v %s", err, a.problem())
		}
		time.Sleep(time.Second)
		idle = p.rss(t)
		t0 := time.Now()
		a, err := send(client, p.url, heavy)
		if err != nil {
			t.Fatalf("%s: %v", heavy, err)
		}
		return idle, p.peakRSS(t), a, time.Since(t0)
	}
	idle, peak, a, took := measure(fmt.Sprintf("limits:\n  defaults: {max_fetched_chunk_bytes_per_query: %d}\n", limit))
	bound := 2*idle + uint64(limit)
	t.Logf("dataset %s: %d series, %d samples, %.0f MiB of blocks", ds.Hash, ds.Series, ds.Samples, float64(ds.BlockBytes)/(1<<20))
	t.Logf("with max_fetched_chunk_bytes_per_query=%d (%d MiB): HTTP %d after %v; idle RSS %.1f MiB, peak RSS %.1f MiB, bound 2×idle+limit %.1f MiB",
		limit, chunkLimitMiB, a.code, took.Round(time.Millisecond), mib(idle), mib(peak), mib(bound))
	fmt.Printf("memory: limit %d MiB: HTTP %d in %v, idle RSS %.1f MiB, peak RSS %.1f MiB (bound %.1f MiB)\n", chunkLimitMiB, a.code, took.Round(time.Millisecond), mib(idle), mib(peak), mib(bound))
	want := fmt.Sprintf("max_fetched_chunk_bytes_per_query=%d", limit)
	if a.code != http.StatusUnprocessableEntity || !strings.Contains(string(a.raw), want) || !strings.Contains(string(a.raw), `"errorType":"execution"`) {
		t.Errorf("answer HTTP %d %.300s; want 422 execution naming %s", a.code, a.raw, want)
	}
	if peak >= bound {
		t.Errorf("peak RSS %.1f MiB is not under 2×idle (%.1f MiB) + the limit (%d MiB)", mib(peak), mib(idle), chunkLimitMiB)
	}
	if os.Getenv("MEM_BASELINE") != "" {
		idle, peak, a, took := measure("limits:\n  defaults: {max_fetched_chunk_bytes_per_query: 0}\n")
		t.Logf("without the limit: HTTP %d after %v; idle RSS %.1f MiB, peak RSS %.1f MiB; %.200s", a.code, took.Round(time.Millisecond), mib(idle), mib(peak), a.raw)
		fmt.Printf("memory: no limit: HTTP %d in %v, idle RSS %.1f MiB, peak RSS %.1f MiB\n", a.code, took.Round(time.Millisecond), mib(idle), mib(peak))
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// model renders a duration as PromQL does (whole hours here).
func model(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestPushedAnswerMemory: a pushed query whose answer is many series of
// one point each (count_values over timestamps makes a new series at every
// step; so does any aggregation by pod over days of pod churn), over two
// days at a 60 s step, through a proxy with push-down on. Markers at every
// step would make series × steps points (gigabytes at a 15 s step); the
// proxy must answer, or refuse with 422 naming a limit, with its peak RSS
// under twice its idle RSS plus the byte limit. The query must have been
// pushed: otherwise this measures remote read.
func TestPushedAnswerMemory(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	const days = 2
	var groups [][]*e2eutil.Prometheus
	clusters := []string{"c1", "c2"}
	for _, c := range clusters {
		var om strings.Builder
		om.WriteString("# TYPE m gauge\n")
		for ts := start; ts.Before(start.Add(days * 24 * time.Hour)); ts = ts.Add(time.Minute) {
			fmt.Fprintf(&om, "m{pod=\"p\"} 1 %d\n", ts.Unix())
		}
		om.WriteString("# EOF\n")
		groups = append(groups, []*e2eutil.Prometheus{e2eutil.StartPrometheus(t, e2eutil.V3, strings.NewReader(om.String()),
			e2eutil.WithName("churn-"+c), e2eutil.WithExternalLabels(map[string]string{"cluster": c}))})
	}
	limit := int64(chunkLimitMiB) << 20
	q := request{path: "/api/v1/query_range", params: url.Values{
		"query": {`count_values by (cluster) ("t", timestamp(m))`},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(start.Add(days*24*time.Hour).Unix(), 10)},
		"step":  {"60"},
	}}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	p := startProxyBinary(t, clusters, groups,
		fmt.Sprintf("limits:\n  defaults: {max_fetched_chunk_bytes_per_query: %d}\n", limit),
		"engine:\n  push_down: {enabled: true, float_sums: reassociate}\n")
	warm := request{path: "/api/v1/query", params: url.Values{"query": {`count(m)`}, "time": {strconv.FormatInt(start.Add(time.Hour).Unix(), 10)}}}
	if a, err := send(client, p.url, warm); err != nil || a.problem() != "" {
		t.Fatalf("warm-up query: %v %s", err, a.problem())
	}
	time.Sleep(time.Second)
	idle := p.rss(t)
	before := p.metricSum(client, "prometheus_proxy_pushdown_queries_total", `outcome="pushed"`)
	t0 := time.Now()
	a, err := send(client, p.url, q)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	peak := p.peakRSS(t)
	bound := 2*idle + uint64(limit)
	t.Logf("HTTP %d in %v; idle RSS %.1f MiB, peak RSS %.1f MiB, bound 2×idle+limit %.1f MiB", a.code, took.Round(time.Millisecond), mib(idle), mib(peak), mib(bound))
	fmt.Printf("memory: pushed count_values over %d days: HTTP %d in %v, idle RSS %.1f MiB, peak RSS %.1f MiB (bound %.1f MiB)\n", days, a.code, took.Round(time.Millisecond), mib(idle), mib(peak), mib(bound))
	if a.code != http.StatusOK && (a.code != http.StatusUnprocessableEntity || !strings.Contains(string(a.raw), "max_")) {
		t.Errorf("HTTP %d %.300s; want an answer or 422 naming a limit", a.code, a.raw)
	}
	if pushed := p.metricSum(client, "prometheus_proxy_pushdown_queries_total", `outcome="pushed"`) - before; pushed != 1 {
		t.Errorf("%v queries pushed, want 1: the test measures the pushed path only when it is taken", pushed)
	}
	if peak >= bound {
		t.Errorf("peak RSS %.1f MiB is not under 2×idle (%.1f MiB) + the limit (%d MiB)", mib(peak), mib(idle), chunkLimitMiB)
	}
}
