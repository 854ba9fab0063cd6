//go:build linux

package load

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak runs a mixed load — five tenants' dashboards at times that
// keep changing (so the results cache keeps taking new entries and
// evicting old ones), label and series listings, and a tenant sending
// queries the limits refuse — against a proxy with a small results cache
// and a Go memory limit, and samples its RSS. What must hold: nothing the
// tenants may ask fails, and the RSS flattens: the last third of the run
// peaks no higher than the middle third plus a margin, and the whole run
// stays under the configured memory limit. Bounded in time (SOAK_DURATION).
func TestSoak(t *testing.T) {
	duration := envDuration("SOAK_DURATION", 45*time.Second)
	const memoryLimit = 512 << 20
	t.Setenv("GOMEMLIMIT", strconv.Itoa(memoryLimit)) // the proxy inherits it
	data, groups := startFairBackends(t)
	p := startProxyBinary(t, data.Clusters, groups,
		"proxy:\n  enable_caching: true\n  enable_request_logging: false\n",
		"cache:\n  memory: {max_bytes: 8388608}\n")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	at := func(d time.Duration) string { return strconv.FormatInt(data.Start.Add(d).Unix(), 10) }

	// A request of one of the kinds a dashboard and a browsing user send,
	// at a time picked anew each turn.
	ordinary := func(rng *rand.Rand, ns string) request {
		offset := time.Duration(rng.IntN(int(data.Duration/time.Minute)-60)) * time.Minute
		switch rng.IntN(5) {
		case 0:
			return request{path: "/api/v1/query", params: url.Values{"query": {fmt.Sprintf(`sum by (job) (up{namespace=%q})`, ns)}, "time": {at(offset + time.Hour)}}}
		case 1:
			return request{path: "/api/v1/query_range", post: true, params: url.Values{
				"query": {fmt.Sprintf(`sum by (job) (rate(http_requests_total{namespace=%q}[5m]))`, ns)},
				"start": {at(offset)}, "end": {at(offset + time.Hour)}, "step": {"60"}}}
		case 2:
			return request{path: "/api/v1/query_range", post: true, params: url.Values{
				"query": {fmt.Sprintf(`histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket{namespace=%q}[5m])))`, ns)},
				"start": {at(offset)}, "end": {at(offset + 30*time.Minute)}, "step": {"30"}}}
		case 3:
			return request{path: "/api/v1/label/job/values", params: url.Values{"start": {at(offset)}, "end": {at(offset + time.Hour)}}}
		default:
			return request{path: "/api/v1/series", params: url.Values{"match[]": {`up`}, "start": {at(offset)}, "end": {at(offset + time.Hour)}}}
		}
	}
	refused := []request{
		{path: "/api/v1/query_range", post: true, params: url.Values{"query": {`count({__name__=~".+"})`}, "start": {at(-90 * 24 * time.Hour)}, "end": {at(data.Duration)}, "step": {"3600"}}},
		{path: "/api/v1/query_range", post: true, params: url.Values{"query": {`count({__name__=~".+"})`}, "start": {at(0)}, "end": {at(data.Duration)}, "step": {"0.5"}}},
		{path: "/api/v1/query", params: url.Values{"query": {`max_over_time({__name__=~".+"}[400d])`}, "time": {at(data.Duration)}}},
	}

	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		sent      int
		failures  []string
		refusedOK int
	)
	for i, ns := range []string{"team-a", "team-b", "team-c", "team-d", "team-e"} {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for !stop.Load() {
				r := ordinary(rng, ns)
				a, err := sendAs(client, p.url, r, ns)
				problem := ""
				if err != nil {
					problem = err.Error()
				} else {
					problem = a.problem()
				}
				mu.Lock()
				sent++
				if problem != "" && len(failures) < 5 {
					failures = append(failures, fmt.Sprintf("%s: %s", r, problem))
				}
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for k := 0; !stop.Load(); k++ {
			a, err := sendAs(client, p.url, refused[k%len(refused)], "mallory")
			mu.Lock()
			if err == nil && a.code >= 400 && a.code < 500 {
				refusedOK++
			}
			mu.Unlock()
		}
	})

	var rss []uint64
	tick := time.NewTicker(250 * time.Millisecond)
	for deadline := time.Now().Add(duration); time.Now().Before(deadline); <-tick.C {
		rss = append(rss, p.rss(t))
	}
	tick.Stop()
	stop.Store(true)
	wg.Wait()

	third := len(rss) / 3
	middle, last := slices.Max(rss[third:2*third]), slices.Max(rss[2*third:])
	peak := p.peakRSS(t)
	t.Logf("%d requests of five tenants, %d refused requests of a sixth; RSS peak of thirds %.0f / %.0f / %.0f MiB, VmHWM %.0f MiB (GOMEMLIMIT %.0f MiB)",
		sent, refusedOK, mib(slices.Max(rss[:third])), mib(middle), mib(last), mib(peak), mib(memoryLimit))
	if len(failures) != 0 {
		t.Errorf("requests failed, first ones:\n%v", failures)
	}
	if refusedOK == 0 {
		t.Error("no request of the sixth tenant was refused by a limit: the soak did not exercise the limits")
	}
	if sent < 100 {
		t.Errorf("only %d requests in %s: too few to tell whether memory flattens", sent, duration)
	}
	// Flat: the last third may not climb past the middle third by more
	// than an eighth plus 16 MiB (a GC cycle's worth of noise).
	if last > middle+middle/8+16<<20 {
		t.Errorf("RSS still climbing: the last third peaks at %.0f MiB, the middle third at %.0f MiB", mib(last), mib(middle))
	}
	if peak > memoryLimit {
		t.Errorf("peak RSS %.0f MiB over the configured memory limit of %.0f MiB", mib(peak), mib(memoryLimit))
	}
}
