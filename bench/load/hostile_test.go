//go:build linux

package load

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHostileMix: five tenants run a small dashboard (an instant and a
// range query each, every 200 ms) on a proxy with the shipped defaults,
// first alone, then while a sixth sends the worst shapes it can: selector
// floods, match[] floods, label values over all time, regex-heavy
// selectors and huge ranges, from 4 loops. The five get no error, their
// p95 stays within 3× their quiet p95, no replica is marked unhealthy, and
// the proxy's peak RSS stays under the shipped 1 GiB memory limit. The
// floods are refused before they cost much (a 5,000-deep `up or up or …`
// took the parser 60 ms, quadratic in depth, until it was refused from the
// lexer's count), and a tenant refused again and again is held
// (limits.refusals_per_second): its loops, re-sending at once what was
// refused, had cost the proxy 500 refusals a second, and the five's p95
// 2–3.4× quiet. Loopback only; bounded in time (HOSTILE_DURATION).
func TestHostileMix(t *testing.T) {
	duration := envDuration("HOSTILE_DURATION", 20*time.Second)
	// Each tenant loads its dashboard this often (HOSTILE_INTERVAL): a
	// shorter run at a shorter interval keeps as many requests behind
	// each percentile.
	interval := envDuration("HOSTILE_INTERVAL", 200*time.Millisecond)
	data, groups := startFairBackends(t)
	p := startProxyBinary(t, data.Clusters, groups, "proxy:\n  enable_request_logging: false\n")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	at := func(d time.Duration) string { return strconv.FormatInt(data.Start.Add(d).Unix(), 10) }
	end := data.Start.Add(data.Duration)

	tenants := []string{"team-a", "team-b", "team-c", "team-d", "team-e"}
	dashboard := func(ns string) []request {
		return []request{
			{path: "/api/v1/query", params: url.Values{"query": {fmt.Sprintf(`sum(up{namespace=%q})`, ns)}, "time": {at(time.Hour)}}},
			{path: "/api/v1/query_range", post: true, params: url.Values{
				"query": {fmt.Sprintf(`sum by (job) (rate(http_requests_total{namespace=%q}[5m]))`, ns)},
				"start": {at(time.Hour)}, "end": {at(2 * time.Hour)}, "step": {"60"}}},
		}
	}
	runDashboards := func(d time.Duration) map[string]lightRun {
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			runs = map[string]lightRun{}
		)
		for _, ns := range tenants {
			wg.Go(func() {
				var run lightRun
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for deadline := time.Now().Add(d); time.Now().Before(deadline); <-tick.C {
					for _, r := range dashboard(ns) {
						t0 := time.Now()
						a, err := sendAs(client, p.url, r, ns)
						run.lat = append(run.lat, time.Since(t0))
						if problem := problemOf(a, err); problem != "" {
							run.failed++
							if run.first == "" {
								run.first = problem
							}
						}
					}
				}
				mu.Lock()
				runs[ns] = run
				mu.Unlock()
			})
		}
		wg.Wait()
		return runs
	}

	matchFlood := url.Values{"start": {at(0)}, "end": {at(data.Duration)}}
	for i := range 2000 {
		matchFlood.Add("match[]", fmt.Sprintf(`{__name__=~".+", x!="%d"}`, i))
	}
	hostile := []request{
		{path: "/api/v1/query", post: true, params: url.Values{"query": {strings.Repeat("up or ", 4999) + "up"}, "time": {at(time.Hour)}}},
		{path: "/api/v1/series", post: true, params: matchFlood},
		{path: "/api/v1/label/__name__/values", params: url.Values{"start": {"0"}, "end": {strconv.FormatInt(end.Unix(), 10)}}},
		{path: "/api/v1/label/instance/values", params: url.Values{"match[]": {`{__name__=~".+"}`}}},
		{path: "/api/v1/query_range", post: true, params: url.Values{"query": {`count({__name__=~".*(a|e|i).*(o|u).*_.*"})`},
			"start": {at(0)}, "end": {at(data.Duration)}, "step": {"15"}}},
		{path: "/api/v1/query_range", post: true, params: url.Values{"query": {`sum(rate({__name__=~".+"}[5m]))`},
			"start": {strconv.FormatInt(end.Add(-90*24*time.Hour).Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"3600"}}},
		{path: "/api/v1/query_range", post: true, params: url.Values{"query": {`sum by (pod) (rate({__name__=~"http_.*_bucket"}[5m]))`},
			"start": {at(0)}, "end": {at(data.Duration)}, "step": {"15"}}},
	}

	quiet := runDashboards(duration / 2)

	stop := make(chan struct{})
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		answers = map[string]int{}
	)
	for i := range 4 {
		wg.Go(func() {
			for k := i; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				r := hostile[k%len(hostile)]
				key := "error"
				if r.post {
					if a, err := sendDiscarding(client, p.url, r, "mallory"); err == nil {
						key = strconv.Itoa(a.code)
					}
				} else if a, err := sendAs(client, p.url, r, "mallory"); err == nil {
					key = strconv.Itoa(a.code)
				}
				mu.Lock()
				answers[r.path+" "+key]++
				mu.Unlock()
			}
		})
	}
	loaded := runDashboards(duration)
	close(stop)
	wg.Wait()

	t.Logf("hostile tenant's answers: %v", answers)
	for _, ns := range tenants {
		q, l := quiet[ns], loaded[ns]
		t.Logf("%s: quiet p50 %.1f ms p95 %.1f ms; under attack p50 %.1f ms p95 %.1f ms (%.1f× quiet p95), %d of %d failed %s",
			ns, q.pct(0.5), q.pct(0.95), l.pct(0.5), l.pct(0.95), l.pct(0.95)/max(q.pct(0.95), 0.001), l.failed, len(l.lat), l.first)
		if q.failed+l.failed != 0 {
			t.Errorf("%s: %d requests failed, first: %s%s", ns, q.failed+l.failed, q.first, l.first)
		}
		if l.pct(0.95) > 3*q.pct(0.95) {
			t.Errorf("%s: p95 under attack %.1f ms, quiet %.1f ms: over 3×", ns, l.pct(0.95), q.pct(0.95))
		}
	}
	for _, g := range groups {
		for _, r := range g {
			if !replicaHealthy(t, client, p.url, r.URL) {
				t.Errorf("replica %s marked unhealthy", r.URL)
			}
		}
	}
	peak := p.peakRSS(t)
	t.Logf("proxy peak RSS %.0f MiB", mib(peak))
	if peak >= 1<<30 {
		t.Errorf("proxy peak RSS %.0f MiB, over the shipped 1 GiB memory limit", mib(peak))
	}
}
