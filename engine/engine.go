// Package engine runs PromQL for the proxy: Prometheus' own engine over a
// Queryable that fans every selector out to all backend groups and merges.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
)

// Config is the `engine` section: the PromQL engine's limits. Defaults are
// Prometheus' own, so answers match a Prometheus server's.
type Config struct {
	Timeout model.Duration `yaml:"timeout"`
	// MaxSamples bounds the samples one query holds in memory at once;
	// 0 derives it from the memory the process may use (MaxSamplesFor).
	MaxSamples    int            `yaml:"max_samples"`
	LookbackDelta model.Duration `yaml:"lookback_delta"`
	// SubqueryStep is the step of subqueries written without one (x[5m:]);
	// Prometheus uses its global evaluation interval.
	SubqueryStep model.Duration `yaml:"default_subquery_step"`
	// PushDown lets backends evaluate the parts of a query the planner
	// proves exact (on by default).
	PushDown plan.Config `yaml:"push_down"`
}

// DefaultConfig is what no `engine` section means.
func DefaultConfig() Config {
	return Config{
		Timeout:       model.Duration(2 * time.Minute),
		LookbackDelta: model.Duration(5 * time.Minute),
		SubqueryStep:  model.Duration(time.Minute),
		PushDown:      plan.DefaultConfig(),
	}
}

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing. Zero values here are not
// "unlimited": a zero timeout would time out every query. max_samples 0
// is derived when the engine is built (EffectiveMaxSamples).
func (c Config) Validate() error {
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout: %s is not positive", c.Timeout)
	}
	if c.MaxSamples < 0 {
		return fmt.Errorf("max_samples: must not be negative (0: derived from the memory limit)")
	}
	if c.LookbackDelta <= 0 {
		return fmt.Errorf("lookback_delta: %s is not positive", c.LookbackDelta)
	}
	if time.Duration(c.SubqueryStep) < time.Millisecond {
		return fmt.Errorf("default_subquery_step: %s is less than 1ms", c.SubqueryStep)
	}
	if err := c.PushDown.Validate(); err != nil {
		return fmt.Errorf("push_down.%w", err)
	}
	return nil
}

// sampleBytes is what one float sample held by the engine takes (a
// timestamp and a value, promql.FPoint).
const sampleBytes = 16

// queriesAtPeak is how many queries may hold their largest sample sets at
// once within the memory limit: the other requests, the results cache and
// the answers being written need the rest.
const queriesAtPeak = 8

// unknownMemoryMaxSamples is Prometheus' own default, for a process whose
// memory is not limited.
const unknownMemoryMaxSamples = 50_000_000

// MaxSamplesFor is engine.max_samples derived from the Go runtime's memory
// limit (bytes; math.MaxInt64 or less than 1: none): limit / 8 queries /
// 16 bytes a sample. A 1 GiB container (GOMEMLIMIT 0.9 GiB) gets 7,549,747
// samples, 115 MiB a query.
func MaxSamplesFor(memoryLimit int64) int {
	if memoryLimit <= 0 || memoryLimit == math.MaxInt64 {
		return unknownMemoryMaxSamples
	}
	return int(max(memoryLimit/queriesAtPeak/sampleBytes, 1))
}

// EffectiveMaxSamples is cfg.MaxSamples, or when 0, MaxSamplesFor the Go
// runtime's memory limit now.
func (c Config) EffectiveMaxSamples() int {
	if c.MaxSamples > 0 {
		return c.MaxSamples
	}
	return MaxSamplesFor(debug.SetMemoryLimit(-1))
}

// Parser returns the PromQL parser the proxy uses everywhere, so the engine,
// the API and the cache agree on what is valid.
func Parser() parser.Parser {
	return parser.NewParser(parser.Options{EnableExperimentalFunctions: true})
}

// PromQL is the proxy's PromQL engine: Prometheus' engine configured like a
// Prometheus server (with @, negative offsets and experimental functions
// on), built twice. Prometheus' query-cost accounting checks the context and
// counts on every sample an iterator yields — a quarter of the CPU of a
// query evaluated in the proxy, which one Prometheus holding the data does
// not spend (the accounting is off there unless asked for). So only a query
// that carries a samples limit (a tenant's max_samples_per_query, handed in
// with the query's options) runs on the engine that keeps the account.
type PromQL struct {
	plain, costed *promql.Engine
	// parts evaluates the groups' parts of pushed queries the proxy
	// evaluates itself (groupeval.go), up to partsAtOnce of one query side
	// by side: each is held to 1/partsAtOnce of max_samples, so that a
	// query split by group holds no more samples at once than it would in
	// one pass. Its metrics are not registered.
	parts       *PromQL
	partsAtOnce int
}

// NewPromQL returns the proxy's engine. The engines' metrics are registered
// on reg once each, told apart by query_cost="off" or "enforced".
func NewPromQL(cfg Config, reg prometheus.Registerer, logger *slog.Logger) *PromQL {
	ng := newPromQL(cfg, cfg.EffectiveMaxSamples(), reg, logger)
	ng.partsAtOnce = max(1, runtime.GOMAXPROCS(0))
	ng.parts = newPromQL(cfg, max(1, cfg.EffectiveMaxSamples()/ng.partsAtOnce), nil, logger)
	return ng
}

func newPromQL(cfg Config, maxSamples int, reg prometheus.Registerer, logger *slog.Logger) *PromQL {
	step := time.Duration(cfg.SubqueryStep).Milliseconds()
	build := func(costed bool) *promql.Engine {
		var r prometheus.Registerer
		if reg != nil {
			accounting := "off"
			if costed {
				accounting = "enforced"
			}
			r = prometheus.WrapRegistererWith(prometheus.Labels{"query_cost": accounting}, reg)
		}
		return promql.NewEngine(promql.EngineOpts{
			Logger:                   logger,
			Reg:                      r,
			MaxSamples:               maxSamples,
			Timeout:                  time.Duration(cfg.Timeout),
			LookbackDelta:            time.Duration(cfg.LookbackDelta),
			NoStepSubqueryIntervalFn: func(int64) int64 { return step },
			EnableAtModifier:         true,
			EnableNegativeOffset:     true,
			// With no ceiling of its own: it enforces the limit the
			// query's options carry.
			EnableQueryCost: costed,
			Parser:          Parser(),
		})
	}
	return &PromQL{plain: build(false), costed: build(true)}
}

// engineFor picks the engine that keeps the samples account when the query
// has a limit to keep.
func (e *PromQL) engineFor(opts promql.QueryOpts) *promql.Engine {
	if c, ok := opts.(promql.QueryCostOpts); ok && (c.MaxSamplesRead() > 0 || c.MaxSeries() > 0 || c.MaxQueryDuration() > 0) {
		return e.costed
	}
	return e.plain
}

// NewInstantQuery implements promql.QueryEngine.
func (e *PromQL) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	return e.engineFor(opts).NewInstantQuery(ctx, q, opts, qs, ts)
}

// NewRangeQuery implements promql.QueryEngine.
func (e *PromQL) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, interval time.Duration) (promql.Query, error) {
	return e.engineFor(opts).NewRangeQuery(ctx, q, opts, qs, start, end, interval)
}

// Close releases the engines.
func (e *PromQL) Close() error {
	err := errors.Join(e.plain.Close(), e.costed.Close())
	if e.parts != nil {
		err = errors.Join(err, e.parts.Close())
	}
	return err
}
