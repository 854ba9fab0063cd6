package operations

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// TestLimits runs the per-tenant limits against real backends: every cost
// limit answers 422 naming the limit and its value (and, for reads, stops
// the other groups' reads at once), a tenant's override applies to it only
// and its answers stay those of the reference, and a full queue answers 429
// with Retry-After while other tenants go on.
func TestLimits(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	checkLeaks := e2eutil.LeakCheck(t, 5, http.DefaultClient.CloseIdleConnections)
	t.Run("TooManyMatchers", func(t *testing.T) { testTooManyMatchers(t, f) })
	t.Run("TooManySelectors", func(t *testing.T) { testTooManySelectors(t, f) })
	t.Run("CostLimits", func(t *testing.T) { testCostLimits(t, f) })
	t.Run("SamplesLimit", func(t *testing.T) { testSamplesLimit(t, f) })
	t.Run("ChunkBytesCancelOtherGroups", func(t *testing.T) { testChunkBytesCancel(t, f) })
	t.Run("QueueFull", func(t *testing.T) { testQueueFull(t, f) })
	t.Run("ListingRange", func(t *testing.T) { testListingRange(t, f) })
	t.Run("RefusalBackoff", func(t *testing.T) { testRefusalBackoff(t, f) })
	checkLeaks()
}

func limitsConfig(f *e2eproxy.Fleet, defaults func(*admission.Limits), tenants map[string]func(*admission.Limits)) app.Config {
	cfg := e2eproxy.BaseConfig(f)
	cfg.Proxy.EnableCaching = false
	defaults(&cfg.Limits.Defaults)
	cfg.Limits.Tenants = map[string]admission.Limits{}
	for ns, set := range tenants {
		l := cfg.Limits.Defaults
		set(&l)
		cfg.Limits.Tenants[ns] = l
	}
	return cfg
}

func asTenant(r e2eproxy.APIRequest, ns string) e2eproxy.APIRequest {
	r.Header = http.Header{"X-Tenant-Namespace": {ns}}
	return r
}

// wantLimit checks a 422 "execution" answer naming limit=value.
func wantLimit(t *testing.T, what string, a promAnswer, limit, value string) {
	t.Helper()
	if a.code != http.StatusUnprocessableEntity || a.ErrorType != "execution" || !strings.Contains(a.Error, limit+"="+value) {
		t.Errorf("%s: %s; want 422 execution naming %s=%s", what, a, limit, value)
	}
	if strings.Contains(a.Error, "http://") {
		t.Errorf("%s: the error names a backend: %q", what, a.Error)
	}
}

// wantTooManyRequests sends r and checks a 429 "too_many_requests" answer
// whose error names naming, with Retry-After.
func wantTooManyRequests(t *testing.T, what, base string, r e2eproxy.APIRequest, naming string) {
	t.Helper()
	req, err := e2eproxy.NewAPIRequest(base, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var a promAnswer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || a.ErrorType != "too_many_requests" ||
		!strings.Contains(a.Error, naming) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("%s: HTTP %d %+v Retry-After %q; want 429 too_many_requests naming %s with Retry-After",
			what, resp.StatusCode, a, resp.Header.Get("Retry-After"), naming)
	}
}

// fetchAs is fetch with the request's header.
func fetchAs(t *testing.T, base string, r e2eproxy.APIRequest) promAnswer {
	t.Helper()
	a := e2eproxy.DoRequest(t, base, r)
	var pa promAnswer
	if err := json.Unmarshal(a.Body, &pa); err != nil {
		t.Fatalf("%s: HTTP %d, not JSON: %s", r, a.Code, e2eproxy.Clip(a.Body))
	}
	pa.code = a.Code
	return pa
}

// testTooManySelectors: `up or up or …` with 5,000 selectors in one POST
// is refused before any backend is asked, distinct or identical (each is
// still evaluated); at the default's 100 it answers like the reference,
// and 100 identical selectors are one read per group.
func testTooManySelectors(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, limitsConfig(f, func(*admission.Limits) {}, nil))
	at := e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))
	distinct := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`up{x!="%d"}`, i)
		}
		return strings.Join(parts, " or ")
	}
	for what, q := range map[string]string{"5,000 distinct selectors": distinct(5000), "5,000 identical selectors": strings.Repeat("up or ", 4999) + "up"} {
		start := time.Now()
		a := fetchAs(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {q}, "time": {at}}, Post: true})
		t.Logf("%s: HTTP %d in %s", what, a.code, time.Since(start))
		wantLimit(t, what, a, "max_selectors_per_query", "100")
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total"); n != 0 {
		t.Errorf("%v backend calls were made for refused queries", n)
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_limit_rejections_total", `reason="max_selectors_per_query"`); n != 2 {
		t.Errorf("rejections by reason max_selectors_per_query = %v, want 2", n)
	}

	same := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {strings.Repeat("up or ", 99) + "up"}, "time": {at}}, Post: true}
	e2eproxy.CompareAnswers(t, "100 identical selectors", e2eproxy.DoRequest(t, f.Reference.URL, same), e2eproxy.DoRequest(t, p.URL, same))
	if n, groups := e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total", `kind="read"`), len(f.Shards); n > float64(groups) {
		t.Errorf("%v backend reads for 100 identical selectors, want at most one per group (%d)", n, groups)
	}
	r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {distinct(100)}, "time": {at}}, Post: true}
	e2eproxy.CompareAnswers(t, "100 distinct selectors", e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
}

// testTooManyMatchers: 10,000 match[] in one POST are refused before any
// backend is asked.
func testTooManyMatchers(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, limitsConfig(f, func(*admission.Limits) {}, nil))
	params := url.Values{}
	for i := range 10_000 {
		params.Add("match[]", fmt.Sprintf(`up{job="j%d"}`, i))
	}
	start := time.Now()
	a := fetchAs(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/series", Params: params, Post: true})
	took := time.Since(start)
	wantLimit(t, "10,000 match[]", a, "max_match_per_request", "1000")
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total", `kind="series"`); n != 0 {
		t.Errorf("%v backend series calls were made for a refused request", n)
	}
	if took > 2*time.Second {
		t.Errorf("refusing took %v", took)
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_limit_rejections_total", `reason="max_match_per_request"`); n != 1 {
		t.Errorf("rejections by reason max_match_per_request = %v, want 1", n)
	}
	// At the limit the request runs and answers like the reference.
	few := e2eproxy.AllData(f.Data)
	few["match[]"] = append(params["match[]"][:999], `up{namespace="team-a"}`)
	r := e2eproxy.APIRequest{Path: "/api/v1/series", Params: few, Post: true}
	e2eproxy.CompareAnswers(t, "1,000 match[]", e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, r))
}

// testCostLimits: series, query length and response size limits, with a
// tenant whose overrides lift them.
func testCostLimits(t *testing.T, f *e2eproxy.Fleet) {
	cfg := limitsConfig(f, func(l *admission.Limits) {
		l.MaxFetchedSeriesPerQuery = 50
		l.MaxQueryLength = model.Duration(time.Hour)
		l.MaxResponseBytes = 4096
	}, map[string]func(*admission.Limits){
		"big": func(l *admission.Limits) {
			l.MaxFetchedSeriesPerQuery = 0
			l.MaxQueryLength = 0
			l.MaxResponseBytes = 0
		},
	})
	p := e2eproxy.StartProxy(t, cfg)
	end := f.Data.Start.Add(f.Data.Duration)
	all := e2eproxy.Instant(f, `count({__name__=~".+"})`)
	whole := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`count_over_time(up[2h])`}, "time": {e2eproxy.FormatTime(end)}}}
	big := e2eproxy.APIRequest{Path: "/api/v1/query_range", Params: url.Values{"query": {`up{namespace="team-a"}`}, "start": {e2eproxy.FormatTime(f.Data.Start)}, "end": {e2eproxy.FormatTime(f.Data.Start.Add(50 * time.Minute))}, "step": {"15"}}}

	wantLimit(t, "every series", fetchAs(t, p.URL, asTenant(all, "small")), "max_fetched_series_per_query", "50")
	wantLimit(t, "a 2h range selector", fetchAs(t, p.URL, asTenant(whole, "small")), "max_query_length", "1h")
	// The limit counts the bytes sent, compressed when the client asks for it.
	plain := asTenant(big, "small")
	plain.Header.Set("Accept-Encoding", "identity")
	wantLimit(t, "a large answer", fetchAs(t, p.URL, plain), "max_response_bytes", "4096")
	// Within the limits, the same tenant is answered as the reference.
	small := e2eproxy.Instant(f, `sum(up{namespace="team-a"})`)
	e2eproxy.CompareAnswers(t, "within the limits", e2eproxy.DoRequest(t, f.Reference.URL, small), e2eproxy.DoRequest(t, p.URL, asTenant(small, "small")))
	// The tenant with overrides gets full answers, equal to the reference's.
	for _, r := range []e2eproxy.APIRequest{all, whole, big} {
		e2eproxy.CompareAnswers(t, "tenant big: "+r.String(), e2eproxy.DoRequest(t, f.Reference.URL, r), e2eproxy.DoRequest(t, p.URL, asTenant(r, "big")))
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_limit_rejections_total", `tenant="other"`, `reason="max_fetched_series_per_query"`); n != 1 {
		t.Errorf("series-limit rejections of unnamed tenants = %v, want 1", n)
	}

	// /debug/tenants shows the limits in force, overrides included.
	a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/debug/tenants"})
	var dbg struct {
		Limits struct {
			Scheduler string                      `json:"scheduler"`
			Defaults  admission.Limits            `json:"defaults"`
			Tenants   map[string]admission.Limits `json:"tenants"`
			Now       admission.State             `json:"now"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(a.Body, &dbg); err != nil {
		t.Fatalf("/debug/tenants: %v: %s", err, e2eproxy.Clip(a.Body))
	}
	if dbg.Limits.Scheduler != "fair" || dbg.Limits.Defaults.MaxFetchedSeriesPerQuery != 50 ||
		dbg.Limits.Tenants["big"].MaxFetchedSeriesPerQuery != 0 || dbg.Limits.Tenants["big"].MaxQueuedRequests != 100 || dbg.Limits.Now.Slots != 100 {
		t.Errorf("/debug/tenants limits: %+v", dbg.Limits)
	}
}

// testChunkBytesCancel: cluster-c hangs. A query over the chunk-bytes
// limit fails as soon as the other groups' answers pass it, and the read
// from the hung group is cancelled then, not at the backend timeout.
func testChunkBytesCancel(t *testing.T, f *e2eproxy.Fleet) {
	hang := e2eutil.Hang(t)
	cfg := e2eproxy.FaultConfig(f, hang.URL)
	cfg.Proxy.BackendTimeout = model.Duration(30 * time.Second)
	cfg.Limits.Defaults.MaxFetchedChunkBytesPerQuery = 64 << 10
	p := e2eproxy.StartProxy(t, cfg)
	errc := make(chan promAnswer, 1)
	end := f.Data.Start.Add(f.Data.Duration)
	q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`count_over_time({__name__=~".+"}[2h])`}, "time": {e2eproxy.FormatTime(end)}}}
	go func() {
		a, err := fetch(p.URL, q)
		if err != nil {
			a.Error = err.Error()
		}
		errc <- a
	}()
	var a promAnswer
	select {
	case a = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10s although the limit was passed")
	}
	wantLimit(t, "whole window of every series", a, "max_fetched_chunk_bytes_per_query", "65536")
	if !e2eutil.WaitFor(2*time.Second, func() bool { return hang.OpenConnsTo("/api/v1/read") == 0 }) {
		t.Errorf("the hung group's read is still open after the query failed: %d", hang.OpenConnsTo("/api/v1/read"))
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total", `result="error"`); n != 0 {
		t.Errorf("%v backend calls counted as errors: a refused query is not the backends' fault", n)
	}
	if got := e2eproxy.Targets(t, p); len(got) == 0 {
		t.Fatal("no targets")
	} else {
		for _, ts := range got {
			if !ts.Healthy && ts.URL != hang.URL {
				t.Errorf("replica %s marked unhealthy by a query over its limit", ts.URL)
			}
		}
	}
}

// testQueueFull: tenant a may run one request and queue one; its third
// gets 429 too_many_requests with Retry-After at once, while tenant b is
// answered.
func testQueueFull(t *testing.T, f *e2eproxy.Fleet) {
	hang := e2eutil.Hang(t)
	cfg := e2eproxy.FaultConfig(f, hang.URL)
	cfg.Proxy.BackendTimeout = model.Duration(3 * time.Second)
	cfg.Proxy.QueueTimeout = model.Duration(10 * time.Second)
	cfg.Limits.Tenants = map[string]admission.Limits{"a": {MaxConcurrentRequests: 1, MaxQueuedRequests: 1}}
	p := e2eproxy.StartProxy(t, cfg)
	hung := asTenant(e2eproxy.Instant(f, "up"), "a")
	done := make(chan e2eproxy.APIAnswer, 2)
	for range 2 {
		go func() { done <- e2eproxy.DoRequest(t, p.URL, hung) }()
	}
	if !e2eutil.WaitFor(5*time.Second, func() bool {
		return hang.OpenConnsTo("/api/v1/read") > 0 && e2eproxy.MetricSum(t, p, "prometheus_proxy_queue_length") == 1
	}) {
		t.Fatal("a's first request never reached the hung backend with the second queued")
	}
	wantTooManyRequests(t, "a's third request", p.URL, hung, "max_queued_requests=1")
	if b := fetchAs(t, p.URL, asTenant(e2eproxy.Instant(f, "vector(1)"), "b")); b.code != http.StatusOK {
		t.Errorf("tenant b while a is queued: %s", b)
	}
	for range 2 {
		if a := <-done; a.Code != http.StatusOK {
			t.Errorf("a's queued requests: HTTP %d %s; want answered once the hung group timed out", a.Code, e2eproxy.Clip(a.Body))
		}
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_limit_rejections_total", `reason="queue_full"`); n != 1 {
		t.Errorf("queue_full rejections = %v, want 1", n)
	}
}

// testRefusalBackoff: past refusal_burst refused requests, a tenant's
// requests wait for its refusals to drain at refusals_per_second, and one
// whose wait would pass 5 s is answered 429 at once (naming the key, with
// Retry-After), valid or not, while other tenants go on; no backend is
// asked for the refused ones.
func testRefusalBackoff(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, limitsConfig(f, func(l *admission.Limits) {
		l.RefusalsPerSecond, l.RefusalBurst = 0.1, 2 // a refusal over the burst is 10 s of waiting
	}, nil))
	at := e2eproxy.FormatTime(f.Data.Start.Add(30 * time.Minute))
	flood := asTenant(e2eproxy.APIRequest{Path: "/api/v1/query", Post: true,
		Params: url.Values{"query": {strings.Repeat("up or ", 200) + "up"}, "time": {at}}}, "team-a")
	for i := range 3 {
		wantLimit(t, fmt.Sprintf("flood %d", i+1), fetchAs(t, p.URL, flood), "max_selectors_per_query", "100")
	}
	valid := asTenant(e2eproxy.Instant(f, `sum(up{namespace="team-a"})`), "team-a")
	for what, r := range map[string]e2eproxy.APIRequest{"a fourth flood": flood, "a valid query": valid} {
		wantTooManyRequests(t, "team-a, "+what+" after 3 refusals", p.URL, r, "refusals_per_second")
	}
	if b := fetchAs(t, p.URL, asTenant(e2eproxy.Instant(f, `sum(up{namespace="team-b"})`), "team-b")); b.code != http.StatusOK {
		t.Errorf("team-b while team-a is held: %s", b)
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_limit_rejections_total", `reason="refusal_backoff"`); n != 2 {
		t.Errorf("refusal_backoff rejections = %v, want 2", n)
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total", `kind="read"`); n == 0 || n > float64(len(f.Shards)) {
		t.Errorf("%v backend reads; want team-b's only (one per group, %d)", n, len(f.Shards))
	}
}

// testSamplesLimit: max_samples_per_query reaches the PromQL engine's own
// accounting and answers 422 naming the limit; below it the answer is the
// reference's.
func testSamplesLimit(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, limitsConfig(f, func(l *admission.Limits) { l.MaxSamplesPerQuery = 1000 }, nil))
	over := e2eproxy.Instant(f, `sum(count_over_time(up{namespace="team-a"}[30m]))`) // 12 series × 120 samples
	wantLimit(t, "1,440 samples", fetchAs(t, p.URL, over), "max_samples_per_query", "1000")
	under := e2eproxy.Instant(f, `sum(count_over_time(up{namespace="team-a"}[5m]))`) // 12 × 20
	e2eproxy.CompareAnswers(t, "240 samples", e2eproxy.DoRequest(t, f.Reference.URL, under), e2eproxy.DoRequest(t, p.URL, under))
	rng := e2eproxy.APIRequest{Path: "/api/v1/query_range", Params: url.Values{"query": {`sum(up{namespace="team-a"})`},
		"start": {e2eproxy.FormatTime(f.Data.Start)}, "end": {e2eproxy.FormatTime(f.Data.Start.Add(10 * time.Minute))}, "step": {"15"}}} // 12 × 41
	e2eproxy.CompareAnswers(t, "range under the limit", e2eproxy.DoRequest(t, f.Reference.URL, rng), e2eproxy.DoRequest(t, p.URL, rng))
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_limit_rejections_total", `reason="max_samples_per_query"`); n != 1 {
		t.Errorf("max_samples_per_query rejections = %v, want 1", n)
	}
}

// testListingRange: label names and values and series without a range read
// only default_label_window back from now (the generated data, months old,
// is outside it), a range longer than max_query_length is refused before
// anything is read, and limit cuts the answer, for a restricted tenant and
// for an admin alike.
func testListingRange(t *testing.T, f *e2eproxy.Fleet) {
	cfg := limitsConfig(f, func(l *admission.Limits) { l.DefaultLabelWindow = model.Duration(30 * time.Minute) }, nil)
	cfg.Tenants.Files = []string{filepath.Join(e2eproxy.TenantFiles(t), "*.yaml")}
	cfg.Tenants.AdminNamespaces = []string{"monitoring"}
	p := e2eproxy.StartProxy(t, cfg)
	all := e2eproxy.AllData(f.Data)
	last := f.Data.LastSampleTime()
	list := func(what string, a promAnswer) []json.RawMessage {
		t.Helper()
		var items []json.RawMessage
		if a.code != http.StatusOK || json.Unmarshal(a.Data, &items) != nil {
			t.Fatalf("%s: %s, want 200 with a list", what, a)
		}
		return items
	}
	for _, ns := range []string{"team-a", "monitoring"} {
		for _, r := range []e2eproxy.APIRequest{
			{Path: "/api/v1/labels"},
			{Path: "/api/v1/label/__name__/values"},
			{Path: "/api/v1/series", Params: url.Values{"match[]": {`{__name__=~".+"}`}}},
		} {
			what := ns + " " + r.String()
			if got := list(what+" without a range", fetchAs(t, p.URL, asTenant(r, ns))); len(got) != 0 {
				t.Errorf("%s without a range lists %d items of data older than the window: %s", what, len(got), got)
			}
			// An end alone reads the window before it.
			ranged := r
			ranged.Params = e2eproxy.WithParams(r.Params, "end", e2eproxy.FormatTime(last))
			if got := list(what+" with an end", fetchAs(t, p.URL, asTenant(ranged, ns))); len(got) == 0 {
				t.Errorf("%s with end at the data's last sample lists nothing", what)
			}
			ranged.Params = e2eproxy.WithParams(r.Params, "start", all.Get("start"), "end", all.Get("end"))
			if got := list(what+" over the data", fetchAs(t, p.URL, asTenant(ranged, ns))); len(got) < 2 {
				t.Errorf("%s over the data lists %d items, want several", what, len(got))
			}
			ranged.Params = e2eproxy.WithParams(ranged.Params, "limit", "1")
			if got := list(what+" limit=1", fetchAs(t, p.URL, asTenant(ranged, ns))); len(got) != 1 {
				t.Errorf("%s with limit=1 lists %d items: %s", what, len(got), got)
			}
			long := r
			long.Params = e2eproxy.WithParams(r.Params, "start", e2eproxy.FormatTime(last.Add(-40*24*time.Hour)), "end", e2eproxy.FormatTime(last))
			wantLimit(t, what+" over 40 days", fetchAs(t, p.URL, asTenant(long, ns)), "max_query_length", "32d")
		}
	}
}
