package datagen_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func write(t testing.TB, cfg datagen.Config, shard int, keep func(labels.Labels) bool) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := datagen.WriteOpenMetrics(&b, cfg, shard, keep); err != nil {
		t.Fatalf("WriteOpenMetrics(shard %d): %v", shard, err)
	}
	return b.Bytes()
}

// sample is one parsed line; series is the text before the value.
type sample struct {
	series string
	name   string
	labels map[string]string
	value  float64
	ts     float64
}

func parse(t testing.TB, data []byte) []sample {
	t.Helper()
	var out []sample
	type seriesInfo struct {
		name   string
		labels map[string]string
	}
	known := map[string]seriesInfo{} // labels are parsed once per series
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		line := string(data[:i])
		data = data[i+1:]
		if strings.HasPrefix(line, "#") {
			continue
		}
		i = strings.LastIndexByte(line, ' ')
		j := strings.LastIndexByte(line[:i], ' ')
		ts, err1 := strconv.ParseFloat(line[i+1:], 64)
		v, err2 := strconv.ParseFloat(line[j+1:i], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad line %q", line)
		}
		series := line[:j]
		info, ok := known[series]
		if !ok {
			name, rest, _ := strings.Cut(series, "{")
			info = seriesInfo{name: name, labels: map[string]string{}}
			for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
				k, v, _ := strings.Cut(kv, "=")
				info.labels[k] = strings.Trim(v, `"`)
			}
			known[series] = info
		}
		out = append(out, sample{series: series, name: info.name, labels: info.labels, value: v, ts: ts})
	}
	return out
}

// smallConfig keeps the layout of DefaultConfig (shards, global and split
// series) with less data, for the tests that compare whole outputs as sets.
func smallConfig() datagen.Config {
	cfg := datagen.DefaultConfig()
	cfg.Duration = 30 * time.Minute
	return cfg
}

func sampleLines(data []byte) map[string]bool {
	set := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			set[l] = true
		}
	}
	return set
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	cfg := smallConfig()
	for _, shard := range []int{-1, 0, 2} {
		a, b := write(t, cfg, shard, nil), write(t, cfg, shard, nil)
		if !bytes.Equal(a, b) {
			t.Errorf("shard %d: two runs differ", shard)
		}
	}
	other := cfg
	other.Seed++
	if bytes.Equal(write(t, cfg, 0, nil), write(t, other, 0, nil)) {
		t.Error("another seed gave the same data")
	}
	// A series' values do not depend on which other series exist.
	small := cfg
	small.Namespaces = cfg.Namespaces[:1]
	full := sampleLines(write(t, cfg, -1, nil))
	for l := range sampleLines(write(t, small, -1, nil)) {
		if !full[l] {
			t.Fatalf("line of the smaller config missing from the full one: %s", l)
		}
	}
}

func TestShardsUnion(t *testing.T) {
	t.Parallel()
	cfg := smallConfig()
	all := sampleLines(write(t, cfg, -1, nil))
	union := map[string]bool{}
	mid := float64(cfg.SampleTime(cfg.Steps() / 2).Unix())
	for shard := range cfg.Shards() {
		data := write(t, cfg, shard, nil)
		for _, s := range parse(t, data) {
			switch c := s.labels["cluster"]; c {
			case datagen.GlobalCluster:
			case datagen.SplitCluster:
				if shard > 1 || (shard == 0) != (s.ts < mid) {
					t.Fatalf("shard %d holds split sample at %v (middle %v)", shard, s.ts, mid)
				}
			default:
				if c != cfg.Clusters[shard] {
					t.Fatalf("shard %d holds cluster %q", shard, c)
				}
			}
		}
		lines := sampleLines(data)
		for l := range lines {
			union[l] = true
		}
		for l := range all {
			if strings.Contains(l, `cluster="global"`) && !lines[l] {
				t.Fatalf("shard %d lacks global line %s", shard, l)
			}
		}
	}
	if len(union) != len(all) {
		t.Errorf("union of shards has %d lines, all data %d", len(union), len(all))
	}
	for l := range all {
		if !union[l] {
			t.Fatalf("line missing from every shard: %s", l)
		}
	}
}

// TestDisjoint: with Config.Disjoint every series of shard i carries
// cluster=Clusters[i], no series is in two shards, the union is exactly the
// shards together, and the series are those of the default layout's own
// clusters, value for value. The default config's JSON, which names cached
// datasets, does not mention the option.
func TestDisjoint(t *testing.T) {
	t.Parallel()
	cfg := smallConfig()
	cfg.Disjoint = true
	seen := map[string]int{} // series -> shard
	shardLines := map[string]bool{}
	for shard := range cfg.Shards() {
		data := write(t, cfg, shard, nil)
		samples := parse(t, data)
		if len(samples) == 0 {
			t.Fatalf("shard %d is empty", shard)
		}
		for _, s := range samples {
			if c := s.labels["cluster"]; c != cfg.Clusters[shard] || s.labels["split"] != "" {
				t.Fatalf("shard %d holds %s (cluster %q)", shard, s.series, c)
			}
			if other, ok := seen[s.series]; ok && other != shard {
				t.Fatalf("series %s in shards %d and %d", s.series, other, shard)
			}
			seen[s.series] = shard
		}
		for l := range sampleLines(data) {
			shardLines[l] = true
		}
	}
	union := sampleLines(write(t, cfg, -1, nil))
	if !maps.Equal(union, shardLines) {
		t.Errorf("union has %d lines, the shards together %d", len(union), len(shardLines))
	}

	def := smallConfig()
	own := func(l labels.Labels) bool {
		c := l.Get("cluster")
		return c != datagen.GlobalCluster && c != datagen.SplitCluster
	}
	if !bytes.Equal(write(t, def, -1, own), write(t, cfg, -1, nil)) {
		t.Error("disjoint data differs from the default layout's cluster series")
	}
	if bytes.Equal(write(t, def, 0, nil), write(t, cfg, 0, nil)) {
		t.Error("the default layout of shard 0 has no global or split series")
	}
	n := 0
	datagen.ForEachSeries(cfg, func(labels.Labels) { n++ })
	if n != len(seen) {
		t.Errorf("ForEachSeries: %d series, the shards hold %d", n, len(seen))
	}

	defJSON, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	onJSON, _ := json.Marshal(cfg)
	if bytes.Contains(defJSON, []byte("Disjoint")) || !bytes.Contains(onJSON, []byte(`"Disjoint":true`)) {
		t.Errorf("config JSON: default %s, disjoint %s", defJSON, onJSON)
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	cfg := smallConfig()
	for _, shard := range []int{-1, 0, 1, 2} {
		data := write(t, cfg, shard, nil)
		if !bytes.HasSuffix(data, []byte("\n# EOF\n")) {
			t.Fatalf("shard %d: does not end with # EOF", shard)
		}
		typed := map[string]bool{}
		current := ""
		for _, l := range strings.Split(strings.TrimSuffix(string(data), "# EOF\n"), "\n") {
			if l == "" {
				continue
			}
			if name, ok := strings.CutPrefix(l, "# TYPE "); ok {
				name = strings.TrimSuffix(name, " unknown")
				if typed[name] {
					t.Fatalf("shard %d: family %s appears twice", shard, name)
				}
				typed[name], current = true, name
				continue
			}
			if name, _, _ := strings.Cut(l, "{"); name != current {
				t.Fatalf("shard %d: line outside its family %s: %s", shard, current, l)
			}
		}
	}
}

func TestSeries(t *testing.T) {
	t.Parallel()
	cfg := datagen.DefaultConfig()
	samples := parse(t, write(t, cfg, -1, nil))

	// ForEachSeries lists exactly the series written, in the same order.
	var listed []string
	datagen.ForEachSeries(cfg, func(lset labels.Labels) {
		for _, l := range []string{"cluster", "namespace", "job", "instance"} {
			if lset.Get(l) == "" {
				t.Fatalf("%v lacks %s", lset, l)
			}
		}
		listed = append(listed, lset.String())
	})
	var written []string
	bySeries := map[string][]sample{}
	for _, s := range samples {
		if len(bySeries[s.series]) == 0 {
			b := labels.NewScratchBuilder(len(s.labels) + 1)
			b.Add(model.MetricNameLabel, s.name)
			for k, v := range s.labels {
				b.Add(k, v)
			}
			b.Sort()
			written = append(written, b.Labels().String())
		}
		bySeries[s.series] = append(bySeries[s.series], s)
	}
	if !slices.Equal(listed, written) {
		t.Fatalf("ForEachSeries lists %d series, output holds %d (or the order differs)", len(listed), len(written))
	}

	for series, ss := range bySeries {
		if len(ss) != cfg.Steps() {
			t.Fatalf("%s has %d samples, want %d", series, len(ss), cfg.Steps())
		}
		for i, s := range ss {
			if want := float64(cfg.SampleTime(i).Unix()); s.ts != want {
				t.Fatalf("%s sample %d at %v, want %v", series, i, s.ts, want)
			}
		}
	}

	resets, fractional, negative := 0, 0, 0
	for series, ss := range bySeries {
		name := ss[0].name
		for i, s := range ss {
			if s.value != math.Trunc(s.value) {
				fractional++
			}
			if name == "temperature_celsius" && s.value < 0 {
				negative++
			}
			if i == 0 {
				continue
			}
			prev := ss[i-1].value
			switch name {
			case "http_requests_total", "http_request_duration_seconds_bucket",
				"http_request_duration_seconds_count", "http_request_duration_seconds_sum":
				if s.value < prev {
					if s.value != 0 {
						t.Fatalf("%s drops from %v to %v, not to 0", series, prev, s.value)
					}
					if name == "http_requests_total" {
						resets++
					}
				}
			case "node_cpu_seconds_total":
				if s.value < prev {
					t.Fatalf("%s decreases", series)
				}
			}
		}
	}
	if resets == 0 {
		t.Error("no counter reset in http_requests_total")
	}
	if negative == 0 || fractional == 0 {
		t.Errorf("%d negative temperatures, %d fractional values; want some of each", negative, fractional)
	}

	checkHistograms(t, samples)
}

// checkHistograms checks, per target and timestamp, that buckets grow with le
// and agree with _count and _sum.
func checkHistograms(t *testing.T, samples []sample) {
	type point struct {
		buckets      map[float64]float64
		sum, count   float64
		hasSum, hasC bool
	}
	points := map[string]*point{}
	key := func(s sample) string {
		return fmt.Sprint(s.labels["cluster"], s.labels["namespace"], s.labels["instance"], s.ts)
	}
	get := func(s sample) *point {
		p := points[key(s)]
		if p == nil {
			p = &point{buckets: map[float64]float64{}}
			points[key(s)] = p
		}
		return p
	}
	for _, s := range samples {
		switch s.name {
		case "http_request_duration_seconds_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil {
				t.Fatalf("bad le in %s", s.series)
			}
			get(s).buckets[le] = s.value
		case "http_request_duration_seconds_sum":
			p := get(s)
			p.sum, p.hasSum = s.value, true
		case "http_request_duration_seconds_count":
			p := get(s)
			p.count, p.hasC = s.value, true
		}
	}
	if len(points) == 0 {
		t.Fatal("no histogram")
	}
	for k, p := range points {
		les := make([]float64, 0, len(p.buckets))
		for le := range p.buckets {
			les = append(les, le)
		}
		slices.Sort(les)
		if len(les) < 2 || !math.IsInf(les[len(les)-1], 1) || !p.hasSum || !p.hasC {
			t.Fatalf("%s: incomplete histogram", k)
		}
		for i := 1; i < len(les); i++ {
			if p.buckets[les[i]] < p.buckets[les[i-1]] {
				t.Fatalf("%s: bucket le=%v below le=%v", k, les[i], les[i-1])
			}
		}
		if p.count != p.buckets[math.Inf(1)] {
			t.Fatalf("%s: _count %v != +Inf bucket %v", k, p.count, p.buckets[math.Inf(1)])
		}
		if p.sum < 0 || (p.count == 0) != (p.sum == 0) {
			t.Fatalf("%s: _sum %v with _count %v", k, p.sum, p.count)
		}
	}
}

func TestKeep(t *testing.T) {
	t.Parallel()
	cfg := smallConfig()
	keep := func(lset labels.Labels) bool { return lset.Get("namespace") == "team-b" }
	want := map[string]bool{}
	for l := range sampleLines(write(t, cfg, 1, nil)) {
		if strings.Contains(l, `namespace="team-b"`) {
			want[l] = true
		}
	}
	got := sampleLines(write(t, cfg, 1, keep))
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("keep: %d lines, want %d", len(got), len(want))
	}
	for l := range got {
		if !want[l] {
			t.Fatalf("unexpected line %s", l)
		}
	}
	// Families without a kept series get no TYPE line.
	none := write(t, cfg, -1, func(lset labels.Labels) bool { return lset.Get(model.MetricNameLabel) == "up" })
	if n := bytes.Count(none, []byte("# TYPE")); n != 1 {
		t.Errorf("%d TYPE lines for one family", n)
	}
}

func TestValidate(t *testing.T) {
	for name, mutate := range map[string]func(*datagen.Config){
		"no clusters":        func(c *datagen.Config) { c.Clusters = nil },
		"reserved cluster":   func(c *datagen.Config) { c.Clusters = []string{"a", datagen.GlobalCluster} },
		"repeated ns":        func(c *datagen.Config) { c.Namespaces = []string{"a", "a"} },
		"zero interval":      func(c *datagen.Config) { c.Interval = 0 },
		"sub-ms interval":    func(c *datagen.Config) { c.Interval = 1500 * time.Microsecond },
		"duration too short": func(c *datagen.Config) { c.Duration = time.Second },
		"no jobs":            func(c *datagen.Config) { c.JobsPerNamespace = 0 },
	} {
		cfg := datagen.DefaultConfig()
		mutate(&cfg)
		if err := datagen.WriteOpenMetrics(&bytes.Buffer{}, cfg, -1, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := datagen.WriteOpenMetrics(&bytes.Buffer{}, datagen.DefaultConfig(), 3, nil); err == nil {
		t.Error("shard 3 of 3: no error")
	}
}

func TestFractionalTimestamps(t *testing.T) {
	cfg := datagen.DefaultConfig()
	cfg.Interval, cfg.Duration = 1500*time.Millisecond, 3*time.Second
	cfg.Clusters, cfg.Namespaces = cfg.Clusters[:1], cfg.Namespaces[:1]
	out := string(write(t, cfg, 0, func(lset labels.Labels) bool { return lset.Get(model.MetricNameLabel) == "up" }))
	if !strings.Contains(out, " 1767225601.5\n") {
		t.Errorf("no 1.5 s timestamp in\n%s", out)
	}
}

// TestPromtool backfills the data with the promtool of the Prometheus version
// the project imports and checks that every series and sample arrived.
func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool := e2eutil.PromtoolBinary(t)
	cfg := datagen.DefaultConfig()
	dir := t.TempDir()
	input := filepath.Join(dir, "data.om")
	f, err := os.Create(input)
	if err != nil {
		t.Fatal(err)
	}
	if err := datagen.WriteOpenMetrics(f, cfg, -1, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	blocks := filepath.Join(dir, "blocks")
	if out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics",
		"--max-block-duration=24h", input, blocks).CombinedOutput(); err != nil {
		t.Fatalf("promtool rejected the data: %v\n%s", err, out)
	}
	out, err := exec.Command(promtool, "tsdb", "list", blocks).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb list: %v\n%s", err, out)
	}
	var samples, series int
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		n, _ := strconv.Atoi(f[4])
		s, _ := strconv.Atoi(f[6])
		samples, series = samples+n, series+s
	}
	wantSeries := 0
	datagen.ForEachSeries(cfg, func(labels.Labels) { wantSeries++ })
	if series != wantSeries || samples != wantSeries*cfg.Steps() {
		t.Errorf("blocks hold %d series, %d samples; want %d, %d\n%s", series, samples, wantSeries, wantSeries*cfg.Steps(), out)
	}
}

// BenchmarkWriteOpenMetrics writes about 100k series (one hour at 15 s).
func BenchmarkWriteOpenMetrics(b *testing.B) {
	cfg := datagen.DefaultConfig()
	cfg.Duration = time.Hour
	cfg.Namespaces = make([]string, 20)
	for i := range cfg.Namespaces {
		cfg.Namespaces[i] = fmt.Sprintf("ns-%02d", i)
	}
	cfg.JobsPerNamespace, cfg.InstancesPerJob = 6, 10
	series := 0
	datagen.ForEachSeries(cfg, func(labels.Labels) { series++ })
	var w countingWriter
	b.ResetTimer()
	for range b.N {
		if err := datagen.WriteOpenMetrics(&w, cfg, -1, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(series*cfg.Steps()*b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(w)/float64(b.N)/(1<<20), "MB/op")
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

func TestReader(t *testing.T) {
	t.Parallel()
	cfg := smallConfig()
	r := datagen.Reader(cfg, 2, nil)
	defer func() { _ = r.Close() }()
	var got bytes.Buffer
	if _, err := got.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), write(t, cfg, 2, nil)) {
		t.Error("Reader differs from WriteOpenMetrics")
	}
	bad := datagen.Reader(cfg, 7, nil)
	if _, err := got.ReadFrom(bad); err == nil {
		t.Error("Reader of a bad shard: no error")
	}
}

// TestForEachSeriesSamples checks that the sample walk yields exactly what
// WriteOpenMetrics writes, series by series, for every shard and the union.
func TestForEachSeriesSamples(t *testing.T) {
	cfg := smallConfig()
	keep := func(l labels.Labels) bool { return l.Get("code") != "404" }
	for shard := -1; shard < cfg.Shards(); shard++ {
		want := parse(t, write(t, cfg, shard, keep))
		var got []sample
		err := datagen.ForEachSeriesSamples(cfg, shard, keep, func(lset labels.Labels, ts []int64, vs []float64) error {
			if len(ts) != len(vs) || len(ts) == 0 {
				t.Fatalf("%v: %d timestamps, %d values", lset, len(ts), len(vs))
			}
			for i := range ts {
				got = append(got, sample{name: lset.Get(model.MetricNameLabel), labels: lset.WithoutEmpty().Map(), value: vs[i], ts: float64(ts[i]) / 1000})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("shard %d: %d samples, WriteOpenMetrics wrote %d", shard, len(got), len(want))
		}
		for i := range got {
			w := want[i]
			w.labels[model.MetricNameLabel] = w.name
			if got[i].name != w.name || got[i].value != w.value || got[i].ts != w.ts || !maps.Equal(got[i].labels, w.labels) {
				t.Fatalf("shard %d sample %d: got %+v, want %+v", shard, i, got[i], w)
			}
		}
	}
	if err := datagen.ForEachSeriesSamples(cfg, cfg.Shards(), nil, nil); err == nil {
		t.Error("shard out of range accepted")
	}
	stop := errors.New("stop")
	calls := 0
	if err := datagen.ForEachSeriesSamples(cfg, 0, nil, func(labels.Labels, []int64, []float64) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("error from fn: %v after %d calls", err, calls)
	}
}
