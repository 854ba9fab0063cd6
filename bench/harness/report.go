package harness

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is everything a run measured; it is written as JSON as is, and
// rendered to Markdown and SVG.
type Report struct {
	Started      time.Time          `json:"started"`
	Seconds      float64            `json:"seconds"`
	PhaseSeconds map[string]float64 `json:"phase_seconds"`
	Machine      Machine            `json:"machine"`
	Dataset      DatasetInfo        `json:"dataset"`
	Settings     Settings           `json:"settings"`
	Queries      []QueryReport      `json:"queries"`
	Phases       []PhaseReport      `json:"phases"`
	Memory       []MemoryReport     `json:"memory"`
	Summary      Summary            `json:"summary"`
	Notes        []string           `json:"notes,omitempty"`
	Warnings     []string           `json:"warnings,omitempty"`
}

// Machine says where the numbers come from.
type Machine struct {
	CPUs         int    `json:"cpus"`
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	GoVersion    string `json:"go_version"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	Prometheus   string `json:"prometheus"`
	Proxy        string `json:"proxy"`
}

// DatasetInfo describes the generated data.
type DatasetInfo struct {
	Hash             string  `json:"hash"`
	Series           int     `json:"series"`
	SamplesPerSeries int     `json:"samples_per_series"`
	Samples          int64   `json:"samples"`
	Hours            float64 `json:"hours"`
	IntervalSeconds  float64 `json:"interval_seconds"`
	Shards           int     `json:"shards"`
	Namespaces       int     `json:"namespaces"`
	// Disjoint: every shard holds only its cluster's series.
	Disjoint     bool      `json:"disjoint,omitempty"`
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
	BuildSeconds float64   `json:"build_seconds"`
	BlockBytes   int64     `json:"block_bytes"`
}

// Settings are the run's knobs.
type Settings struct {
	Quick              bool    `json:"quick"`
	Concurrency        []int   `json:"concurrency"`
	UncachedRounds     int     `json:"uncached_rounds"`
	ColdRounds         int     `json:"cold_rounds"`
	WarmRounds         int     `json:"warm_rounds"`
	SlidingRounds      int     `json:"sliding_rounds"`
	ConcRounds         int     `json:"concurrent_rounds"`
	PhaseBudgetSeconds float64 `json:"phase_budget_seconds"`
	Compare            string  `json:"compare,omitempty"`
	// CachedTarget is the configuration the cold, warm and sliding phases
	// ran (TargetPushDown or TargetProxy; empty in reports from before
	// push-down was measured: TargetProxy).
	CachedTarget string `json:"cached_target,omitempty"`
}

// QueryReport is one dashboard panel and what it measured.
type QueryReport struct {
	ID           string   `json:"id"`
	Title        string   `json:"title"`
	Expr         string   `json:"expr"`
	Kind         string   `json:"kind"`
	RangeSeconds float64  `json:"range_seconds,omitempty"`
	StepSeconds  float64  `json:"step_seconds,omitempty"`
	Series       int      `json:"series"`
	Points       int      `json:"points"`
	Results      []Result `json:"results"`
	// Spans compares what the first load and a refresh asked the backends
	// for (range of time summed over remote-read queries, and bytes).
	Spans *SpanReport `json:"spans,omitempty"`
}

// Result is one query on one target in one phase at one concurrency.
// Latencies are in milliseconds.
type Result struct {
	Phase       string  `json:"phase"`
	Target      string  `json:"target"`
	Concurrency int     `json:"concurrency"`
	Samples     int     `json:"samples"`
	Errors      int     `json:"errors,omitempty"`
	P50         float64 `json:"p50_ms"`
	P90         float64 `json:"p90_ms"`
	P99         float64 `json:"p99_ms"`
	Mean        float64 `json:"mean_ms"`
	Max         float64 `json:"max_ms"`
	// QPS is concurrency / mean latency: what this query alone would
	// sustain at this concurrency.
	QPS float64 `json:"qps"`
	// Ratio is P50 over the reference's P50 for the same query and
	// concurrency (in the same phase when the reference ran in it, else in
	// the uncached phase). 0 for the reference itself.
	Ratio float64 `json:"ratio_to_reference,omitempty"`
	// Backend reads per execution (proxy targets at concurrency 1).
	BackendReads         *float64 `json:"backend_reads,omitempty"`
	BackendBytes         *float64 `json:"backend_bytes,omitempty"`
	ProxyBackendRequests *float64 `json:"proxy_backend_requests,omitempty"`
	ProxyBackendBytes    *float64 `json:"proxy_backend_bytes,omitempty"`
	// Cache lookups per execution (one per instant query or range extent),
	// when the proxy exports prometheus_proxy_cache_requests_total.
	CacheHits   *float64 `json:"cache_hits,omitempty"`
	CacheMisses *float64 `json:"cache_misses,omitempty"`
	// Queries per execution that the proxy pushed down or, refused by a
	// check, evaluated itself (prometheus_proxy_pushdown_queries_total).
	PushedDown *float64 `json:"pushed_down,omitempty"`
	FellBack   *float64 `json:"fell_back,omitempty"`
	// Answers compared with the reference's: equal bit for bit, within
	// floatTolerance of it but not bit-equal (the re-associating proxy
	// only; the others are held to exact equality), and different.
	AnswersSame   int `json:"answers_same,omitempty"`
	AnswersClose  int `json:"answers_close,omitempty"`
	AnswersDiffer int `json:"answers_differ,omitempty"`
}

// SpanReport is the untimed tap pass of the sliding-window phase.
type SpanReport struct {
	LoadQueries       int     `json:"load_queries"`
	LoadSpanMinutes   float64 `json:"load_span_minutes"`
	LoadBytes         float64 `json:"load_bytes"`
	RefreshQueries    float64 `json:"refresh_queries"`
	RefreshSpanMinute float64 `json:"refresh_span_minutes"`
	RefreshBytes      float64 `json:"refresh_bytes"`
}

// PhaseReport adds up a phase for one target and concurrency.
type PhaseReport struct {
	Phase       string  `json:"phase"`
	Target      string  `json:"target"`
	Concurrency int     `json:"concurrency"`
	Passes      int     `json:"passes"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors,omitempty"`
	BusySeconds float64 `json:"busy_seconds"`
	QPS         float64 `json:"qps"`
	P50         float64 `json:"p50_ms"`
	P90         float64 `json:"p90_ms"`
	P99         float64 `json:"p99_ms"`
	// DashboardMillis is the mean time of one pass over the dashboard: at
	// concurrency 1 the sum of its latencies, above that the wall time
	// with that many panels loading at once.
	DashboardMillis float64 `json:"dashboard_ms"`
	// RatioGeomean is the geometric mean over queries of Result.Ratio.
	RatioGeomean float64 `json:"ratio_geomean,omitempty"`
	// CPUSecondsPerPass is the CPU time the servers answering used per
	// pass: the reference alone, or a proxy and all the backends.
	CPUSecondsPerPass *float64 `json:"cpu_seconds_per_pass,omitempty"`
	// ProxyCPUSecondsPerPass is the proxy's own part of it.
	ProxyCPUSecondsPerPass *float64 `json:"proxy_cpu_seconds_per_pass,omitempty"`
	// CriticalPathSecondsPerPass models a pass with every backend on a
	// machine of its own: the proxy's CPU plus the busiest backend's (the
	// reference: its CPU).
	CriticalPathSecondsPerPass *float64 `json:"critical_path_seconds_per_pass,omitempty"`
	// Per pass over the dashboard, when counted (proxy targets).
	BackendReadsPerPass         *float64 `json:"backend_reads_per_pass,omitempty"`
	BackendBytesPerPass         *float64 `json:"backend_bytes_per_pass,omitempty"`
	ProxyBackendRequestsPerPass *float64 `json:"proxy_backend_requests_per_pass,omitempty"`
	CacheHitsPerPass            *float64 `json:"cache_hits_per_pass,omitempty"`
	CacheMissesPerPass          *float64 `json:"cache_misses_per_pass,omitempty"`
	PushedDownPerPass           *float64 `json:"pushed_down_per_pass,omitempty"`
}

// MemoryReport is the peak resident memory (VmHWM) of one server process.
type MemoryReport struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Target and Concurrency name what an uncached proxy instance ran.
	Target       string `json:"target,omitempty"`
	Concurrency  int    `json:"concurrency,omitempty"`
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
}

// Summary holds the headline numbers.
type Summary struct {
	PerConcurrency []ConcSummary `json:"per_concurrency"`
	// Sliding window, range panels, concurrency 1: one refresh against the
	// first load of the dashboard.
	SlidingBytesFraction float64 `json:"sliding_bytes_fraction"`
	SlidingSpanFraction  float64 `json:"sliding_span_fraction"`
	SlidingReadsPerLoad  float64 `json:"sliding_reads_per_load"`
	SlidingReadsPerRefr  float64 `json:"sliding_reads_per_refresh"`
	PeakRSSProxy         int64   `json:"peak_rss_proxy_bytes"`
	PeakRSSBackend       int64   `json:"peak_rss_backend_bytes"`
	PeakRSSReference     int64   `json:"peak_rss_reference_bytes"`
	// PeakRSSBackendsSum adds up every backend's peak.
	PeakRSSBackendsSum int64  `json:"peak_rss_backends_sum_bytes"`
	Targets            []Goal `json:"targets"`
	AnswersChecked     int    `json:"answers_checked"`
	AnswersDiffer      int    `json:"answers_differ"`
	// Per uncached configuration: answers checked and differing.
	AnswersByTarget []TargetAnswers `json:"answers_by_target,omitempty"`
	// Panels whose uncached push-down executions at concurrency 1 were
	// pushed, and those where a check refused it (evaluated in the proxy).
	PushedPanels   []string `json:"pushed_panels,omitempty"`
	FallbackPanels []string `json:"fallback_panels,omitempty"`
	// The same with `float_sums: reassociate`.
	ReassociatePushedPanels   []string `json:"reassociate_pushed_panels,omitempty"`
	ReassociateFallbackPanels []string `json:"reassociate_fallback_panels,omitempty"`
}

// TargetAnswers counts one target's answers checked against the reference:
// Checked − Close − Differ were bit-equal, Close within floatTolerance
// without being bit-equal (re-associating proxy only), Differ neither.
type TargetAnswers struct {
	Target  string `json:"target"`
	Checked int    `json:"checked"`
	Close   int    `json:"close,omitempty"`
	Differ  int    `json:"differ"`
}

// ConcSummary is one concurrency level: geometric means over queries of
// p50 ratios, dashboard times and throughput per phase.
type ConcSummary struct {
	Concurrency   int     `json:"concurrency"`
	UncachedRatio float64 `json:"uncached_ratio"`
	ColdRatio     float64 `json:"cold_ratio"`
	WarmRatio     float64 `json:"warm_ratio"`
	SlidingRatio  float64 `json:"sliding_ratio,omitempty"`
	// Uncached with push-down on: geometric mean over every panel and
	// over the instant panels, and the worst panel.
	PushDownRatio        float64 `json:"pushdown_ratio,omitempty"`
	PushDownInstantRatio float64 `json:"pushdown_instant_ratio,omitempty"`
	PushDownWorstPanel   string  `json:"pushdown_worst_panel,omitempty"`
	PushDownWorstRatio   float64 `json:"pushdown_worst_ratio,omitempty"`
	// The same with `float_sums: reassociate`.
	ReassociateRatio        float64 `json:"reassociate_ratio,omitempty"`
	ReassociateInstantRatio float64 `json:"reassociate_instant_ratio,omitempty"`
	ReassociateWorstPanel   string  `json:"reassociate_worst_panel,omitempty"`
	ReassociateWorstRatio   float64 `json:"reassociate_worst_ratio,omitempty"`
	// ReassociateMedianRatio is the median over panels of the default
	// configuration's p50 ratio to the reference; ReassociateOverOff the
	// largest p50 with it over p50 with push-down off, and its panel.
	ReassociateMedianRatio  float64 `json:"reassociate_median_ratio,omitempty"`
	ReassociateOverOff      float64 `json:"reassociate_over_off,omitempty"`
	ReassociateOverOffPanel string  `json:"reassociate_over_off_panel,omitempty"`
	// The floor phase's medians over panels of p50 / the reference's p50
	// in that phase: the default configuration, the backends alone
	// (TargetBackendsAlone: this machine's floor of the default's median)
	// and the proxy over the reference (TargetOverReference: what
	// evaluating in the proxy costs without fan-out, the floor of the
	// push-down-off median).
	FloorDefaultMedianRatio  float64 `json:"floor_default_median_ratio,omitempty"`
	BackendsAloneMedianRatio float64 `json:"backends_alone_median_ratio,omitempty"`
	OverReferenceMedianRatio float64 `json:"over_reference_median_ratio,omitempty"`
	// The same for push-down off.
	UncachedInstantRatio float64 `json:"uncached_instant_ratio,omitempty"`
	// PeakRSSProxy, PeakRSSPushDown and PeakRSSReassociate: the uncached
	// proxy instances of this level, push-down off, on, and on with
	// re-associated sums.
	PeakRSSProxy       int64              `json:"peak_rss_proxy_bytes,omitempty"`
	PeakRSSPushDown    int64              `json:"peak_rss_pushdown_bytes,omitempty"`
	PeakRSSReassociate int64              `json:"peak_rss_reassociate_bytes,omitempty"`
	CompareRatio       float64            `json:"compare_ratio,omitempty"`
	WarmSpeedup        float64            `json:"warm_speedup"`
	DashboardMs        map[string]float64 `json:"dashboard_ms"`
	QPS                map[string]float64 `json:"qps"`
	// CPUSeconds per dashboard pass of the servers answering each column.
	CPUSeconds map[string]float64 `json:"cpu_seconds_per_pass,omitempty"`
	// ProxyCPUSeconds is the proxy's own part of CPUSeconds.
	ProxyCPUSeconds map[string]float64 `json:"proxy_cpu_seconds_per_pass,omitempty"`
	// CriticalPathSeconds per pass (PhaseReport.CriticalPathSecondsPerPass).
	CriticalPathSeconds map[string]float64 `json:"critical_path_seconds_per_pass,omitempty"`
}

// Goal is a target of the issue and whether this run met it.
type Goal struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Order of phases and targets in every listing.
var (
	phaseOrder  = []string{PhaseUncached, PhaseFloor, PhaseCold, PhaseWarm, phaseLoad, PhaseSliding}
	targetOrder = []string{TargetReference, TargetProxy, TargetPushDown, TargetReassociate, TargetCompare, TargetBackendsAlone, TargetOverReference}
)

func orderOf(list []string, s string) int {
	if i := slices.Index(list, s); i >= 0 {
		return i
	}
	return len(list)
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile uses the nearest rank, so with few samples p99 is the maximum.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sortedMillis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = millis(d)
	}
	sort.Float64s(out)
	return out
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func geomean(xs []float64) float64 {
	var s float64
	n := 0
	for _, x := range xs {
		if x > 0 {
			s += math.Log(x)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return math.Exp(s / float64(n))
}

func ptr(v float64) *float64 { return &v }

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func versionOf(bin string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

func (r *runner) report(started time.Time) *Report {
	cfg := r.ds.Config
	rep := &Report{
		Started:      started.UTC().Truncate(time.Second),
		Seconds:      time.Since(started).Seconds(),
		PhaseSeconds: r.phaseSeconds,
		Machine: Machine{
			CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(),
			LoadAvgStart: r.loadStart, LoadAvgEnd: loadAvg(),
			Prometheus: versionOf(r.opts.Prometheus), Proxy: versionOf(r.proxyBin),
		},
		Dataset: DatasetInfo{
			Hash: r.ds.Hash, Series: r.ds.Series, SamplesPerSeries: cfg.Steps(), Samples: r.ds.Samples,
			Hours: cfg.Duration.Hours(), IntervalSeconds: cfg.Interval.Seconds(), Shards: cfg.Shards(),
			Namespaces: len(cfg.Namespaces), Disjoint: cfg.Disjoint, Start: cfg.Start, End: cfg.Start.Add(cfg.Duration),
			BuildSeconds: r.ds.BuildSeconds, BlockBytes: r.ds.BlockBytes,
		},
		Settings: Settings{
			Quick: r.opts.Quick, Concurrency: r.opts.Concurrency, UncachedRounds: r.opts.UncachedRounds,
			ColdRounds: r.opts.ColdRounds, WarmRounds: r.opts.WarmRounds, SlidingRounds: r.opts.SlidingRounds,
			ConcRounds: r.opts.ConcRounds, PhaseBudgetSeconds: r.opts.PhaseBudget.Seconds(), Compare: r.opts.Compare,
			CachedTarget: cachedTarget(r.opts.CachedPushDown),
		},
		Notes:    r.notes(),
		Warnings: r.warnings,
	}

	// Per query.
	keys := make([]cellKey, 0, len(r.cells))
	for k := range r.cells {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.panel != b.panel {
			return a.panel < b.panel
		}
		if a.conc != b.conc {
			return a.conc < b.conc
		}
		if pa, pb := orderOf(phaseOrder, a.phase), orderOf(phaseOrder, b.phase); pa != pb {
			return pa < pb
		}
		return orderOf(targetOrder, a.target) < orderOf(targetOrder, b.target)
	})
	p50 := map[cellKey]float64{}
	for _, k := range keys {
		if lat := r.cells[k].lat; len(lat) > 0 {
			p50[k] = percentile(sortedMillis(lat), 0.5)
		}
	}
	refP50 := func(k cellKey) float64 {
		if v := p50[cellKey{k.phase, TargetReference, k.conc, k.panel}]; v > 0 {
			return v
		}
		return p50[cellKey{PhaseUncached, TargetReference, k.conc, k.panel}]
	}
	for i, p := range r.panels {
		rq := r.reqs[i]
		q := QueryReport{ID: p.ID, Title: p.Title, Expr: rq.expr, Kind: "range"}
		if p.Instant {
			q.Kind = "instant"
		} else {
			q.RangeSeconds = rq.end.Sub(rq.start).Seconds()
			q.StepSeconds = rq.step.Seconds()
		}
		if i < len(r.refShapes) {
			q.Series, q.Points = r.refShapes[i].Series, r.refShapes[i].Points
		}
		for _, k := range keys {
			if k.panel != i {
				continue
			}
			c := r.cells[k]
			ms := sortedMillis(c.lat)
			res := Result{Phase: k.phase, Target: k.target, Concurrency: k.conc, Samples: len(ms), Errors: c.errors,
				P50: percentile(ms, 0.5), P90: percentile(ms, 0.9), P99: percentile(ms, 0.99), Mean: mean(ms)}
			if len(ms) > 0 {
				res.Max = ms[len(ms)-1]
			}
			if res.Mean > 0 {
				res.QPS = float64(k.conc) * 1000 / res.Mean
			}
			if ref := refP50(k); k.target != TargetReference && ref > 0 && res.P50 > 0 {
				res.Ratio = res.P50 / ref
			}
			if n := float64(len(c.deltas)); n > 0 {
				var sum counters
				for _, d := range c.deltas {
					sum = sum.add(d)
				}
				res.BackendReads, res.BackendBytes = ptr(sum.reads/n), ptr(sum.bytes/n)
				res.ProxyBackendRequests = ptr(sum.proxyReqs / n)
				if r.proxyBytesMetric != "" {
					res.ProxyBackendBytes = ptr(sum.proxyBytes / n)
				}
				if sum.hits+sum.misses > 0 {
					res.CacheHits, res.CacheMisses = ptr(sum.hits/n), ptr(sum.misses/n)
				}
				if pushesDown(k.target) {
					res.PushedDown, res.FellBack = ptr(sum.pushed/n), ptr(sum.fallback/n)
				}
			}
			if ch := r.checks[k]; ch != nil {
				res.AnswersSame, res.AnswersClose, res.AnswersDiffer = ch.same, ch.close, ch.differ
			}
			q.Results = append(q.Results, res)
		}
		if i < len(r.spans) && r.spans[i].refreshes > 0 {
			s := r.spans[i]
			n := float64(s.refreshes)
			q.Spans = &SpanReport{
				LoadQueries: s.load.Queries, LoadSpanMinutes: s.load.SpanMs / 60000, LoadBytes: s.load.Bytes,
				RefreshQueries: float64(s.refresh.Queries) / n, RefreshSpanMinute: s.refresh.SpanMs / 60000 / n,
				RefreshBytes: s.refresh.Bytes / n,
			}
		}
		// Checks of the uncached verification pass have no timed cell.
		for _, t := range []string{TargetProxy, TargetPushDown, TargetReassociate, TargetCompare} {
			k := cellKey{PhaseUncached, t, 1, i}
			if ch := r.checks[k]; ch != nil && r.cells[k] == nil {
				q.Results = append(q.Results, Result{Phase: PhaseUncached, Target: t, Concurrency: 1,
					AnswersSame: ch.same, AnswersClose: ch.close, AnswersDiffer: ch.differ})
			}
		}
		rep.Queries = append(rep.Queries, q)
	}

	// Per phase.
	pkeys := make([]passKey, 0, len(r.passes))
	for k := range r.passes {
		pkeys = append(pkeys, k)
	}
	sort.Slice(pkeys, func(i, j int) bool {
		a, b := pkeys[i], pkeys[j]
		if a.conc != b.conc {
			return a.conc < b.conc
		}
		if pa, pb := orderOf(phaseOrder, a.phase), orderOf(phaseOrder, b.phase); pa != pb {
			return pa < pb
		}
		return orderOf(targetOrder, a.target) < orderOf(targetOrder, b.target)
	})
	for _, k := range pkeys {
		ps := r.passes[k]
		var all []time.Duration
		var ratios []float64
		errs := 0
		for i := range r.panels {
			ck := cellKey{k.phase, k.target, k.conc, i}
			c := r.cells[ck]
			if c == nil {
				continue
			}
			all = append(all, c.lat...)
			errs += c.errors
			if ref := refP50(ck); k.target != TargetReference && ref > 0 && p50[ck] > 0 {
				ratios = append(ratios, p50[ck]/ref)
			}
		}
		ms := sortedMillis(all)
		pr := PhaseReport{Phase: k.phase, Target: k.target, Concurrency: k.conc, Passes: ps.passes,
			Requests: len(ms), Errors: errs, BusySeconds: ps.busy.Seconds(),
			P50: percentile(ms, 0.5), P90: percentile(ms, 0.9), P99: percentile(ms, 0.99),
			RatioGeomean: geomean(ratios)}
		if ps.passes > 0 {
			pr.DashboardMillis = millis(ps.busy) / float64(ps.passes)
		}
		if ps.busy > 0 {
			pr.QPS = float64(ps.execs) / ps.busy.Seconds()
		}
		if ps.cpuCounted && ps.passes > 0 {
			pr.CPUSecondsPerPass = ptr(ps.cpu.total.Seconds() / float64(ps.passes))
			pr.CriticalPathSecondsPerPass = ptr(ps.cpu.criticalPath().Seconds() / float64(ps.passes))
			if ps.cpu.proxy > 0 {
				pr.ProxyCPUSecondsPerPass = ptr(ps.cpu.proxy.Seconds() / float64(ps.passes))
			}
		}
		if t := ps.total; ps.counted && ps.passes > 0 {
			n := float64(ps.passes)
			pr.BackendReadsPerPass, pr.BackendBytesPerPass = ptr(t.reads/n), ptr(t.bytes/n)
			pr.ProxyBackendRequestsPerPass = ptr(t.proxyReqs / n)
			if t.hits+t.misses > 0 {
				pr.CacheHitsPerPass, pr.CacheMissesPerPass = ptr(t.hits/n), ptr(t.misses/n)
			}
			if pushesDown(k.target) {
				pr.PushedDownPerPass = ptr(t.pushed / n)
			}
		}
		rep.Phases = append(rep.Phases, pr)
	}

	// Memory: every server, and the peaks per role.
	for _, s := range r.servers {
		m := MemoryReport{Name: s.Name, Role: s.Role, Target: s.Target, Concurrency: s.Concurrency, PeakRSSBytes: s.proc.PeakRSS()}
		rep.Memory = append(rep.Memory, m)
		switch s.Role {
		case "proxy":
			rep.Summary.PeakRSSProxy = max(rep.Summary.PeakRSSProxy, m.PeakRSSBytes)
		case "backend":
			rep.Summary.PeakRSSBackend = max(rep.Summary.PeakRSSBackend, m.PeakRSSBytes)
			rep.Summary.PeakRSSBackendsSum += m.PeakRSSBytes
		case "reference":
			rep.Summary.PeakRSSReference = m.PeakRSSBytes
		}
	}

	r.summarize(rep)
	return rep
}

// methodNotes say how the numbers were taken; they are the same for every
// run, so they are rendered rather than stored.
var methodNotes = []string{
	"Data comes from bench/datagen, written into TSDB blocks with Prometheus' own block writer (the one promtool's backfill uses) and cached under .cache/bench/<dataset>.",
	"The proxy runs with its defaults and request logs off; the caching proxy with `cache: {backend: memory}` (default size, split interval and freshness).",
	"Latency is the time until the whole answer was read, asked with POST like Grafana, without compression on either side.",
	"At concurrency 1 the queries run one after another; at concurrency N a pass loads the whole dashboard with N requests in flight, as Grafana loads panels in parallel. Phase throughput is requests over wall time; per query it is N / mean latency.",
	"Ratios are p50 over the reference's p50 for the same query and concurrency; phase ratios are geometric means over queries.",
	"Backend reads and bytes come from the backends' own counters of the handlers the proxy asks for data (prometheus_http_requests_total and prometheus_http_response_size_bytes_sum, handler=\"/api/v1/read\", and with push-down \"/api/v1/query\", \"/api/v1/query_range\" and the probe's \"/api/v1/series\").",
	"Cold samples are the first pass on a freshly started caching proxy (empty in-memory cache); the backends' page cache is warm throughout.",
	"Time spans per refresh come from an untimed repeat of the sliding-window phase through taps in front of the backends.",
	"Answers are compared with the reference's bit for bit (a digest of the JSON with series sorted, floats as printed), except those of `float_sums: reassociate`: same series, same timestamps, every value within " + toleranceString + " of the reference's relative to the larger magnitude (not-a-number equals not-a-number, an infinity only itself); bit-equal ones are counted apart.",
}

// floorNote says how the floor phase was taken, in reports that have it.
const floorNote = "The floor phase (`--floors`; concurrency 1, uncached) times four targets in a rotation of their own, each against the reference's p50 in that phase: the default configuration (push-down on, `float_sums: reassociate`); \"backends alone\", no proxy at all: each panel's request sent as it is to every backend at once, timed until the last has answered whole, i.e. the backends evaluating the panel over their parts of the data side by side on the same CPUs as everything else, the floor of a proxy that only passed the query on (their answers are each backend's part, not checked); and \"over reference\", a proxy with push-down off whose one group is the reference itself: evaluating in the proxy over remote read, as it does whatever it does not push, with no fan-out (its CPU per pass is the proxy's and the reference's). Timed in the uncached phase's rotation instead, these two made the reference's p50s 9-15 % lower there."

// notes are what is particular to this run.
func (r *runner) notes() []string {
	var notes []string
	if r.proxyBytesMetric != "" {
		notes = append(notes, "The proxy exports "+r.proxyBytesMetric+"; its per-execution deltas are in the JSON (proxy_backend_bytes).")
	}
	return append(notes, r.proxyNotes...)
}

func (r *runner) summarize(rep *Report) {
	s := &rep.Summary
	cached := rep.cachedTarget()
	byKey := map[cellKey]Result{}
	for i, q := range rep.Queries {
		for _, res := range q.Results {
			byKey[cellKey{res.Phase, res.Target, res.Concurrency, i}] = res
		}
	}
	phaseByKey := map[passKey]PhaseReport{}
	for _, p := range rep.Phases {
		phaseByKey[passKey{p.Phase, p.Target, p.Concurrency}] = p
	}
	for _, c := range r.opts.Concurrency {
		cs := ConcSummary{Concurrency: c, DashboardMs: map[string]float64{}, QPS: map[string]float64{}, CPUSeconds: map[string]float64{}, ProxyCPUSeconds: map[string]float64{}, CriticalPathSeconds: map[string]float64{}}
		cs.UncachedRatio = phaseByKey[passKey{PhaseUncached, TargetProxy, c}].RatioGeomean
		cs.PushDownRatio = phaseByKey[passKey{PhaseUncached, TargetPushDown, c}].RatioGeomean
		cs.ReassociateRatio = phaseByKey[passKey{PhaseUncached, TargetReassociate, c}].RatioGeomean
		cs.ColdRatio = phaseByKey[passKey{PhaseCold, cached, c}].RatioGeomean
		cs.WarmRatio = phaseByKey[passKey{PhaseWarm, cached, c}].RatioGeomean
		cs.SlidingRatio = phaseByKey[passKey{PhaseSliding, cached, c}].RatioGeomean
		cs.CompareRatio = phaseByKey[passKey{PhaseUncached, TargetCompare, c}].RatioGeomean
		var speedups, instOff, instOn, instRe, ratiosRe, floorRe, ratiosAlone, ratiosOver []float64
		for i, q := range rep.Queries {
			cold, warm := byKey[cellKey{PhaseCold, cached, c, i}], byKey[cellKey{PhaseWarm, cached, c, i}]
			if cold.P50 > 0 && warm.P50 > 0 {
				speedups = append(speedups, cold.P50/warm.P50)
			}
			off, on := byKey[cellKey{PhaseUncached, TargetProxy, c, i}], byKey[cellKey{PhaseUncached, TargetPushDown, c, i}]
			re := byKey[cellKey{PhaseUncached, TargetReassociate, c, i}]
			if q.Kind == "instant" {
				instOff, instOn, instRe = append(instOff, off.Ratio), append(instOn, on.Ratio), append(instRe, re.Ratio)
			}
			if on.Ratio > cs.PushDownWorstRatio {
				cs.PushDownWorstRatio, cs.PushDownWorstPanel = on.Ratio, q.ID
			}
			if re.Ratio > cs.ReassociateWorstRatio {
				cs.ReassociateWorstRatio, cs.ReassociateWorstPanel = re.Ratio, q.ID
			}
			if re.Ratio > 0 {
				ratiosRe = append(ratiosRe, re.Ratio)
			}
			if fr := byKey[cellKey{PhaseFloor, TargetReassociate, c, i}]; fr.Ratio > 0 {
				floorRe = append(floorRe, fr.Ratio)
			}
			if alone := byKey[cellKey{PhaseFloor, TargetBackendsAlone, c, i}]; alone.Ratio > 0 {
				ratiosAlone = append(ratiosAlone, alone.Ratio)
			}
			if over := byKey[cellKey{PhaseFloor, TargetOverReference, c, i}]; over.Ratio > 0 {
				ratiosOver = append(ratiosOver, over.Ratio)
			}
			if re.P50 > 0 && off.P50 > 0 && re.P50/off.P50 > cs.ReassociateOverOff {
				cs.ReassociateOverOff, cs.ReassociateOverOffPanel = re.P50/off.P50, q.ID
			}
		}
		sort.Float64s(ratiosRe)
		cs.ReassociateMedianRatio = percentile(ratiosRe, 0.5)
		sort.Float64s(floorRe)
		cs.FloorDefaultMedianRatio = percentile(floorRe, 0.5)
		sort.Float64s(ratiosAlone)
		cs.BackendsAloneMedianRatio = percentile(ratiosAlone, 0.5)
		sort.Float64s(ratiosOver)
		cs.OverReferenceMedianRatio = percentile(ratiosOver, 0.5)
		cs.WarmSpeedup = geomean(speedups)
		cs.UncachedInstantRatio, cs.PushDownInstantRatio = geomean(instOff), geomean(instOn)
		cs.ReassociateInstantRatio = geomean(instRe)
		for _, col := range rep.columns() {
			if p, ok := phaseByKey[passKey{col.phase, col.target, c}]; ok {
				cs.DashboardMs[col.name] = p.DashboardMillis
				cs.QPS[col.name] = p.QPS
				if p.CPUSecondsPerPass != nil {
					cs.CPUSeconds[col.name] = *p.CPUSecondsPerPass
				}
				if p.ProxyCPUSecondsPerPass != nil {
					cs.ProxyCPUSeconds[col.name] = *p.ProxyCPUSecondsPerPass
				}
				if p.CriticalPathSecondsPerPass != nil {
					cs.CriticalPathSeconds[col.name] = *p.CriticalPathSecondsPerPass
				}
			}
		}
		for _, m := range rep.Memory {
			if m.Concurrency != c {
				continue
			}
			switch m.Target {
			case TargetProxy:
				cs.PeakRSSProxy = m.PeakRSSBytes
			case TargetPushDown:
				cs.PeakRSSPushDown = m.PeakRSSBytes
			case TargetReassociate:
				cs.PeakRSSReassociate = m.PeakRSSBytes
			}
		}
		s.PerConcurrency = append(s.PerConcurrency, cs)
	}

	// Sliding window: range panels only; instant panels ask a new instant
	// every refresh, which no cache can reuse.
	var loadBytes, refrBytes, loadReads, refrReads, loadSpan, refrSpan float64
	for i, q := range rep.Queries {
		if q.Kind != "range" {
			continue
		}
		load, refr := byKey[cellKey{phaseLoad, cached, 1, i}], byKey[cellKey{PhaseSliding, cached, 1, i}]
		if load.BackendBytes != nil && refr.BackendBytes != nil {
			loadBytes += *load.BackendBytes
			refrBytes += *refr.BackendBytes
			loadReads += *load.BackendReads
			refrReads += *refr.BackendReads
		}
		if q.Spans != nil {
			loadSpan += q.Spans.LoadSpanMinutes
			refrSpan += q.Spans.RefreshSpanMinute
		}
	}
	if loadBytes > 0 {
		s.SlidingBytesFraction = refrBytes / loadBytes
	}
	if loadSpan > 0 {
		s.SlidingSpanFraction = refrSpan / loadSpan
	}
	s.SlidingReadsPerLoad, s.SlidingReadsPerRefr = loadReads, refrReads

	byTarget := map[string]*TargetAnswers{}
	for _, q := range rep.Queries {
		for _, res := range q.Results {
			n := res.AnswersSame + res.AnswersClose + res.AnswersDiffer
			s.AnswersChecked += n
			s.AnswersDiffer += res.AnswersDiffer
			if res.Phase != PhaseUncached || n == 0 {
				continue
			}
			ta := byTarget[res.Target]
			if ta == nil {
				ta = &TargetAnswers{Target: res.Target}
				byTarget[res.Target] = ta
			}
			ta.Checked += n
			ta.Close += res.AnswersClose
			ta.Differ += res.AnswersDiffer
		}
		if on, ok := q.result(PhaseUncached, TargetPushDown, 1); ok && on.PushedDown != nil {
			if *on.PushedDown > 0 {
				s.PushedPanels = append(s.PushedPanels, q.ID)
			}
			if *on.FellBack > 0 {
				s.FallbackPanels = append(s.FallbackPanels, q.ID)
			}
		}
		if re, ok := q.result(PhaseUncached, TargetReassociate, 1); ok && re.PushedDown != nil {
			if *re.PushedDown > 0 {
				s.ReassociatePushedPanels = append(s.ReassociatePushedPanels, q.ID)
			}
			if *re.FellBack > 0 {
				s.ReassociateFallbackPanels = append(s.ReassociateFallbackPanels, q.ID)
			}
		}
	}
	for _, t := range targetOrder {
		if ta := byTarget[t]; ta != nil {
			s.AnswersByTarget = append(s.AnswersByTarget, *ta)
		}
	}
	s.Targets = r.goals(rep)
}

// overOffNoise is how much slower than push-down off a panel may measure
// with push-down on before it counts as slower: panels the default
// configuration does not push run the same code either way, and their p50s
// still differ by this much between interleaved rounds.
const overOffNoise = 1.10

// goals are the targets the report is held to: the uncached ones, each
// for push-down on and for push-down on with re-associated sums, then the
// cache's.
func (r *runner) goals(rep *Report) []Goal {
	s := &rep.Summary
	var goals []Goal
	// Each uncached goal is a row per configuration, push-down off
	// alongside for comparison.
	configs := []string{TargetPushDown}
	if rep.hasTarget(TargetReassociate, PhaseUncached) {
		configs = append(configs, TargetReassociate)
	}
	suffix := map[string]string{TargetPushDown: "", TargetReassociate: "-reassociate"}
	haveLevels := len(s.PerConcurrency) > 0
	for _, kind := range []string{"uncached", "instant", "worst", "memory"} {
		for _, t := range configs {
			g := Goal{Name: kind + suffix[t]}
			var measured []string
			met := haveLevels
			for _, cs := range s.PerConcurrency {
				u := cs.uncached(t)
				at := " at concurrency " + itoa(cs.Concurrency)
				// The re-associating row names push-down on beside off.
				onRatio, onInstant := "", ""
				if t == TargetReassociate {
					onRatio, onInstant = "push-down on "+ratioString(cs.PushDownRatio)+", ", "on "+ratioString(cs.PushDownInstantRatio)+", "
				}
				switch kind {
				case "uncached":
					measured = append(measured, ratioString(u.ratio)+at+" ("+onRatio+"push-down off "+ratioString(cs.UncachedRatio)+")")
					met = met && u.ratio > 0 && u.ratio <= 1.0
				case "instant":
					measured = append(measured, ratioString(u.instant)+at+" ("+onInstant+"off "+ratioString(cs.UncachedInstantRatio)+")")
					met = met && u.instant > 0 && u.instant <= 1.2
				case "worst":
					measured = append(measured, u.worstPanel+" "+ratioString(u.worst)+at)
					met = met && u.worst > 0 && u.worst <= 1.3
				}
			}
			label := "uncached, " + targetTitle(t)
			switch kind {
			case "uncached":
				g.Goal = label + ": p50 ≤ 1.0× the reference (geometric mean over queries, every concurrency)"
			case "instant":
				g.Goal = label + ": instant panels ≤ 1.2× the reference (geometric mean over them)"
			case "worst":
				g.Goal = label + ": no panel above 1.3× the reference"
				if len(measured) > 0 {
					measured[0] = "worst: " + measured[0]
				}
			case "memory":
				if !haveLevels {
					continue
				}
				top := s.PerConcurrency[len(s.PerConcurrency)-1]
				rss := top.uncached(t).rss
				g.Goal = "peak RSS of the uncached proxy, " + targetTitle(t) + ", at concurrency " + itoa(top.Concurrency) + " ≤ the sum of the backends' peaks"
				on := ""
				if t == TargetReassociate {
					on = "push-down on " + formatBytes(float64(top.PeakRSSPushDown)) + ", "
				}
				measured = []string{formatBytes(float64(rss)) + " (" + on + "push-down off " + formatBytes(float64(top.PeakRSSProxy)) +
					"), backends " + formatBytes(float64(s.PeakRSSBackendsSum))}
				met = rss > 0 && rss <= s.PeakRSSBackendsSum
			}
			g.Measured, g.Met = strings.Join(measured, "; "), met
			goals = append(goals, g)
		}
	}
	if haveLevels && rep.hasTarget(TargetReassociate, PhaseUncached) {
		c1 := s.PerConcurrency[0]
		at := " at concurrency " + itoa(c1.Concurrency)
		median := ratioString(c1.ReassociateMedianRatio) + at
		if c1.FloorDefaultMedianRatio > 0 {
			// The floor phase has a rotation, and a reference p50, of its own.
			median += " (floor phase: " + ratioString(c1.FloorDefaultMedianRatio) + "; " +
				targetTitle(TargetBackendsAlone) + " " + ratioString(c1.BackendsAloneMedianRatio) + "; " +
				targetTitle(TargetOverReference) + " " + ratioString(c1.OverReferenceMedianRatio) + ")"
		}
		goals = append(goals,
			Goal{Name: "median-reassociate", Goal: "uncached, " + targetTitle(TargetReassociate) + ": median over panels of p50 / reference ≤ 1.3×",
				Measured: median, Met: c1.ReassociateMedianRatio > 0 && c1.ReassociateMedianRatio <= 1.3},
			Goal{Name: "not-slower-reassociate", Goal: "uncached, " + targetTitle(TargetReassociate) + ": no panel slower than with push-down off (p50; within " + percentString(overOffNoise-1) + ", the spread of one path measured twice)",
				Measured: "slowest against off: " + c1.ReassociateOverOffPanel + " " + ratioString(c1.ReassociateOverOff) + at,
				Met:      c1.ReassociateOverOff > 0 && c1.ReassociateOverOff <= overOffNoise})
	}
	var answers []string
	answersMet := len(s.AnswersByTarget) > 0
	for _, ta := range s.AnswersByTarget {
		if ta.Target == TargetProxy || ta.Target == TargetPushDown {
			answers = append(answers, fmt.Sprintf("%s: %d of %d differ", targetTitle(ta.Target), ta.Differ, ta.Checked))
			answersMet = answersMet && ta.Checked > 0 && ta.Differ == 0
		}
	}
	goals = append(goals, Goal{Name: "answers", Goal: "every uncached answer equal to the reference's, push-down on and off",
		Measured: strings.Join(answers, "; "), Met: answersMet})
	if rep.hasTarget(TargetReassociate, PhaseUncached) {
		g := Goal{Name: "answers-reassociate",
			Goal: "every uncached answer with `float_sums: reassociate` within " + toleranceString + " (relative, per point) of the reference's"}
		for _, ta := range s.AnswersByTarget {
			if ta.Target == TargetReassociate {
				g.Measured = ta.closeString()
				g.Met = ta.Checked > 0 && ta.Differ == 0
			}
		}
		goals = append(goals, g)
	}
	if len(s.PerConcurrency) > 0 {
		c1 := s.PerConcurrency[0]
		goals = append(goals, Goal{Name: "warm", Goal: "warm ≥ 50× faster than cold",
			Measured: ratioString(c1.WarmSpeedup) + " faster (geometric mean of cold p50 / warm p50)",
			Met:      c1.WarmSpeedup >= 50})
	}
	goals = append(goals, Goal{Name: "sliding",
		Goal: "a sliding-window refresh reads only the new tail (range panels: backend time span per refresh ≤ 10% of the first load's)",
		Measured: percentString(s.SlidingSpanFraction) + " of the load's time span, " + percentString(s.SlidingBytesFraction) +
			" of its bytes (bytes come in whole chunks)",
		Met: s.SlidingSpanFraction > 0 && s.SlidingSpanFraction <= 0.10})
	return goals
}

// column is one (phase, target) pair of the summary and per-query tables.
type column struct{ name, phase, target string }

// cachedTarget is the configuration of the cold, warm and sliding phases.
func (rep *Report) cachedTarget() string {
	if rep.Settings.CachedTarget != "" {
		return rep.Settings.CachedTarget
	}
	return TargetProxy
}

// columns are the summary columns present in this report: the uncached
// proxy with push-down off and on side by side, then the caching proxy.
func (rep *Report) columns() []column {
	cached := rep.cachedTarget()
	cols := []column{{"reference", PhaseUncached, TargetReference}}
	if rep.Settings.Compare != "" {
		cols = append(cols, column{"compare", PhaseUncached, TargetCompare})
	}
	cols = append(cols, column{"uncached", PhaseUncached, TargetProxy})
	if rep.hasTarget(TargetPushDown, PhaseUncached) {
		cols = append(cols, column{"uncached push-down", PhaseUncached, TargetPushDown})
	}
	if rep.hasTarget(TargetReassociate, PhaseUncached) {
		cols = append(cols, column{"uncached reassociate", PhaseUncached, TargetReassociate})
	}
	if rep.hasTarget(TargetBackendsAlone, PhaseFloor) {
		cols = append(cols, column{"floor: reference", PhaseFloor, TargetReference},
			column{"floor: default", PhaseFloor, TargetReassociate},
			column{"floor: backends alone", PhaseFloor, TargetBackendsAlone},
			column{"floor: over reference", PhaseFloor, TargetOverReference})
	}
	return append(cols,
		column{"cold", PhaseCold, cached},
		column{"warm", PhaseWarm, cached},
		column{"sliding", PhaseSliding, cached})
}

func (rep *Report) hasTarget(target, phase string) bool {
	for _, p := range rep.Phases {
		if p.Target == target && p.Phase == phase {
			return true
		}
	}
	return false
}

// targetTitle names a configuration in prose.
func targetTitle(target string) string {
	switch target {
	case TargetProxy:
		return "push-down off"
	case TargetPushDown:
		return "push-down on"
	case TargetReassociate:
		return "push-down on, `float_sums: reassociate`"
	case TargetBackendsAlone:
		return "the backends alone, no proxy"
	case TargetOverReference:
		return "push-down off over the reference alone"
	}
	return target
}

// pushesDown tells the configurations whose push-down counter is read.
func pushesDown(target string) bool { return target == TargetPushDown || target == TargetReassociate }

// toleranceString is floatTolerance as the report writes it.
const toleranceString = "1e-12"

// closeString says how a target's answers compared: within the tolerance,
// bit-equal, beyond.
func (ta TargetAnswers) closeString() string {
	return fmt.Sprintf("%d of %d within %s, %d of them bit-equal; %d beyond", ta.Checked-ta.Differ, ta.Checked, toleranceString,
		ta.Checked-ta.Close-ta.Differ, ta.Differ)
}

// uncachedResult is one uncached push-down configuration at one level.
type uncachedResult struct {
	ratio, instant, worst float64
	worstPanel            string
	rss                   int64
}

func (cs ConcSummary) uncached(target string) uncachedResult {
	if target == TargetReassociate {
		return uncachedResult{cs.ReassociateRatio, cs.ReassociateInstantRatio, cs.ReassociateWorstRatio, cs.ReassociateWorstPanel, cs.PeakRSSReassociate}
	}
	return uncachedResult{cs.PushDownRatio, cs.PushDownInstantRatio, cs.PushDownWorstRatio, cs.PushDownWorstPanel, cs.PeakRSSPushDown}
}
