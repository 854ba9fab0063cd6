package query

import (
	"net/url"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// benchSides times query sets against several servers, interleaved so that
// machine drift hits all alike, and reports each side's time per set and
// its ratio to the first side (the reference).
func benchSides(b *testing.B, queries []e2eproxy.APIRequest, names []string, bases []string) {
	b.Helper()
	run := func(base string) time.Duration {
		t0 := time.Now()
		for _, q := range queries {
			if a := e2eproxy.DoRequest(b, base, q); a.Code != 200 {
				b.Fatalf("%s: HTTP %d: %s", q, a.Code, e2eproxy.Clip(a.Body))
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
	f := e2eproxy.StartFleet(b)
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = false
	buffered := cfg
	buffered.Backend.BufferReads = true
	pStream, pBuf := e2eproxy.StartProxy(b, cfg), e2eproxy.StartProxy(b, buffered)
	start, end := f.Data.Start, f.Data.Start.Add(2*time.Hour)
	var queries []e2eproxy.APIRequest
	for _, q := range []string{
		`count({__name__=~".+"})`,
		`sum by (namespace) (rate({__name__=~".+_total"}[5m]))`,
	} {
		queries = append(queries, e2eproxy.APIRequest{Path: "/api/v1/query_range", Post: true, Params: url.Values{
			"query": {q}, "start": {e2eproxy.FormatTime(start)}, "end": {e2eproxy.FormatTime(end)}, "step": {"30"},
		}})
	}
	benchSides(b, queries, []string{"ref", "buffered", "streamed"}, []string{f.Reference.URL, pBuf.URL, pStream.URL})
}

// BenchmarkInstantFixedCost times small uncached instant queries, where
// what the proxy pays per query (requests, encoding, round trips) and not
// the data decides, against the reference: the proxy as before streaming
// (answers read whole, selectors one after another) and as it is now.
func BenchmarkInstantFixedCost(b *testing.B) {
	f := e2eproxy.StartFleet(b)
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = false
	before := cfg
	before.Backend.BufferReads, before.Backend.SequentialSelects = true, true
	p, pBefore := e2eproxy.StartProxy(b, cfg), e2eproxy.StartProxy(b, before)
	at := e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))
	var queries []e2eproxy.APIRequest
	for _, q := range []string{
		`count by (namespace) (up)`,
		`sum(rate(http_requests_total[5m]))`,
		`up == 1`,
		`sum(rate(http_requests_total{code="500"}[5m])) / sum(rate(http_requests_total[5m]))`,
		`memory_usage_bytes and on (instance, cluster) up == 1`,
	} {
		queries = append(queries, e2eproxy.APIRequest{Path: "/api/v1/query", Post: true, Params: url.Values{"query": {q}, "time": {at}}})
	}
	benchSides(b, queries, []string{"ref", "before", "now"}, []string{f.Reference.URL, pBefore.URL, p.URL})
}
