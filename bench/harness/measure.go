package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// counters are cumulative backend reads, from both ends: the backends'
// own instrumentation of their remote-read handler, and the proxy's
// counters of its calls.
type counters struct {
	reads, bytes          float64 // backends: remote-read requests, response bytes
	proxyReqs, proxyBytes float64 // proxy: calls to backends, bytes (if exported)
	hits, misses          float64 // proxy: cache lookups, once the cache is in
	pushed, fallback      float64 // proxy: queries pushed down, or evaluated in the proxy after a refusal
}

func (c counters) sub(o counters) counters {
	return counters{c.reads - o.reads, c.bytes - o.bytes, c.proxyReqs - o.proxyReqs, c.proxyBytes - o.proxyBytes,
		c.hits - o.hits, c.misses - o.misses, c.pushed - o.pushed, c.fallback - o.fallback}
}

func (c counters) add(o counters) counters {
	return counters{c.reads + o.reads, c.bytes + o.bytes, c.proxyReqs + o.proxyReqs, c.proxyBytes + o.proxyBytes,
		c.hits + o.hits, c.misses + o.misses, c.pushed + o.pushed, c.fallback + o.fallback}
}

// backendHandlers are what the proxy asks a backend for data: remote read,
// and with push-down the query endpoints and the series probe.
var backendHandlers = []string{"/api/v1/read", "/api/v1/query", "/api/v1/query_range", "/api/v1/series"}

// pushDownMetric counts the proxy's queries with parts the backends
// evaluated (outcome="pushed") or that fell back to the proxy's engine.
const pushDownMetric = "prometheus_proxy_pushdown_queries_total"

// counters scrapes every backend and the proxy. The scrapes happen between
// timed requests, never during one.
func (r *runner) counters(ctx context.Context, proxyURL string) (counters, error) {
	var (
		mu   sync.Mutex
		c    counters
		errs []error
		wg   sync.WaitGroup
	)
	// scrape reads url's metrics and hands read a function that adds a
	// metric's sum to a counter; read runs under mu.
	scrape := func(url string, read func(text []byte, add func(to *float64, name string, fragments ...string))) {
		text, err := fetch(ctx, r.hc, url)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		read(text, func(to *float64, name string, fragments ...string) {
			v, err := e2ehost.SumMetric(bytes.NewReader(text), name, fragments...)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", url, err))
			}
			*to += v
		})
	}
	for _, b := range r.backends {
		wg.Go(func() {
			scrape(b.URL+"/metrics", func(_ []byte, add func(*float64, string, ...string)) {
				for _, h := range backendHandlers {
					match := `handler="` + h + `"`
					add(&c.reads, "prometheus_http_requests_total", match)
					add(&c.bytes, "prometheus_http_response_size_bytes_sum", match)
				}
			})
		})
	}
	wg.Go(func() {
		scrape(proxyURL+"/metrics", func(text []byte, add func(*float64, string, ...string)) {
			add(&c.proxyReqs, "prometheus_proxy_backend_requests_total")
			add(&c.hits, "prometheus_proxy_cache_requests_total", `result="hit"`)
			add(&c.misses, "prometheus_proxy_cache_requests_total", `result="miss"`)
			add(&c.pushed, pushDownMetric, `outcome="pushed"`)
			add(&c.fallback, pushDownMetric, `outcome="fallback"`)
			if r.proxyBytesMetric == "" {
				r.proxyBytesMetric = findBytesCounter(text)
			}
			if r.proxyBytesMetric != "" {
				add(&c.proxyBytes, r.proxyBytesMetric)
			}
		})
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("scrape counters: %w", err)
	}
	return c, nil
}

// findBytesCounter picks the proxy's counter of bytes read from backends,
// if this build has one (e.g. prometheus_proxy_backend_read_bytes_total).
func findBytesCounter(text []byte) string {
	for _, name := range metricNames(text, "prometheus_proxy_backend_") {
		if len(name) > len("_bytes_total") && name[len(name)-len("_bytes_total"):] == "_bytes_total" {
			return name
		}
	}
	return ""
}

// entry returns m[k], adding a zero one first when there is none; callers
// hold r.mu.
func entry[K comparable, V any](m map[K]*V, k K) *V {
	v := m[k]
	if v == nil {
		v = new(V)
		m[k] = v
	}
	return v
}

func (r *runner) cell(k cellKey) *cell { return entry(r.cells, k) }

func (r *runner) passStats(k passKey) *passStats { return entry(r.passes, k) }

// one times a single request at concurrency 1, counting the backend reads
// it caused when t is a proxy. With keep, it returns the answer's shape
// and body.
func (r *runner) one(ctx context.Context, phase string, t endpoint, rq request, keep bool) (*answerShape, []byte, error) {
	var before counters
	if t.proxy {
		var err error
		if before, err = r.counters(ctx, t.url); err != nil {
			return nil, nil, err
		}
	}
	cpu0 := t.cpu()
	var (
		d    time.Duration
		body []byte
		err  error
	)
	if len(t.each) > 0 {
		d, err = queryEach(ctx, r.hc, t.each, rq)
	} else {
		d, body, err = query(ctx, r.hc, t.url, rq, keep)
	}
	cpu := t.cpu().sub(cpu0)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		r.warn("%s %s %s: %v", phase, t.name, r.panels[rq.panel].ID, err)
		r.mu.Lock()
		r.cell(cellKey{phase, t.name, 1, rq.panel}).errors++
		r.mu.Unlock()
		return nil, nil, nil
	}
	var delta counters
	if t.proxy {
		after, err := r.counters(ctx, t.url)
		if err != nil {
			return nil, nil, err
		}
		delta = after.sub(before)
	}
	r.mu.Lock()
	c := r.cell(cellKey{phase, t.name, 1, rq.panel})
	c.lat = append(c.lat, d)
	ps := r.passStats(passKey{phase, t.name, 1})
	ps.execs++
	ps.busy += d
	ps.cpu = ps.cpu.add(cpu)
	ps.cpuCounted = len(t.servers) > 0
	if t.proxy {
		c.deltas = append(c.deltas, delta)
		ps.total = ps.total.add(delta)
		ps.counted = true
	}
	r.mu.Unlock()
	if !keep {
		return nil, nil, nil
	}
	s, err := shapeOf(body)
	if err != nil {
		r.warn("%s %s %s: %v", phase, t.name, r.panels[rq.panel].ID, err)
		return nil, nil, nil
	}
	return &s, body, nil
}

// sequential runs the dashboard once at concurrency 1; with verify, every
// answer is checked against the reference's answer at now.
func (r *runner) sequential(ctx context.Context, phase string, t endpoint, reqs []request, verify bool) error {
	for _, rq := range reqs {
		s, body, err := r.one(ctx, phase, t, rq, verify)
		if err != nil {
			return err
		}
		if s != nil {
			r.checkAnswer(cellKey{phase, t.name, 1, rq.panel}, body, *s)
		}
	}
	r.mu.Lock()
	r.passStats(passKey{phase, t.name, 1}).passes++
	r.mu.Unlock()
	return nil
}

// pass loads the dashboard once with conc requests in flight, as Grafana
// loads the panels of a dashboard in parallel: every query is asked once,
// the next one as soon as a request ends.
func (r *runner) pass(ctx context.Context, phase string, t endpoint, conc int, reqs []request) error {
	var before counters
	if t.proxy {
		var err error
		if before, err = r.counters(ctx, t.url); err != nil {
			return err
		}
	}
	queue := make(chan request, len(reqs))
	for _, rq := range reqs {
		queue <- rq
	}
	close(queue)
	var wg sync.WaitGroup
	cpu0 := t.cpu()
	t0 := time.Now()
	for range conc {
		wg.Go(func() {
			for rq := range queue {
				d, _, err := query(ctx, r.hc, t.url, rq, false)
				r.mu.Lock()
				c := r.cell(cellKey{phase, t.name, conc, rq.panel})
				if err != nil {
					c.errors++
				} else {
					c.lat = append(c.lat, d)
				}
				r.mu.Unlock()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					r.warn("%s %s c=%d %s: %v", phase, t.name, conc, r.panels[rq.panel].ID, err)
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(t0)
	cpu := t.cpu().sub(cpu0)
	if err := ctx.Err(); err != nil {
		return err
	}
	var delta counters
	if t.proxy {
		after, err := r.counters(ctx, t.url)
		if err != nil {
			return err
		}
		delta = after.sub(before)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.passStats(passKey{phase, t.name, conc})
	ps.passes++
	ps.execs += len(reqs)
	ps.busy += wall
	ps.cpu = ps.cpu.add(cpu)
	ps.cpuCounted = len(t.servers) > 0
	if t.proxy {
		ps.total = ps.total.add(delta)
		ps.counted = true
	}
	return nil
}

// verifyPass asks the dashboard once with conc requests in flight, untimed,
// and checks every answer against the reference's.
func (r *runner) verifyPass(ctx context.Context, phase string, t endpoint, conc int, reqs []request) error {
	queue := make(chan request, len(reqs))
	for _, rq := range reqs {
		queue <- rq
	}
	close(queue)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for rq := range queue {
				_, body, err := query(ctx, r.hc, t.url, rq, true)
				if err != nil {
					if ctx.Err() == nil {
						r.warn("%s %s c=%d %s: %v", phase, t.name, conc, r.panels[rq.panel].ID, err)
					}
					continue
				}
				s, err := shapeOf(body)
				if err != nil {
					r.warn("%s %s c=%d %s: %v", phase, t.name, conc, r.panels[rq.panel].ID, err)
					continue
				}
				r.checkAnswer(cellKey{phase, t.name, conc, rq.panel}, body, s)
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// checkAnswer records how an answer at now compares with the reference's:
// bit for bit, and for the re-associating proxy, when not, point by point
// within floatTolerance.
func (r *runner) checkAnswer(k cellKey, body []byte, got answerShape) {
	want := r.refShapes[k.panel]
	if k.target != TargetReassociate || (want.Digest != "" && want.Digest == got.Digest) {
		r.compareShape(k, want, got)
		return
	}
	why := "the reference did not answer"
	if ref := r.refValues[k.panel]; ref != nil {
		v, err := valuesOf(body)
		if err != nil {
			why = err.Error()
		} else {
			why = compareValues(ref, v, floatTolerance)
		}
	}
	r.mu.Lock()
	ch := r.checkFor(k)
	if why == "" {
		ch.close++
	} else {
		ch.differ++
	}
	r.mu.Unlock()
	if why != "" {
		r.warn("%s %s %s: answer not within %g of the reference: %s", k.phase, k.target, r.panels[k.panel].ID, floatTolerance, why)
	}
}

func (r *runner) checkFor(k cellKey) *check { return entry(r.checks, k) }

// compareShape records whether an answer equals the reference's.
func (r *runner) compareShape(k cellKey, want, got answerShape) {
	r.mu.Lock()
	ch := r.checkFor(k)
	same := want.Digest != "" && want.Digest == got.Digest
	if same {
		ch.same++
	} else {
		ch.differ++
	}
	r.mu.Unlock()
	if !same {
		r.warn("%s %s %s: answer differs from the reference (%d series/%d points, reference %d/%d)",
			k.phase, k.target, r.panels[k.panel].ID, got.Series, got.Points, want.Series, want.Points)
	}
}
