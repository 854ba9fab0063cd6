package main

import (
	"net/url"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// benchSides times query sets against several servers, interleaved so that
// machine drift hits all alike, and reports each side's time per set and
// its ratio to the first side (the reference).
func benchSides(b *testing.B, queries []apiRequest, names []string, bases []string) {
	b.Helper()
	run := func(base string) time.Duration {
		t0 := time.Now()
		for _, q := range queries {
			if a := doRequest(b, base, q); a.code != 200 {
				b.Fatalf("%s: HTTP %d: %s", q, a.code, clip(a.body))
			}
		}
		return time.Since(t0)
	}
	for _, base := range bases {
		run(base) // warm page caches and connections
	}
	took := make([]time.Duration, len(bases))
	peak := make([]uint64, len(bases))
	b.ResetTimer()
	for range b.N {
		for i, base := range bases {
			if i == 0 {
				took[i] += run(base)
				continue
			}
			// The proxies run in this process: the heap's peak above its
			// level before the set is what the set cost the proxy.
			peak[i] += e2eutil.PeakHeap(func() { took[i] += run(base) })
		}
	}
	for i, name := range names {
		b.ReportMetric(float64(took[i].Nanoseconds())/float64(b.N), name+"-ns/set")
		if i > 0 {
			b.ReportMetric(float64(took[i])/float64(took[0]), name+"/"+names[0])
			b.ReportMetric(float64(peak[i])/float64(b.N)/(1<<20), name+"-peak-MiB")
		}
	}
	if len(bases) > 2 {
		last := len(bases) - 1
		b.ReportMetric(float64(peak[last])/float64(peak[1]), names[last]+"/"+names[1]+"-peak")
	}
}

// BenchmarkStreamedRead times large uncached range queries (every series of
// the data set over the whole two hours) against the reference, the proxy
// reading answers whole (backend.buffer_reads, as before streaming) and the
// proxy streaming them.
func BenchmarkStreamedRead(b *testing.B) {
	f := startFleet(b)
	cfg := baseConfig(f)
	cfg.Proxy.EnableCaching = false
	buffered := cfg
	buffered.Backend.BufferReads = true
	pStream, pBuf := startProxy(b, cfg), startProxy(b, buffered)
	start, end := f.data.Start, f.data.Start.Add(2*time.Hour)
	var queries []apiRequest
	for _, q := range []string{
		`count({__name__=~".+"})`,
		`sum by (namespace) (rate({__name__=~".+_total"}[5m]))`,
	} {
		queries = append(queries, apiRequest{path: "/api/v1/query_range", post: true, params: url.Values{
			"query": {q}, "start": {formatTime(start)}, "end": {formatTime(end)}, "step": {"30"},
		}})
	}
	benchSides(b, queries, []string{"ref", "buffered", "streamed"}, []string{f.reference.URL, pBuf.URL, pStream.URL})
}

// BenchmarkInstantFixedCost times small uncached instant queries, where
// what the proxy pays per query (requests, encoding, round trips) and not
// the data decides, against the reference: the proxy as before streaming
// (answers read whole, selectors one after another) and as it is now.
func BenchmarkInstantFixedCost(b *testing.B) {
	f := startFleet(b)
	cfg := baseConfig(f)
	cfg.Proxy.EnableCaching = false
	before := cfg
	before.Backend.BufferReads, before.Backend.SequentialSelects = true, true
	p, pBefore := startProxy(b, cfg), startProxy(b, before)
	at := formatTime(f.data.Start.Add(time.Hour))
	var queries []apiRequest
	for _, q := range []string{
		`count by (namespace) (up)`,
		`sum(rate(http_requests_total[5m]))`,
		`up == 1`,
		`sum(rate(http_requests_total{code="500"}[5m])) / sum(rate(http_requests_total[5m]))`,
		`memory_usage_bytes and on (instance, cluster) up == 1`,
	} {
		queries = append(queries, apiRequest{path: "/api/v1/query", post: true, params: url.Values{"query": {q}, "time": {at}}})
	}
	benchSides(b, queries, []string{"ref", "before", "now"}, []string{f.reference.URL, pBefore.URL, p.URL})
}
