// Package operations tests end to end how the proxy behaves in operation:
// backend faults, limits, the results cache, rules and alerts, tracing and
// the status page in a real browser.
package operations

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// TestFaults runs the failure scenarios against one shared fleet: dead and
// recovering replicas, hung and broken groups, clients that give up or send
// garbage. Fakes stand in only for the faults; the data comes from real
// Prometheus servers and answers are compared with the reference.
func TestFaults(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	// Counted after the fleet started: what the scenarios start (proxies,
	// fakes, extra servers) must all be gone when they end, the proxies'
	// connections to backends included.
	checkLeaks := e2eutil.LeakCheck(t, 5, http.DefaultClient.CloseIdleConnections)

	t.Run("DeadReplica/round-robin", func(t *testing.T) { testDeadReplica(t, f, discovery.RoundRobin) })
	t.Run("DeadReplica/random", func(t *testing.T) { testDeadReplica(t, f, discovery.Random) })
	t.Run("FailoverFromEveryFault", func(t *testing.T) { testFailoverFromEveryFault(t, f) })
	t.Run("HungGroup", func(t *testing.T) { testHungGroup(t, f) })
	t.Run("BrokenAfterSeries", func(t *testing.T) { testBrokenAfterSeries(t, f) })
	t.Run("EveryFaultIsNamed", func(t *testing.T) { testEveryFaultIsNamed(t, f) })
	t.Run("ClientGivesUp", func(t *testing.T) { testClientGivesUp(t, f) })
	t.Run("ConcurrencyLimit", func(t *testing.T) { testConcurrencyLimit(t, f) })
	t.Run("GarbageFromClients", func(t *testing.T) { testGarbageFromClients(t, f) })
	checkLeaks()
}

// Scenario building blocks.

// keepInRotation stops health checks and failed calls from taking a replica
// out, so every query exercises failover.
func keepInRotation(cfg *app.Config) {
	cfg.Discovery.HealthCheckInterval = model.Duration(time.Hour)
	cfg.Discovery.UnhealthyThreshold = 1 << 30
}

// suiteQueries is the suite's PromQL part (instant and range queries).
func suiteQueries(f *e2eproxy.Fleet, every int) []e2eproxy.APIRequest {
	var out []e2eproxy.APIRequest
	for i, r := range e2eproxy.SuiteRequests(f.Data) {
		if strings.HasPrefix(r.Path, "/api/v1/query") && i%every == 0 {
			out = append(out, r)
		}
	}
	return out
}

// promAnswer is a Prometheus API answer, data left raw.
type promAnswer struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	code      int
	took      time.Duration
}

func ask(t *testing.T, base string, r e2eproxy.APIRequest) promAnswer {
	t.Helper()
	a, err := fetch(base, r)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// askAll sends the requests at once (to base[i]) and returns the answers in
// order, so that several slow answers cost the time of one.
func askAll(t *testing.T, base []string, reqs []e2eproxy.APIRequest) []promAnswer {
	t.Helper()
	out := make([]promAnswer, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() { out[i], errs[i] = fetch(base[i], reqs[i]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// fetch sends r without failing the test, so it may run off the test's goroutine.
func fetch(base string, r e2eproxy.APIRequest) (promAnswer, error) {
	var body io.Reader
	target := base + r.Path
	if r.Post {
		body = strings.NewReader(r.Params.Encode())
	} else if len(r.Params) > 0 {
		target += "?" + r.Params.Encode()
	}
	method := http.MethodGet
	if r.Post {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return promAnswer{}, fmt.Errorf("%s: %w", r, err)
	}
	if r.Post {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return promAnswer{}, fmt.Errorf("%s: %w", r, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return promAnswer{}, fmt.Errorf("%s: %w", r, err)
	}
	var pa promAnswer
	if err := json.Unmarshal(b, &pa); err != nil {
		return promAnswer{}, fmt.Errorf("%s: HTTP %d, not JSON: %w: %s", r, resp.StatusCode, err, e2eproxy.Clip(b))
	}
	pa.code, pa.took = resp.StatusCode, time.Since(start)
	return pa, nil
}

func (a promAnswer) String() string {
	return fmt.Sprintf("HTTP %d %s after %v, errorType %q, error %q, warnings %q", a.code, a.Status, a.took.Round(time.Millisecond), a.ErrorType, a.Error, a.Warnings)
}

func waitHealth(t *testing.T, p *e2eproxy.Proxy, replica string, healthy bool) e2eproxy.TargetStatus {
	t.Helper()
	var last e2eproxy.TargetStatus
	ok := e2eutil.WaitFor(10*time.Second, func() bool {
		for _, ts := range e2eproxy.Targets(t, p) {
			if ts.URL == replica {
				last = ts
				return ts.Healthy == healthy
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("replica %s: healthy never became %v; last status %+v", replica, healthy, last)
	}
	return last
}

// backendCalls sums the proxy's prometheus_proxy_backend_requests_total for
// one backend, with the given result ("" for any).
func backendCalls(t *testing.T, p *e2eproxy.Proxy, backend, result string) float64 {
	t.Helper()
	return e2eproxy.MetricSum(t, p, "prometheus_proxy_backend_requests_total", `backend="`+backend+`"`, `result="`+result)
}

// testDeadReplica: cluster-a is an HA pair of a dead server and a live one
// holding the same data. Every query still answers exactly like the
// reference; health checks take the dead one out, it is then not asked, and
// it comes back when restarted.
func testDeadReplica(t *testing.T, f *e2eproxy.Fleet, mode discovery.BalanceMode) {
	group := f.Data.Clusters[0]
	spare := e2eutil.StartPrometheus(t, e2eproxy.ShardKinds[0], e2eproxy.OpenMetrics(t, f.Data, 0, nil), e2eutil.WithName("spare-"+group))
	spare.Kill()
	pair := func(cfg *app.Config) {
		cfg.Discovery.Static[0].URLs = []string{spare.URL, f.Shards[0].URL}
		// Configured labels show on answers: the value the series store.
		cfg.Discovery.Static[0].Labels = map[string]string{"cluster": group}
		cfg.Discovery.LoadBalancing = mode
	}
	every := 1
	if mode == discovery.Random {
		every = 3 // the whole suite once is enough; random gets a third
	}

	// Failover alone: the dead replica stays in rotation, so half the calls
	// meet it first and must move on to the live one within the query.
	cfg := e2eproxy.FaultConfig(f)
	pair(&cfg)
	keepInRotation(&cfg)
	p := e2eproxy.StartProxy(t, cfg)
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, suiteQueries(f, every), nil)
	if n := backendCalls(t, p, spare.URL, "error"); n == 0 {
		t.Error("no call met the dead replica first: failover was not exercised")
	}

	// Health: probes mark it unhealthy, and /debug/targets says why.
	cfg = e2eproxy.FaultConfig(f)
	pair(&cfg)
	p = e2eproxy.StartProxy(t, cfg)
	st := waitHealth(t, p, spare.URL, false)
	for _, key := range []string{"url", "healthy", "last_error", "last_check", "latency_ns"} {
		if _, ok := st.Raw[key]; !ok {
			t.Errorf("/debug/targets replica has no %q: %v", key, st.Raw)
		}
	}
	if st.Group != group || st.Labels["cluster"] != group || !strings.Contains(st.LastError, "connection refused") ||
		!strings.Contains(st.LastError, spare.URL) || time.Since(st.LastCheck) > 5*time.Second || st.Latency <= 0 {
		t.Errorf("/debug/targets for the dead replica: %+v", st)
	}

	// While unhealthy it is not asked.
	subset := suiteQueries(f, 16)
	before := backendCalls(t, p, spare.URL, "")
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, subset, nil)
	if after := backendCalls(t, p, spare.URL, ""); after != before {
		t.Errorf("the unhealthy replica was asked %v times", after-before)
	}

	// Restarted, it is probed healthy again and gets its share of queries.
	spare.Restart()
	waitHealth(t, p, spare.URL, true)
	spareBefore, liveBefore := backendCalls(t, p, spare.URL, "success"), backendCalls(t, p, f.Shards[0].URL, "success")
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, subset, nil)
	spareCalls := backendCalls(t, p, spare.URL, "success") - spareBefore
	liveCalls := backendCalls(t, p, f.Shards[0].URL, "success") - liveBefore
	t.Logf("%s after recovery: restarted replica answered %v calls, the other %v", mode, spareCalls, liveCalls)
	if spareCalls == 0 || liveCalls == 0 {
		t.Errorf("%s: after recovery one replica got no calls (restarted %v, other %v)", mode, spareCalls, liveCalls)
	}
	if mode == discovery.RoundRobin && (spareCalls > 2*liveCalls+2 || liveCalls > 2*spareCalls+2) {
		t.Errorf("round-robin split %v:%v calls", spareCalls, liveCalls)
	}
}

// faultKind is one way a backend fails, and what the proxy must say about it.
type faultKind struct {
	name  string
	start func(t *testing.T, f *e2eproxy.Fleet) (url string, fault *e2eutil.Fault)
	// says is in the warning or error of a query (remote read), beside the
	// group and the backend URL; apiSays in that of the label, series and
	// metadata endpoints ("" when the fault leaves those intact).
	says, apiSays string
}

func faultKinds() []faultKind {
	fault := func(fn func(testing.TB) *e2eutil.Fault) func(*testing.T, *e2eproxy.Fleet) (string, *e2eutil.Fault) {
		return func(t *testing.T, _ *e2eproxy.Fleet) (string, *e2eutil.Fault) {
			ft := fn(t)
			return ft.URL, ft
		}
	}
	garbage := func(contentType string) func(testing.TB) *e2eutil.Fault {
		return func(t testing.TB) *e2eutil.Fault { return e2eutil.Garbage(t, contentType) }
	}
	return []faultKind{
		{"hang", fault(e2eutil.Hang), "request timed out after 1s", "request timed out after 1s"},
		{"status 500", fault(e2eutil.Status500), "status 500", "HTTP 500"},
		{"garbage samples", fault(garbage(e2eutil.ContentTypeSamples)), "snappy: corrupt input", "malformed backend response"},
		{"garbage stream", fault(garbage(e2eutil.ContentTypeChunked)), "checksum mismatch", "malformed backend response"},
		{"wrong content type", fault(e2eutil.WrongContentType), "unsupported content type: text/html", `content type "text/html`},
		// Cut inside the first frame: no series has reached the engine, so
		// the group can still fail over or be left out with a warning
		// (testBrokenAfterSeries cuts later).
		{"close mid-stream", func(t *testing.T, f *e2eproxy.Fleet) (string, *e2eutil.Fault) {
			ft := e2eutil.CloseMidStream(t, f.Shards[2].URL, 64)
			return ft.URL, ft
		}, "unexpected EOF", ""},
		{"closed port", func(t *testing.T, _ *e2eproxy.Fleet) (string, *e2eutil.Fault) { return e2eutil.ClosedPort(t), nil }, "connection refused", "connection refused"},
	}
}

// testFailoverFromEveryFault: cluster-c is [faulty, live]; whatever the fault,
// queries fail over within the request and answer like the reference.
func testFailoverFromEveryFault(t *testing.T, f *e2eproxy.Fleet) {
	reqs := suiteQueries(f, 24)
	for _, fk := range faultKinds() {
		t.Run(fk.name, func(t *testing.T) {
			u, fault := fk.start(t, f)
			cfg := e2eproxy.FaultConfig(f, u, f.Shards[2].URL)
			keepInRotation(&cfg)
			p := e2eproxy.StartProxy(t, cfg)
			e2eproxy.RunSuite(t, f.Reference.URL, p.URL, reqs, nil)
			if n := backendCalls(t, p, u, "error"); n == 0 {
				t.Errorf("no call met the faulty replica: failover was not exercised")
			}
			if fault != nil && fault.Kind == "close-mid-stream" && fault.Cuts() == 0 {
				t.Error("no answer was cut: the fault did not fire")
			}
		})
	}
}

// testBrokenAfterSeries: cluster-c's first replica cuts its answers after
// some series. Once a group's series have reached the engine the read can
// neither fail over nor leave the group out: with a live replica beside it
// the query is evaluated again and answers like the reference; alone, it
// fails with 503 naming the group (partial_response warn too), never short.
func testBrokenAfterSeries(t *testing.T, f *e2eproxy.Fleet) {
	cut := e2eutil.CloseMidStream(t, f.Shards[2].URL, 16<<10)
	group := f.Data.Clusters[2]
	start, end := e2eproxy.FormatTime(f.Data.Start), e2eproxy.FormatTime(f.Data.Start.Add(2*time.Hour))
	reqs := []e2eproxy.APIRequest{
		{Path: "/api/v1/query_range", Params: url.Values{"query": {`sum by (job) (rate({__name__=~".+_total"}[5m]))`}, "start": {start}, "end": {end}, "step": {"60"}}},
		{Path: "/api/v1/query_range", Params: url.Values{"query": {`count({__name__=~".+"})`}, "start": {start}, "end": {end}, "step": {"300"}}},
	}
	// [cut, live]: a query whose read from the cut replica broke off after
	// series is evaluated again with the live replica first, and answers
	// like the reference. Round-robin: each request twice, so each replica
	// is first once.
	cfg := e2eproxy.FaultConfig(f, cut.URL, f.Shards[2].URL)
	keepInRotation(&cfg)
	p := e2eproxy.StartProxy(t, cfg)
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, append(slices.Clone(reqs), reqs...), nil)
	again := e2eproxy.MetricSum(t, p, "prometheus_proxy_reevaluations_total")
	if cut.Cuts() == 0 || again == 0 {
		t.Fatalf("%d answers cut, %.0f queries evaluated again: no cut came after series, the test proves nothing", cut.Cuts(), again)
	}
	t.Logf("%d answers cut after series, %.0f queries evaluated again", cut.Cuts(), again)

	// [cut] alone: the second evaluation breaks off too, and the query
	// fails with the clear error, never short.
	alone := e2eproxy.FaultConfig(f, cut.URL)
	keepInRotation(&alone)
	pa := e2eproxy.StartProxy(t, alone)
	for _, r := range reqs {
		got := ask(t, pa.URL, r)
		if got.code != http.StatusServiceUnavailable || got.ErrorType != "unavailable" ||
			!strings.Contains(got.Error, "group "+group+": answer broke off mid-stream") || !strings.Contains(got.Error, "after ") {
			t.Errorf("%s: %s; want 503 unavailable saying group %s broke off mid-stream", r, got, group)
		}
	}
	// Read whole (backend.buffer_reads), a cut fails over within the read.
	buffered := cfg
	buffered.Backend.BufferReads = true
	e2eproxy.RunSuite(t, f.Reference.URL, e2eproxy.StartProxy(t, buffered).URL, reqs, nil)
}

// testHungGroup: cluster-c never answers. With warn the answer comes within
// backend_timeout + 1 s with the other groups' data and a warning naming the
// group; with abort it is a 503 naming it; partial_response overrides both.
func testHungGroup(t *testing.T, f *e2eproxy.Fleet) {
	hang := e2eutil.Hang(t)
	group := f.Data.Clusters[2]
	healthy := e2eproxy.BaseConfig(f)
	healthy.Discovery.Static = healthy.Discovery.Static[:2]
	withoutC := e2eproxy.StartProxy(t, healthy)

	warnCfg := e2eproxy.FaultConfig(f, hang.URL)
	warn := e2eproxy.StartProxy(t, warnCfg)
	abortCfg := e2eproxy.FaultConfig(f, hang.URL)
	abortCfg.Discovery.PartialResponse = discovery.PartialAbort
	abort := e2eproxy.StartProxy(t, abortCfg)

	limit := e2eproxy.BackendTimeout + time.Second
	// Several selectors, evaluated one after another: the hung group must
	// cost one timeout per query, not one per selector.
	multi := `sum by (cluster) (rate(http_requests_total[5m])) / sum by (cluster) (rate(http_requests_total[5m] offset 5m)) + on (cluster) group by (cluster) (up) * 0 + on (cluster) group by (cluster) (memory_usage_bytes) * 0`
	start, end := e2eproxy.FormatTime(f.Data.Start.Add(30*time.Minute)), e2eproxy.FormatTime(f.Data.Start.Add(90*time.Minute))
	rangeReq := e2eproxy.APIRequest{Path: "/api/v1/query_range", Params: url.Values{"query": {`sum by (cluster) (up)`}, "start": {start}, "end": {end}, "step": {"60"}}, Post: true}
	for _, r := range []e2eproxy.APIRequest{
		e2eproxy.Instant(f, `up`),
		e2eproxy.Instant(f, multi),
		rangeReq,
		{Path: "/api/v1/series", Params: url.Values{"match[]": {`up`}, "start": {start}, "end": {end}}},
		{Path: "/api/v1/labels", Params: url.Values{"start": {start}, "end": {end}}},
		{Path: "/api/v1/label/job/values", Params: url.Values{"start": {start}, "end": {end}}},
	} {
		noPartial, partial := r, r
		noPartial.Params, partial.Params = e2eproxy.CloneValues(r.Params), e2eproxy.CloneValues(r.Params)
		noPartial.Params.Set("partial_response", "false")
		partial.Params.Set("partial_response", "true")
		answers := askAll(t, []string{warn.URL, withoutC.URL, abort.URL, warn.URL, abort.URL}, []e2eproxy.APIRequest{r, r, r, noPartial, partial})

		// warn: the other groups' data, exactly, plus the warning.
		got, want := answers[0], answers[1]
		t.Logf("%s: warn answered in %v, abort in %v", r, got.took.Round(time.Millisecond), answers[2].took.Round(time.Millisecond))
		if got.code != http.StatusOK || got.took > limit || !warnsAbout(got.Warnings, "group "+group, hang.URL, "request timed out after 1s") {
			t.Errorf("warn, %s: %s; want 200 within %v warning about %s", r, got, limit, group)
		}
		if !sameData(t, want.Data, got.Data) {
			t.Errorf("warn, %s: data differs from the answer without %s\ngot:  %s\nwant: %s", r, group, e2eproxy.Clip(got.Data), e2eproxy.Clip(want.Data))
		}
		// abort, and warn overridden per request: 503 unavailable naming the group.
		for name, a := range map[string]promAnswer{"abort": answers[2], "warn+partial_response=false": answers[3]} {
			if a.code != http.StatusServiceUnavailable || a.ErrorType != "unavailable" || a.took > limit ||
				!strings.Contains(a.Error, "group "+group) || !strings.Contains(a.Error, hang.URL) {
				t.Errorf("%s, %s: %s; want 503 unavailable within %v naming %s and %s", name, r, a, limit, group, hang.URL)
			}
		}
		// abort overridden per request: a warned partial answer.
		if a := answers[4]; a.code != http.StatusOK || a.took > limit || !warnsAbout(a.Warnings, "group "+group, hang.URL, "timed out") {
			t.Errorf("abort+partial_response=true, %s: %s; want 200 with a warning", r, a)
		}
	}
	// A bad value for the override is the client's error.
	if a := ask(t, warn.URL, e2eproxy.Instant(f, "up", "partial_response", "maybe")); a.code != http.StatusBadRequest || a.ErrorType != "bad_data" {
		t.Errorf("partial_response=maybe: %s; want 400 bad_data", a)
	}
}

func warnsAbout(warnings []string, parts ...string) bool {
	for _, w := range warnings {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w, p)
		}
		if ok {
			return true
		}
	}
	return false
}

func sameData(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	wrap := func(d json.RawMessage) []byte { return []byte(`{"data":` + string(d) + `}`) }
	return reflect.DeepEqual(e2eproxy.Normalize(t, wrap(a)), e2eproxy.Normalize(t, wrap(b)))
}

// testEveryFaultIsNamed: cluster-c's only replica fails in each way in turn.
// The answer is never silently short: warn carries a warning, abort a 503,
// and both name the group, the backend and the fault.
func testEveryFaultIsNamed(t *testing.T, f *e2eproxy.Fleet) {
	group := f.Data.Clusters[2]
	healthy := e2eproxy.BaseConfig(f)
	healthy.Discovery.Static = healthy.Discovery.Static[:2]
	withoutC := e2eproxy.StartProxy(t, healthy)
	start, end := e2eproxy.FormatTime(f.Data.Start.Add(30*time.Minute)), e2eproxy.FormatTime(f.Data.Start.Add(90*time.Minute))
	queries := []e2eproxy.APIRequest{
		e2eproxy.Instant(f, `up`),
		{Path: "/api/v1/query_range", Params: url.Values{"query": {`rate(http_requests_total[5m])`}, "start": {start}, "end": {end}, "step": {"60"}}},
	}
	apiReqs := []e2eproxy.APIRequest{
		{Path: "/api/v1/labels", Params: url.Values{"start": {start}, "end": {end}}},
		{Path: "/api/v1/series", Params: url.Values{"match[]": {`up`}, "start": {start}, "end": {end}}},
		{Path: "/api/v1/metadata"},
	}
	for _, fk := range faultKinds() {
		t.Run(fk.name, func(t *testing.T) {
			u, fault := fk.start(t, f)
			p := e2eproxy.StartProxy(t, e2eproxy.FaultConfig(f, u))
			type check struct {
				r    e2eproxy.APIRequest
				says string
			}
			var checks []check
			for _, r := range queries {
				checks = append(checks, check{r, fk.says})
			}
			for _, r := range apiReqs {
				if fk.apiSays != "" {
					checks = append(checks, check{r, fk.apiSays})
				}
			}
			for _, c := range checks {
				r, says := c.r, c.says
				got := ask(t, p.URL, r)
				if got.code != http.StatusOK || !warnsAbout(got.Warnings, "group "+group, "backend "+u, says) {
					t.Errorf("%s: %s; want 200 with a warning naming group %s, backend %s and %q", r, got, group, u, says)
				}
				if want := ask(t, withoutC.URL, r); !sameData(t, want.Data, got.Data) {
					t.Errorf("%s: data differs from the answer without %s\ngot:  %s\nwant: %s", r, group, e2eproxy.Clip(got.Data), e2eproxy.Clip(want.Data))
				}
				r.Params = e2eproxy.CloneValues(r.Params)
				r.Params.Set("partial_response", "false")
				a := ask(t, p.URL, r)
				if a.code != http.StatusServiceUnavailable || a.ErrorType != "unavailable" ||
					!strings.Contains(a.Error, "group "+group) || !strings.Contains(a.Error, "backend "+u) || !strings.Contains(a.Error, says) {
					t.Errorf("%s: %s; want 503 unavailable naming group %s, backend %s and %q", r, a, group, u, says)
				}
			}
			if fault != nil && fault.Kind == "close-mid-stream" && fault.Cuts() == 0 {
				t.Error("no answer was cut: the fault did not fire")
			}
		})
	}
}

// testClientGivesUp: the query's timeout parameter and a client that hangs
// up both cancel the fan-out, and the proxy lets go of the backend at once
// rather than after backend_timeout.
func testClientGivesUp(t *testing.T, f *e2eproxy.Fleet) {
	hang := e2eutil.Hang(t)
	cfg := e2eproxy.FaultConfig(f, hang.URL)
	cfg.Proxy.BackendTimeout = model.Duration(time.Minute)
	p := e2eproxy.StartProxy(t, cfg)
	released := func() bool { return hang.OpenConnsTo("/api/v1/read") == 0 }

	// timeout=500ms: Prometheus' own answer to a query that ran out of time.
	a := ask(t, p.URL, e2eproxy.Instant(f, "up", "timeout", "500ms"))
	if a.code != http.StatusServiceUnavailable || a.ErrorType != "timeout" || a.took > 2*time.Second {
		t.Errorf("timeout=500ms: %s; want 503 timeout within 2s", a)
	}
	if !e2eutil.WaitFor(2*time.Second, released) {
		t.Errorf("after the query timed out the proxy still holds %d remote reads open", hang.OpenConnsTo("/api/v1/read"))
	}

	// A client that hangs up.
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/api/v1/query?"+e2eproxy.Instant(f, "up").Params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	if !e2eutil.WaitFor(5*time.Second, func() bool { return hang.OpenConnsTo("/api/v1/read") > 0 }) {
		t.Fatal("the query never reached the hung backend")
	}
	cancel()
	if err := <-errc; err == nil {
		t.Error("the request finished although the backend hangs")
	}
	if !e2eutil.WaitFor(2*time.Second, released) {
		t.Errorf("the client hung up but the proxy still holds %d remote reads open", hang.OpenConnsTo("/api/v1/read"))
	}
	if !e2eutil.WaitFor(2*time.Second, func() bool { return e2eproxy.MetricSum(t, p, "prometheus_proxy_requests_in_flight") == 0 }) {
		t.Error("requests still in flight after the client hung up")
	}
}

// testConcurrencyLimit: beyond max_concurrent_requests a request waits
// queue_timeout, then gets a Prometheus-style 429 with Retry-After.
func testConcurrencyLimit(t *testing.T, f *e2eproxy.Fleet) {
	hang := e2eutil.Hang(t)
	cfg := e2eproxy.FaultConfig(f, hang.URL)
	cfg.Proxy.MaxConcurrentRequests = 1
	cfg.Proxy.QueueTimeout = model.Duration(200 * time.Millisecond)
	p := e2eproxy.StartProxy(t, cfg)
	first := make(chan promAnswer, 1)
	go func() {
		a, err := fetch(p.URL, e2eproxy.Instant(f, "up"))
		if err != nil {
			a.Error = err.Error()
		}
		first <- a
	}()
	if !e2eutil.WaitFor(5*time.Second, func() bool { return hang.OpenConnsTo("/api/v1/read") > 0 }) {
		t.Fatal("the first query never reached the hung backend")
	}
	second := ask(t, p.URL, e2eproxy.Instant(f, "up"))
	if second.code != http.StatusTooManyRequests || second.ErrorType != "too_many_requests" ||
		!strings.Contains(second.Error, "max_concurrent_requests=1") || second.took > time.Second {
		t.Errorf("second request: %s; want 429 too_many_requests after the 200ms queue timeout", second)
	}
	if a := <-first; a.code != http.StatusOK || len(a.Warnings) == 0 {
		t.Errorf("first request: %s; want a warned partial answer", a)
	}
	if a := ask(t, p.URL, e2eproxy.Instant(f, "vector(1)")); a.code != http.StatusOK {
		t.Errorf("after the slot freed: %s", a)
	}
}

// testGarbageFromClients: oversized bodies, malformed parameters and random
// junk get Prometheus-style 4xx answers, never a 5xx or a crash.
func testGarbageFromClients(t *testing.T, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, e2eproxy.FaultConfig(f))
	send := func(method, path, contentType string, body io.Reader) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, p.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	form := "application/x-www-form-urlencoded"

	// Bodies over the limit: 413 in Prometheus' JSON.
	huge := "query=up&x=" + strings.Repeat("a", 2<<20)
	for _, path := range []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels"} {
		code, body := send(http.MethodPost, path, form, strings.NewReader(huge))
		if code != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte(`"errorType":"bad_data"`)) {
			t.Errorf("POST %s with a 2 MiB body: HTTP %d %s; want 413 bad_data", path, code, e2eproxy.Clip(body))
		}
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("query", "up")
	_ = mw.WriteField("x", strings.Repeat("a", 2<<20))
	_ = mw.Close()
	if code, body := send(http.MethodPost, "/api/v1/query", mw.FormDataContentType(), &mp); code/100 != 4 || !bytes.Contains(body, []byte(`"status":"error"`)) {
		t.Errorf("2 MiB multipart body: HTTP %d %s; want a 4xx JSON error", code, e2eproxy.Clip(body))
	}

	// Malformed parameters: 400 bad_data, as Prometheus answers them.
	at := e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))
	for _, q := range []string{
		"query=up&time=yesterday",
		"query=up&time=" + at + "&timeout=forever",
		"query=%ff%fe%00",
		"query=" + url.QueryEscape(strings.Repeat("(", 10000)+"up"),
		"query=up&partial_response=2",
		"query=up%zz",
	} {
		for _, post := range []bool{false, true} {
			var code int
			var body []byte
			if post {
				code, body = send(http.MethodPost, "/api/v1/query", form, strings.NewReader(q))
			} else {
				code, body = send(http.MethodGet, "/api/v1/query?"+q, "", nil)
			}
			if code != http.StatusBadRequest || !bytes.Contains(body, []byte(`"errorType":"bad_data"`)) {
				t.Errorf("query %.60q (POST %v): HTTP %d %s; want 400 bad_data", q, post, code, e2eproxy.Clip(body))
			}
		}
	}
	for _, path := range []string{
		"/api/v1/query_range?query=up&start=1&end=0&step=10",
		"/api/v1/query_range?query=up&start=0&end=100&step=-5",
		"/api/v1/query_range?query=up&start=a&end=b&step=c",
		"/api/v1/series?match[]=" + url.QueryEscape("{{"),
		"/api/v1/series",
		"/api/v1/labels?limit=x",
		"/api/v1/labels?match[]=" + url.QueryEscape(`up{a=~"("}`),
		"/api/v1/label/job/values?start=x",
		"/api/v1/metadata?limit=x",
	} {
		if code, body := send(http.MethodGet, path, "", nil); code != http.StatusBadRequest || !bytes.Contains(body, []byte(`"errorType":"bad_data"`)) {
			t.Errorf("GET %s: HTTP %d %s; want 400 bad_data", path, code, e2eproxy.Clip(body))
		}
	}

	// Random junk: any 4xx is fine, a 5xx (a panic answers 500) is not.
	rng := rand.New(rand.NewPCG(7, 7))
	junk := func(n int) string {
		b := make([]byte, rng.IntN(n)+1)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return string(b)
	}
	paths := []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels", "/api/v1/label/" + url.PathEscape(junk(10)) + "/values", "/api/v1/metadata", "/api/v1/query_exemplars"}
	keys := []string{"query", "time", "start", "end", "step", "timeout", "match[]", "limit", "partial_response", "lookback_delta", "stats", junk(5)}
	for i := range 300 {
		v := url.Values{}
		for range rng.IntN(5) + 1 {
			v.Add(keys[rng.IntN(len(keys))], junk(40))
		}
		path := paths[rng.IntN(len(paths))]
		var code int
		var body []byte
		if i%2 == 0 {
			code, body = send(http.MethodGet, path+"?"+v.Encode(), "", nil)
		} else {
			code, body = send(http.MethodPost, path, form, strings.NewReader(v.Encode()))
		}
		if code >= 500 || !json.Valid(body) {
			t.Errorf("junk request %d %s %q: HTTP %d %s", i, path, v.Encode(), code, e2eproxy.Clip(body))
		}
	}
	if n := e2eproxy.MetricSum(t, p, "prometheus_proxy_requests_total", `code="5`); n != 0 {
		t.Errorf("%v answers were 5xx", n)
	}
	if a := ask(t, p.URL, e2eproxy.Instant(f, "count(up)")); a.code != http.StatusOK {
		t.Errorf("after the junk: %s", a)
	}
}
