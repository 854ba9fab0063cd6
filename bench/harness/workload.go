package harness

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Panel is one query of the dashboard, written the way a Grafana panel holds
// it: $__rate_interval and $__interval are filled in per refresh, and the
// step follows from the time range and the panel's width, as Grafana does.
type Panel struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Expr  string `json:"expr"`
	// Instant panels (stats, tables, bar gauges) ask /api/v1/query at "now".
	Instant bool `json:"instant"`
	// Range is the dashboard's time range for this panel (range panels).
	Range time.Duration `json:"-"`
	// Width in pixels is Grafana's maxDataPoints.
	Width int `json:"width"`
}

// Dashboard is the fixed workload: what a team's service dashboard plus a
// cluster overview ask. Ranges are 1 h, 3 h and 6 h (clamped to the data);
// the heavy queries read every cluster's series.
func Dashboard() []Panel {
	const h = time.Hour
	return []Panel{
		{ID: "q01", Title: "request rate by namespace", Expr: `sum by (namespace) (rate(http_requests_total[$__rate_interval]))`, Range: 6 * h, Width: 1800},
		{ID: "q02", Title: "5xx rate by namespace, code", Expr: `sum by (namespace, code) (rate(http_requests_total{code=~"5.."}[$__rate_interval]))`, Range: 3 * h, Width: 900},
		{ID: "q03", Title: "error ratio", Expr: `sum(rate(http_requests_total{code=~"5.."}[$__rate_interval])) / sum(rate(http_requests_total[$__rate_interval]))`, Range: 6 * h, Width: 900},
		{ID: "q04", Title: "p99 latency by namespace", Expr: `histogram_quantile(0.99, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[$__rate_interval])))`, Range: 3 * h, Width: 900},
		{ID: "q05", Title: "p50 latency by job, one team", Expr: `histogram_quantile(0.5, sum by (le, job) (rate(http_request_duration_seconds_bucket{namespace="team-a"}[$__rate_interval])))`, Range: 6 * h, Width: 900},
		{ID: "q06", Title: "mean latency by job", Expr: `sum by (job) (rate(http_request_duration_seconds_sum[$__rate_interval])) / sum by (job) (rate(http_request_duration_seconds_count[$__rate_interval]))`, Range: 1 * h, Width: 600},
		{ID: "q07", Title: "top 5 instances by requests", Expr: `topk(5, sum by (instance) (rate(http_requests_total[$__rate_interval])))`, Range: 1 * h, Width: 600},
		{ID: "q08", Title: "top 10 memory users", Expr: `topk(10, memory_usage_bytes)`, Range: 3 * h, Width: 900},
		{ID: "q09", Title: "memory by cluster", Expr: `sum by (cluster) (memory_usage_bytes)`, Range: 6 * h, Width: 600},
		{ID: "q10", Title: "mean memory by team", Expr: `avg by (namespace) (memory_usage_bytes{namespace=~"team-.*"})`, Range: 6 * h, Width: 200},
		{ID: "q11", Title: "CPU by mode", Expr: `sum by (mode) (rate(node_cpu_seconds_total{mode!="idle"}[$__rate_interval]))`, Range: 6 * h, Width: 1800},
		{ID: "q12", Title: "CPU busy by cluster", Expr: `1 - avg by (cluster) (rate(node_cpu_seconds_total{mode="idle"}[$__rate_interval]))`, Range: 3 * h, Width: 600},
		{ID: "q13", Title: "targets up by job", Expr: `count by (job) (up == 1)`, Range: 6 * h, Width: 600},
		{ID: "q14", Title: "targets down by cluster", Expr: `count by (cluster) (up == 0)`, Range: 1 * h, Width: 600},
		{ID: "q15", Title: "max temperature by cluster", Expr: `max by (cluster) (temperature_celsius)`, Range: 6 * h, Width: 100},
		{ID: "q16", Title: "p95 temperature, one team", Expr: `quantile_over_time(0.95, temperature_celsius{namespace="team-b"}[$__interval])`, Range: 1 * h, Width: 300},
		{ID: "q17", Title: "requests per hour, one job", Expr: `increase(http_requests_total{namespace="team-c",job="api"}[1h])`, Range: 6 * h, Width: 300},
		{ID: "q18", Title: "top 10 instances now", Expr: `topk(10, sum by (instance) (rate(http_requests_total[5m])))`, Instant: true},
		{ID: "q19", Title: "targets per namespace now", Expr: `count by (namespace) (up)`, Instant: true},
		{ID: "q20", Title: "requests in the last hour", Expr: `sum(increase(http_requests_total[1h]))`, Instant: true},
		{ID: "q21", Title: "p90 latency over the last hour", Expr: `histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[1h])))`, Instant: true},
		{ID: "q22", Title: "series per metric, one job", Expr: `count by (__name__) ({job="api"})`, Instant: true},
	}
}

// request is one panel resolved for one refresh: the expression and times
// exactly as sent.
type request struct {
	panel      int
	expr       string
	instant    bool
	at         time.Time // instant queries
	start, end time.Time // range queries
	step       time.Duration
}

func (r request) path() string {
	if r.instant {
		return "/api/v1/query"
	}
	return "/api/v1/query_range"
}

func (r request) form() url.Values {
	if r.instant {
		return url.Values{"query": {r.expr}, "time": {unixSeconds(r.at)}}
	}
	return url.Values{"query": {r.expr}, "start": {unixSeconds(r.start)}, "end": {unixSeconds(r.end)},
		"step": {strconv.FormatFloat(r.step.Seconds(), 'f', -1, 64)}}
}

// shifted moves the request by k of its own steps (instant queries by k
// scrape intervals): one dashboard refresh each.
func (r request) shifted(k int) request {
	d := time.Duration(k) * r.step
	r.at, r.start, r.end = r.at.Add(d), r.start.Add(d), r.end.Add(d)
	return r
}

func unixSeconds(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// resolve turns a panel into the request Grafana would send at now, for data
// scraped every scrape and a window of at most maxRange.
func resolve(p Panel, idx int, now time.Time, scrape, maxRange time.Duration) request {
	rng := min(p.Range, maxRange)
	step := scrape
	if !p.Instant {
		step = grafanaInterval(rng, p.Width, scrape)
	}
	// $__rate_interval: four scrapes at least, and one step more than the
	// interval, so every window holds two samples.
	rateInterval := max(step+scrape, 4*scrape)
	expr := strings.ReplaceAll(p.Expr, "$__rate_interval", promDuration(rateInterval))
	expr = strings.ReplaceAll(expr, "$__interval", promDuration(step))
	r := request{panel: idx, expr: expr, instant: p.Instant, at: now, step: step}
	if !p.Instant {
		// Grafana aligns both ends to the step, which makes consecutive
		// refreshes share their evaluation grid.
		r.end = now.Truncate(step)
		r.start = now.Add(-rng).Truncate(step)
	}
	return r
}

// niceIntervals are the steps Grafana rounds a computed interval to.
var niceIntervals = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 20 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
	20 * time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// grafanaInterval is range/maxDataPoints rounded to the nearest nice
// interval (rounding at the midpoints), and never below the scrape
// interval, which the data source declares as its minimum.
func grafanaInterval(rng time.Duration, width int, scrape time.Duration) time.Duration {
	raw := rng / time.Duration(max(width, 1))
	iv := niceIntervals[len(niceIntervals)-1]
	for i := 0; i+1 < len(niceIntervals); i++ {
		if raw < (niceIntervals[i]+niceIntervals[i+1])/2 {
			iv = niceIntervals[i]
			break
		}
	}
	return max(iv, scrape)
}

// promDuration prints d in PromQL's duration syntax (1h, 4m, 90s).
func promDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}
