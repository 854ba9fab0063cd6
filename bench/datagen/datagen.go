// Package datagen generates deterministic Prometheus test data as OpenMetrics text,
// split into shards the way several federated Prometheus servers would hold it.
package datagen

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Label values of the series that do not belong to one cluster.
const (
	// GlobalCluster is the cluster label of series present, identical, in every shard.
	GlobalCluster = "global"
	// SplitCluster is the cluster label of series whose first half in time is in
	// shard 0 and second half in shard 1. They also carry split="true".
	SplitCluster = "split"
)

// Config says what data to generate. Every value is a pure function of it.
type Config struct {
	// Start is the time of the first sample; samples follow every Interval
	// while they are before Start+Duration.
	Start              time.Time
	Duration, Interval time.Duration
	// Clusters name the shards: series of cluster i live in shard i.
	Clusters   []string
	Namespaces []string
	// Targets per namespace and cluster are JobsPerNamespace*InstancesPerJob.
	JobsPerNamespace, InstancesPerJob int
	Seed                              int64
	// Disjoint leaves out the global and split targets, so every series of
	// shard i carries cluster=Clusters[i] and no series is in two shards:
	// the layout where the proxy may push evaluation down to the shards.
	// Omitted from JSON when false, so the identity of the default data
	// (datasets are cached by their config's JSON) does not change.
	Disjoint bool `json:",omitempty"`
}

// DefaultConfig is small enough for fast tests: 1,516 series of 480 samples.
func DefaultConfig() Config {
	return Config{
		Start:            time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Duration:         2 * time.Hour,
		Interval:         15 * time.Second,
		Clusters:         []string{"cluster-a", "cluster-b", "cluster-c"},
		Namespaces:       []string{"team-a", "team-b", "team-c", "monitoring"},
		JobsPerNamespace: 2,
		InstancesPerJob:  2,
		Seed:             1,
	}
}

// Shards is the number of shards, one per cluster.
func (c Config) Shards() int { return len(c.Clusters) }

// Steps is the number of samples of a series present over the whole window.
func (c Config) Steps() int {
	if c.Interval <= 0 || c.Duration <= 0 {
		return 0
	}
	return int((c.Duration + c.Interval - 1) / c.Interval)
}

// SampleTime is the timestamp of sample number step.
func (c Config) SampleTime(step int) time.Time {
	return c.Start.Add(time.Duration(step) * c.Interval)
}

// LastSampleTime is the timestamp of the last sample.
func (c Config) LastSampleTime() time.Time { return c.SampleTime(c.Steps() - 1) }

// Validate reports a configuration that cannot be generated.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < time.Millisecond || c.Interval%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("interval %v must be a positive whole number of milliseconds", c.Interval))
	}
	if c.Duration < c.Interval {
		errs = append(errs, fmt.Errorf("duration %v must be at least the interval", c.Duration))
	}
	if c.Start.UnixMilli() < 0 || c.Start.UnixNano()%int64(time.Millisecond) != 0 {
		errs = append(errs, fmt.Errorf("start %v must be a whole millisecond after 1970", c.Start))
	}
	if c.JobsPerNamespace < 1 || c.InstancesPerJob < 1 {
		errs = append(errs, errors.New("jobs per namespace and instances per job must be at least 1"))
	}
	if len(c.Namespaces) == 0 {
		errs = append(errs, errors.New("no namespaces"))
	}
	if len(c.Clusters) == 0 {
		errs = append(errs, errors.New("no clusters"))
	}
	errs = append(errs, checkUnique("cluster", c.Clusters, GlobalCluster, SplitCluster))
	errs = append(errs, checkUnique("namespace", c.Namespaces))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("datagen config: %w", err)
	}
	return nil
}

func checkUnique(what string, names []string, reserved ...string) error {
	seen := map[string]bool{}
	for _, r := range reserved {
		seen[r] = true
	}
	for _, n := range names {
		if n == "" || seen[n] {
			return fmt.Errorf("%s name %q is empty, repeated or reserved", what, n)
		}
		seen[n] = true
	}
	return nil
}

// ForEachSeries calls fn with the labels (__name__ included) of every series
// of the union of all shards, in output order (nothing for an invalid Config).
// fn may keep lset.
func ForEachSeries(cfg Config, fn func(lset labels.Labels)) {
	if cfg.Validate() != nil {
		return
	}
	g := newGenerator(cfg, -1)
	for _, f := range families {
		g.forEachSeries(f, func(s *series) { fn(s.lset) })
	}
}

// WriteOpenMetrics streams the series of one shard (-1: the union of all shards)
// that keep accepts (nil keeps everything) as OpenMetrics text, ready for
// `promtool tsdb create-blocks-from openmetrics`. Memory use does not grow with
// the amount of data.
func WriteOpenMetrics(w io.Writer, cfg Config, shard int, keep func(labels.Labels) bool) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if shard < -1 || shard >= cfg.Shards() {
		return fmt.Errorf("datagen: shard %d out of range [-1, %d)", shard, cfg.Shards())
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	g := newGenerator(cfg, shard)
	for _, f := range families {
		typed := false
		var err error
		g.forEachSeries(f, func(s *series) {
			if err != nil || (keep != nil && !keep(s.lset)) {
				return
			}
			if !typed {
				// Type unknown for every name: OpenMetrics would otherwise demand
				// counter names without _total in TYPE and whole histogram families.
				_, _ = bw.WriteString("# TYPE " + f.name + " unknown\n")
				typed = true
			}
			g.writeSamples(bw, s)
			err = bwErr(bw)
		})
		if err != nil {
			return fmt.Errorf("datagen: write: %w", err)
		}
	}
	_, _ = bw.WriteString("# EOF\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("datagen: write: %w", err)
	}
	return nil
}

// ForEachSeriesSamples calls fn once per series of one shard (-1: the union)
// that keep accepts (nil keeps everything), in output order, with the samples
// WriteOpenMetrics would write for it: timestamps in milliseconds and values.
// It skips the text, for writers that append to a TSDB directly. fn may keep
// lset but not ts or vs, which are reused; an error from fn stops the walk.
func ForEachSeriesSamples(cfg Config, shard int, keep func(labels.Labels) bool, fn func(lset labels.Labels, ts []int64, vs []float64) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if shard < -1 || shard >= cfg.Shards() {
		return fmt.Errorf("datagen: shard %d out of range [-1, %d)", shard, cfg.Shards())
	}
	g := newGenerator(cfg, shard)
	start, interval := cfg.Start.UnixMilli(), cfg.Interval.Milliseconds()
	ts, vs := make([]int64, 0, g.steps), make([]float64, 0, g.steps)
	var err error
	for _, f := range families {
		g.forEachSeries(f, func(s *series) {
			if err != nil || (keep != nil && !keep(s.lset)) {
				return
			}
			ts, vs = ts[:0], vs[:0]
			for step := 0; step < s.tg.to; step++ {
				v := s.next(step) // earlier steps still run: the value depends on them
				if step >= s.tg.from {
					ts = append(ts, start+int64(step)*interval)
					vs = append(vs, v)
				}
			}
			err = fn(s.lset, ts, vs)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Reader streams WriteOpenMetrics through a pipe, e.g. straight into a
// backfill, without holding the data in memory. Close it if not read to the end.
func Reader(cfg Config, shard int, keep func(labels.Labels) bool) io.ReadCloser {
	r, w := io.Pipe()
	go func() { w.CloseWithError(WriteOpenMetrics(w, cfg, shard, keep)) }()
	return r
}

// bwErr surfaces a bufio.Writer's sticky error without writing anything.
func bwErr(bw *bufio.Writer) error {
	_, err := bw.Write(nil)
	return err
}

type targetKind uint8

const (
	normalTarget targetKind = iota // in the shard of its cluster
	globalTarget                   // in every shard
	splitTarget                    // first half in shard 0, second half in shard 1
)

// target is one scraped endpoint; its series share the target's labels and its
// restarts.
type target struct {
	kind                              targetKind
	cluster, namespace, job, instance string
	seed                              uint64 // hash of the labels above
	from, to                          int    // steps present in the shard being written
}

// series is one output series and the state that produces its samples.
type series struct {
	lset   labels.Labels
	tg     *target
	prefix []byte  // `name{labels} `
	next   sampler // value of the next step; called for every step from 0
}

type sampler func(step int) float64

type family struct {
	name  string
	kinds []targetKind
	// series calls emit once per series of t in this family.
	series func(g *generator, t *target, emit func(extra []labels.Label, s sampler))
}

type generator struct {
	cfg      Config
	shard    int
	steps    int
	stepSecs float64
	tsSuffix [][]byte // " <timestamp>\n" per step
	b        labels.ScratchBuilder
}

func newGenerator(cfg Config, shard int) *generator {
	return &generator{cfg: cfg, shard: shard, steps: cfg.Steps(), stepSecs: cfg.Interval.Seconds()}
}

func (g *generator) timestampSuffixes() [][]byte {
	if g.tsSuffix == nil {
		g.tsSuffix = make([][]byte, g.steps)
		start, step := g.cfg.Start.UnixMilli(), g.cfg.Interval.Milliseconds()
		for i := range g.tsSuffix {
			g.tsSuffix[i] = appendTimestamp([]byte{' '}, start+int64(i)*step)
		}
	}
	return g.tsSuffix
}

// appendTimestamp writes milliseconds as seconds, the OpenMetrics unit,
// without a fraction when there is none.
func appendTimestamp(b []byte, ms int64) []byte {
	b = strconv.AppendInt(b, ms/1000, 10)
	if frac := ms % 1000; frac != 0 {
		b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
	}
	return append(b, '\n')
}

func (g *generator) writeSamples(bw *bufio.Writer, s *series) {
	suffix := g.timestampSuffixes()
	for step := 0; step < s.tg.to; step++ {
		v := s.next(step) // earlier steps still run: the value depends on them
		if step < s.tg.from {
			continue
		}
		b := bw.AvailableBuffer()
		b = append(b, s.prefix...)
		b = appendValue(b, v)
		b = append(b, suffix[step]...)
		_, _ = bw.Write(b)
	}
}

// appendValue formats like strconv's 'g' with shortest precision; small whole
// numbers (most counters) take the faster integer path, which prints the same.
func appendValue(b []byte, v float64) []byte {
	if v > -1e6 && v < 1e6 && v == math.Trunc(v) && !math.Signbit(v) {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// forEachTarget yields the targets of family kinds present in g.shard, in a
// fixed order. The target is reused between calls.
func (g *generator) forEachTarget(kinds []targetKind, fn func(t *target)) {
	var t target
	for _, kind := range kinds {
		switch kind {
		case normalTarget:
			for ci, cluster := range g.cfg.Clusters {
				if g.shard >= 0 && g.shard != ci {
					continue
				}
				for _, ns := range g.cfg.Namespaces {
					for j := range g.cfg.JobsPerNamespace {
						job := jobName(j)
						for i := range g.cfg.InstancesPerJob {
							t = target{kind: kind, cluster: cluster, namespace: ns, job: job,
								instance: job + "-" + strconv.Itoa(i) + ":8080", to: g.steps}
							g.visit(&t, fn)
						}
					}
				}
			}
		case globalTarget:
			if g.cfg.Disjoint {
				continue
			}
			for _, ns := range g.cfg.Namespaces {
				t = target{kind: kind, cluster: GlobalCluster, namespace: ns, job: "global",
					instance: "global:9090", to: g.steps}
				g.visit(&t, fn)
			}
		case splitTarget:
			if g.cfg.Disjoint {
				continue
			}
			from, to := g.splitRange()
			if from >= to {
				continue
			}
			for _, ns := range g.cfg.Namespaces {
				t = target{kind: kind, cluster: SplitCluster, namespace: ns, job: "split",
					instance: "split:9090", from: from, to: to}
				g.visit(&t, fn)
			}
		}
	}
}

func (g *generator) visit(t *target, fn func(t *target)) {
	h := fnv.New64a()
	for _, s := range []string{t.cluster, t.namespace, t.job, t.instance} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0xff})
	}
	t.seed = h.Sum64()
	fn(t)
}

// splitRange is the steps of split series held by g.shard.
func (g *generator) splitRange() (from, to int) {
	half := g.steps / 2
	switch {
	case g.shard == -1 || g.cfg.Shards() == 1:
		return 0, g.steps
	case g.shard == 0:
		return 0, half
	case g.shard == 1:
		return half, g.steps
	}
	return 0, 0
}

var jobNames = []string{"api", "worker", "cache", "db", "frontend", "scheduler", "ingest", "billing"}

func jobName(j int) string {
	if j < len(jobNames) {
		return jobNames[j]
	}
	return "job-" + strconv.Itoa(j)
}

// forEachSeries builds the series of family f, one at a time.
func (g *generator) forEachSeries(f family, fn func(s *series)) {
	g.forEachTarget(f.kinds, func(t *target) {
		f.series(g, t, func(extra []labels.Label, next sampler) {
			g.b.Reset()
			g.b.Add(model.MetricNameLabel, f.name)
			g.b.Add("cluster", t.cluster)
			g.b.Add("namespace", t.namespace)
			g.b.Add("job", t.job)
			g.b.Add("instance", t.instance)
			if t.kind == splitTarget {
				g.b.Add("split", "true")
			}
			for _, l := range extra {
				g.b.Add(l.Name, l.Value)
			}
			g.b.Sort()
			s := &series{lset: g.b.Labels(), tg: t, next: next}
			s.prefix = appendSeriesPrefix(nil, f.name, s.lset)
			fn(s)
		})
	})
}

func appendSeriesPrefix(b []byte, name string, lset labels.Labels) []byte {
	b = append(b, name...)
	b = append(b, '{')
	first := true
	lset.Range(func(l labels.Label) {
		if l.Name == model.MetricNameLabel {
			return
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, l.Name...)
		b = append(b, '=', '"')
		for i := 0; i < len(l.Value); i++ {
			switch c := l.Value[i]; c {
			case '\\':
				b = append(b, '\\', '\\')
			case '"':
				b = append(b, '\\', '"')
			case '\n':
				b = append(b, '\\', 'n')
			default:
				b = append(b, c)
			}
		}
		b = append(b, '"')
	})
	return append(b, '}', ' ')
}

// rng returns a generator seeded from the target, a per-series key and Config.Seed,
// so a series' values never depend on which other series are written.
func (g *generator) rng(t *target, key string) *rand.Rand {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return rand.New(rand.NewPCG(t.seed^h.Sum64(), uint64(g.cfg.Seed)))
}

// restart tells whether the target's process restarted just before step, which
// resets its counters. About one restart per target every four hours.
func (g *generator) restart(t *target, step int) bool {
	if step == 0 {
		return false
	}
	x := splitmix(t.seed ^ uint64(g.cfg.Seed)*0x9e3779b97f4a7c15 ^ uint64(step))
	perStep := g.stepSecs / (4 * 3600)
	return float64(x>>11)/(1<<53) < perStep
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// round keeps digits decimal places; dividing by a power of ten gives the
// double nearest the decimal, so values print short ("23.45").
func round(v float64, digits int) float64 {
	scale := math.Pow10(digits)
	if r := math.Round(v*scale) / scale; r != 0 {
		return r
	}
	return 0 // never -0
}

func between(r *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*r.Float64() }

// families is what is written, in this order. Every target (cluster × namespace
// × job × instance) has http_requests_total{method,code} (integer counter,
// reset to 0 on restart), the http_request_duration_seconds histogram (same
// restarts), memory_usage_bytes, node_cpu_seconds_total{cpu,mode} (fractional
// counter), temperature_celsius (may be negative) and up (0 at a restart).
// Per namespace, a "global" target (build_info, up, temperature_celsius, one
// http_requests_total) is in every shard and a "split" target (up,
// temperature_celsius, one http_requests_total) is split in time; neither
// is written with Config.Disjoint.
var families = []family{
	{name: "build_info", kinds: []targetKind{globalTarget}, series: buildInfo},
	{name: "http_requests_total", kinds: []targetKind{normalTarget, globalTarget, splitTarget}, series: httpRequests},
	{name: "http_request_duration_seconds_bucket", kinds: []targetKind{normalTarget}, series: durationHistogram(histBuckets)},
	{name: "http_request_duration_seconds_sum", kinds: []targetKind{normalTarget}, series: durationHistogram(histSum)},
	{name: "http_request_duration_seconds_count", kinds: []targetKind{normalTarget}, series: durationHistogram(histCount)},
	{name: "memory_usage_bytes", kinds: []targetKind{normalTarget}, series: memoryUsage},
	{name: "node_cpu_seconds_total", kinds: []targetKind{normalTarget}, series: nodeCPU},
	{name: "temperature_celsius", kinds: []targetKind{normalTarget, globalTarget, splitTarget}, series: temperature},
	{name: "up", kinds: []targetKind{normalTarget, globalTarget, splitTarget}, series: up},
}

func buildInfo(_ *generator, _ *target, emit func([]labels.Label, sampler)) {
	emit([]labels.Label{{Name: "version", Value: "2.7.1"}, {Name: "revision", Value: "9c4e1a7"}},
		func(int) float64 { return 1 })
}

func up(g *generator, t *target, emit func([]labels.Label, sampler)) {
	emit(nil, func(step int) float64 {
		if g.restart(t, step) {
			return 0
		}
		return 1
	})
}

var (
	httpMethods = []string{"GET", "POST"}
	httpCodes   = []string{"200", "404", "500"}
)

// httpRequests is an integer counter per method and code that drops to 0 when
// the target restarts.
func httpRequests(g *generator, t *target, emit func([]labels.Label, sampler)) {
	methods, codes := httpMethods, httpCodes
	if t.kind != normalTarget {
		methods, codes = methods[:1], codes[:1]
	}
	for mi, method := range methods {
		for ci, code := range codes {
			r := g.rng(t, "http_requests_total\xff"+method+"\xff"+code)
			rate := between(r, 0.5, 50) / float64(1+3*mi) / math.Pow(20, float64(ci))
			v := math.Floor(rate * between(r, 0, 86400))
			emit([]labels.Label{{Name: "method", Value: method}, {Name: "code", Value: code}},
				func(step int) float64 {
					if g.restart(t, step) {
						v = 0
					} else if step > 0 {
						v += math.Round(rate * g.stepSecs * between(r, 0.5, 1.5))
					}
					return v
				})
		}
	}
}

// Upper bounds of the classic histogram's buckets.
var histBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.Inf(1)}

type histPart int

const (
	histBuckets histPart = iota
	histSum
	histCount
)

// histogram is a target's request-latency process. Every series of the
// histogram replays the same process, so _bucket, _sum and _count agree without
// holding anything between families.
type histogram struct {
	r      *rand.Rand
	rate   float64   // requests per second
	p      []float64 // probability of each bucket (non-cumulative)
	mid    []float64 // typical latency in each bucket
	counts []float64 // non-cumulative bucket counts
	sum    float64
}

func newHistogram(g *generator, t *target) *histogram {
	r := g.rng(t, "http_request_duration_seconds")
	h := &histogram{r: r, rate: between(r, 1, 30),
		p: make([]float64, len(histBounds)), mid: make([]float64, len(histBounds)), counts: make([]float64, len(histBounds))}
	// Log-normal latency with a median between 10 ms and 500 ms.
	mu, sigma := between(r, math.Log(0.01), math.Log(0.5)), between(r, 0.4, 1.2)
	cdf := func(x float64) float64 {
		if math.IsInf(x, 1) {
			return 1
		}
		return 0.5 * (1 + math.Erf((math.Log(x)-mu)/(sigma*math.Sqrt2)))
	}
	lower := 0.0
	for i, ub := range histBounds {
		h.p[i] = cdf(ub) - cdf(lower)
		switch {
		case i == 0:
			h.mid[i] = ub / 2
		case math.IsInf(ub, 1):
			h.mid[i] = 2 * lower
		default:
			h.mid[i] = math.Sqrt(lower * ub)
		}
		lower = ub
	}
	h.add(between(r, 0, 86400) * h.rate)
	return h
}

// add records about n requests spread over the buckets. One random draw
// jitters four buckets: this replays 14 times per target, so it is the hot path.
func (h *histogram) add(n float64) {
	var bits uint64
	var sum float64
	for i := range h.counts {
		if i%4 == 0 {
			bits = h.r.Uint64()
		}
		jitter := 0.8 + 0.4*float64(bits&0xffff)/0x10000
		bits >>= 16
		c := math.Floor(n*h.p[i]*jitter + 0.5)
		h.counts[i] += c
		sum += c * h.mid[i]
	}
	h.sum += sum * between(h.r, 0.9, 1.1)
}

func (h *histogram) step(g *generator, t *target, step int) {
	if g.restart(t, step) {
		clear(h.counts)
		h.sum = 0
		return
	}
	if step > 0 {
		h.add(h.rate * g.stepSecs * between(h.r, 0.6, 1.4))
	}
}

func (h *histogram) cumulative(bucket int) float64 {
	var c float64
	for _, n := range h.counts[:bucket+1] {
		c += n
	}
	return c
}

func durationHistogram(part histPart) func(*generator, *target, func([]labels.Label, sampler)) {
	return func(g *generator, t *target, emit func([]labels.Label, sampler)) {
		switch part {
		case histSum:
			h := newHistogram(g, t)
			emit(nil, func(step int) float64 {
				h.step(g, t, step)
				return round(h.sum, 4)
			})
		case histCount:
			h := newHistogram(g, t)
			emit(nil, func(step int) float64 {
				h.step(g, t, step)
				return h.cumulative(len(histBounds) - 1)
			})
		case histBuckets:
			for i, ub := range histBounds {
				h := newHistogram(g, t)
				emit([]labels.Label{{Name: "le", Value: formatLe(ub)}}, func(step int) float64 {
					h.step(g, t, step)
					return h.cumulative(i)
				})
			}
		}
	}
}

func formatLe(ub float64) string {
	if math.IsInf(ub, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(ub, 'g', -1, 64)
}

// memoryUsage wanders around a per-target level in whole bytes and drops on restart.
func memoryUsage(g *generator, t *target, emit func([]labels.Label, sampler)) {
	r := g.rng(t, "memory_usage_bytes")
	level := between(r, 64<<20, 2<<30)
	v := level * between(r, 0.5, 1.5)
	emit(nil, func(step int) float64 {
		if g.restart(t, step) {
			v = level * 0.3
		} else if step > 0 {
			v += 0.05*(level-v) + 0.01*v*r.NormFloat64()
		}
		return math.Round(v)
	})
}

var cpuModes = []struct {
	name  string
	share float64
}{{"idle", 0.7}, {"iowait", 0.02}, {"system", 0.08}, {"user", 0.2}}

// nodeCPU is a fractional counter per CPU and mode; node counters survive
// process restarts.
func nodeCPU(g *generator, t *target, emit func([]labels.Label, sampler)) {
	for cpu := range 2 {
		for _, mode := range cpuModes {
			cpuLabel := strconv.Itoa(cpu)
			r := g.rng(t, "node_cpu_seconds_total\xff"+cpuLabel+"\xff"+mode.name)
			share := mode.share * between(r, 0.5, 1.5)
			v := share * between(r, 3600, 30*86400)
			emit([]labels.Label{{Name: "cpu", Value: cpuLabel}, {Name: "mode", Value: mode.name}},
				func(step int) float64 {
					if step > 0 {
						v += share * g.stepSecs * between(r, 0.8, 1.2)
					}
					return round(v, 2)
				})
		}
	}
}

// temperature is a gauge around a per-target level between -20 and 45 °C with
// a daily swing and noise, in hundredths of a degree.
func temperature(g *generator, t *target, emit func([]labels.Label, sampler)) {
	r := g.rng(t, "temperature_celsius")
	level, phase := between(r, -20, 45), between(r, 0, 2*math.Pi)
	start := float64(g.cfg.Start.Unix())
	noise := 0.0
	emit(nil, func(step int) float64 {
		noise = 0.9*noise + 0.3*r.NormFloat64()
		secs := start + float64(step)*g.stepSecs
		return round(level+3*math.Sin(2*math.Pi*secs/86400+phase)+noise, 2)
	})
}
