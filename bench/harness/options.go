// Package harness runs the benchmark behind `go run ./bench`: real Prometheus
// backends holding generated data, one reference Prometheus holding the
// union, the proxy binary in front of the backends, and a dashboard workload
// measured in phases (uncached, cold, warm, sliding window).
package harness

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

// Options is everything a run can be told.
type Options struct {
	// Data shape. Series is a lower bound: the generator's layout rounds up.
	Series   int
	Duration time.Duration
	Interval time.Duration
	Shards   int
	Seed     int64
	// Disjoint leaves out the series present in several shards, so every
	// shard holds only its cluster's series and push-down can apply.
	Disjoint bool

	// Concurrency levels; the workload runs at each.
	Concurrency []int
	// Rounds of each phase. A phase also stops early at PhaseBudget (after
	// its first round), so a slow machine still finishes in bounded time.
	UncachedRounds int // interleaved proxy/reference rounds at concurrency 1
	ColdRounds     int // fresh caching proxies, one cold pass each
	WarmRounds     int // warm passes after each cold pass
	SlidingRounds  int // refreshes, end advanced by one step each
	ConcRounds     int // passes per phase at concurrency > 1
	PhaseBudget    time.Duration

	// CachedPushDown runs the caching proxies (cold, warm, sliding) with
	// push-down on; the uncached phase always measures both.
	CachedPushDown bool

	// Floors adds the floor phase (PhaseFloor): what this machine takes
	// for each panel with no proxy, and with the proxy over one backend.
	Floors bool

	// Compare is another Prometheus-compatible endpoint measured beside the
	// reference in the uncached phase ("" for none).
	Compare string

	// RepoRoot holds go.mod; CacheDir keeps datasets and the proxy binary.
	RepoRoot string
	CacheDir string
	// Prometheus defaults to the build of `make tools`.
	Prometheus string
	// ProxyBinary skips building the proxy when set.
	ProxyBinary string
	// KeepWorkDir leaves the servers' data and logs behind for inspection.
	KeepWorkDir bool
	Quick       bool
}

// DefaultOptions is the full-size run of `make bench`: about 104k series over
// 6 h at one sample a minute, each shard holding only its cluster's series. The blocks take about half a minute to write on
// 2 cores, and the whole run stays well within 15 minutes.
func DefaultOptions() Options {
	return Options{
		Series:         100_000,
		Duration:       6 * time.Hour,
		Interval:       time.Minute,
		Shards:         3,
		Seed:           1,
		Disjoint:       true,
		CachedPushDown: true,
		Concurrency:    []int{1, 4},
		UncachedRounds: 5,
		ColdRounds:     3,
		WarmRounds:     5,
		SlidingRounds:  5,
		ConcRounds:     3,
		PhaseBudget:    90 * time.Second,
	}
}

// QuickOptions is `make bench-quick`: a few thousand series over 1 h, for a
// check of the whole pipeline in about a minute.
func QuickOptions() Options {
	o := DefaultOptions()
	o.Series = 3000
	o.Duration = time.Hour
	o.UncachedRounds = 3
	o.ColdRounds = 2
	o.WarmRounds = 3
	o.SlidingRounds = 3
	o.ConcRounds = 2
	o.PhaseBudget = 15 * time.Second
	o.Quick = true
	return o
}

// Validate reports options that cannot run.
func (o Options) Validate() error {
	var errs []error
	if o.Series < 1 {
		errs = append(errs, errors.New("--series must be at least 1"))
	}
	if o.Shards < 1 || o.Shards > 26 {
		errs = append(errs, errors.New("--shards must be between 1 and 26"))
	}
	if o.Interval < time.Second {
		errs = append(errs, errors.New("--interval must be at least 1s"))
	}
	if o.Duration < 10*o.Interval {
		errs = append(errs, errors.New("--hours must cover at least ten intervals"))
	}
	if len(o.Concurrency) == 0 {
		errs = append(errs, errors.New("no concurrency level"))
	}
	for _, c := range o.Concurrency {
		if c < 1 || c > 256 {
			errs = append(errs, fmt.Errorf("concurrency %d is not between 1 and 256", c))
		}
	}
	for name, n := range map[string]int{"uncached": o.UncachedRounds, "cold": o.ColdRounds, "warm": o.WarmRounds,
		"sliding": o.SlidingRounds, "concurrent": o.ConcRounds} {
		if n < 1 || n > 1000 {
			errs = append(errs, fmt.Errorf("%s rounds %d is not between 1 and 1000", name, n))
		}
	}
	if o.PhaseBudget <= 0 {
		errs = append(errs, errors.New("phase budget must be positive"))
	}
	return errors.Join(errs...)
}

// Jobs and instances come from the generator's fixed family list: every
// target carries this many series.
const seriesPerTarget = 31

// extraSeriesPerNamespace are the generator's global and split targets
// (none in the disjoint layout).
const extraSeriesPerNamespace = 7

func extraSeries(cfg datagen.Config) int {
	if cfg.Disjoint {
		return 0
	}
	return extraSeriesPerNamespace * len(cfg.Namespaces)
}

// DataConfig lays out Series series over Shards clusters: more namespaces
// and jobs for big sets (so `sum by (namespace)` has a realistic spread),
// then as many instances per job as needed to reach Series.
func (o Options) DataConfig() datagen.Config {
	cfg := datagen.DefaultConfig()
	cfg.Duration, cfg.Interval, cfg.Seed, cfg.Disjoint = o.Duration, o.Interval, o.Seed, o.Disjoint
	cfg.Clusters = nil
	for i := range o.Shards {
		cfg.Clusters = append(cfg.Clusters, "cluster-"+string(rune('a'+i)))
	}
	namespaces, jobs := 4, 4
	if o.Series >= 20_000 {
		namespaces, jobs = 10, 8
	}
	cfg.Namespaces = nil
	for i := range namespaces - 1 {
		cfg.Namespaces = append(cfg.Namespaces, "team-"+string(rune('a'+i)))
	}
	cfg.Namespaces = append(cfg.Namespaces, "monitoring")
	cfg.JobsPerNamespace = jobs
	perInstance := seriesPerTarget * o.Shards * namespaces * jobs
	need := o.Series - extraSeries(cfg)
	cfg.InstancesPerJob = max(1, int(math.Ceil(float64(need)/float64(perInstance))))
	return cfg
}

// SeriesCount is the number of series DataConfig generates (the union).
func SeriesCount(cfg datagen.Config) int {
	return seriesPerTarget*len(cfg.Clusters)*len(cfg.Namespaces)*cfg.JobsPerNamespace*cfg.InstancesPerJob + extraSeries(cfg)
}

func hoursString(d time.Duration) string {
	return strconv.FormatFloat(d.Hours(), 'g', -1, 64) + "h"
}
