// Package admission keeps one tenant from starving the others: per-tenant
// queues with fair hand-out of the global request slots, and per-query cost
// budgets (series, chunk bytes, time span, match[] count, response size).
package admission

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/enum"
)

// SchedulerMode is how the global slots are shared (limits.scheduler).
type SchedulerMode string

// Scheduler modes.
const (
	// Fair queues requests per tenant and hands free slots out round-robin
	// across tenants with queued work.
	Fair SchedulerMode = "fair"
	// FIFO is one queue for everyone, first come first served, with no
	// per-tenant limit on slots or queue: the behaviour of a bare global pool.
	FIFO SchedulerMode = "fifo"
)

// Validate tells whether m is one of the modes.
func (m SchedulerMode) Validate() error { return enum.OneOf(m, Fair, FIFO) }

// Limits bound what one tenant may use. Zero means unlimited for every
// field (as in Mimir's limits).
type Limits struct {
	// MaxConcurrentRequests is how many of the tenant's requests run at once;
	// the global proxy.max_concurrent_requests still applies on top.
	MaxConcurrentRequests int `yaml:"max_concurrent_requests" json:"max_concurrent_requests"`
	// MaxQueuedRequests is how many of the tenant's requests may wait for a
	// slot; one more is refused at once with 429.
	MaxQueuedRequests int `yaml:"max_queued_requests" json:"max_queued_requests"`
	// MaxFetchedSeriesPerQuery bounds the distinct series one query reads
	// from all backend groups together.
	MaxFetchedSeriesPerQuery int `yaml:"max_fetched_series_per_query" json:"max_fetched_series_per_query"`
	// MaxFetchedChunkBytesPerQuery bounds the bytes of remote-read answers
	// (chunks and their series' labels, as sent) one query reads from all
	// backend groups together.
	MaxFetchedChunkBytesPerQuery int64 `yaml:"max_fetched_chunk_bytes_per_query" json:"max_fetched_chunk_bytes_per_query"`
	// MaxMatchPerRequest bounds the match[] parameters of one request.
	MaxMatchPerRequest int `yaml:"max_match_per_request" json:"max_match_per_request"`
	// MaxSelectorsPerQuery bounds the selectors of one PromQL query, each
	// a read of every group: `up or up or …` in a 1 MiB body would
	// otherwise start tens of thousands of reads at once.
	MaxSelectorsPerQuery int `yaml:"max_selectors_per_query" json:"max_selectors_per_query"`
	// MaxConcurrentBackendCallsPerQuery bounds the backend calls one
	// request has in flight at once (every group of every selector read
	// ahead counts); further calls wait for one to end.
	MaxConcurrentBackendCallsPerQuery int `yaml:"max_concurrent_backend_calls_per_query" json:"max_concurrent_backend_calls_per_query"`
	// MaxConcurrentBackendCalls bounds the backend calls all of the
	// tenant's requests have in flight at once, so one tenant cannot fill
	// the backends' own read queues; further calls wait for one to end.
	MaxConcurrentBackendCalls int `yaml:"max_concurrent_backend_calls" json:"max_concurrent_backend_calls"`
	// MaxQueryLength bounds the time span one selector reads (range,
	// lookback and offset included).
	MaxQueryLength model.Duration `yaml:"max_query_length" json:"max_query_length"`
	// DefaultLabelWindow is the time range label names and values, series,
	// metadata and the tenant status page read when the request names none:
	// the window ending now. Without it such a request reads every series
	// of the tenant over all time. Zero: all time, as Prometheus.
	DefaultLabelWindow model.Duration `yaml:"default_label_window" json:"default_label_window"`
	// MaxResponseBytes bounds the JSON answer sent to the client.
	MaxResponseBytes int64 `yaml:"max_response_bytes" json:"max_response_bytes"`
	// MaxSamplesPerQuery bounds the samples the PromQL engine reads for one
	// evaluation (Prometheus' own query-cost accounting).
	MaxSamplesPerQuery int64 `yaml:"max_samples_per_query" json:"max_samples_per_query"`
	// RefusalsPerSecond and RefusalBurst slow down a tenant whose requests
	// keep being refused (by these limits or a full queue): past
	// RefusalBurst recent refusals, its further requests wait until the
	// refusals drain back under the burst at RefusalsPerSecond, before
	// anything is done for them; one that would wait over 5 s is
	// answered 429 at once. A client sending again at once what was just
	// refused is then held to that rate instead of costing the proxy
	// every copy. 0 per second: no slowing down.
	RefusalsPerSecond float64 `yaml:"refusals_per_second" json:"refusals_per_second"`
	RefusalBurst      int     `yaml:"refusal_burst" json:"refusal_burst"`
}

// DefaultLimits are the limits of a tenant nothing is configured for.
// They are sized so that the shipped Deployment (1 GiB memory limit)
// survives the worst single request a tenant can send; docs/limits.md
// gives the arithmetic.
func DefaultLimits() Limits {
	return Limits{
		MaxQueuedRequests: 100,
		// Label sets held by the proxy: ~300 B each, 30 MiB.
		MaxFetchedSeriesPerQuery: 100_000,
		// Remote-read answers held (read-ahead selectors are held whole).
		MaxFetchedChunkBytesPerQuery: 64 << 20,
		MaxMatchPerRequest:           1000,
		MaxSelectorsPerQuery:         100,
		// A Prometheus serves 10 remote reads at once by default
		// (--storage.remote.read-concurrent-limit); one query stays under
		// that on a fleet of a few groups, and one tenant under twice it.
		MaxConcurrentBackendCallsPerQuery: 8,
		MaxConcurrentBackendCalls:         16,
		// A month-long dashboard with its rate windows fits.
		MaxQueryLength: model.Duration(32 * 24 * time.Hour),
		// Grafana names a range (its dashboard's); a request without one
		// gets what a Prometheus' head block holds and a little more: a
		// working day of recent series, not a year of churned pods.
		DefaultLabelWindow: model.Duration(12 * time.Hour),
		// The answer is held whole until it is complete, and marshalled
		// once before that: twice this in memory.
		MaxResponseBytes: 32 << 20,
		// 0: engine.max_samples, derived from the memory limit, applies.
		MaxSamplesPerQuery: 0,
		// A dashboard whose every panel is refused, twice, passes at once;
		// a loop re-sending refused requests is held to 2 a second.
		RefusalsPerSecond: 2,
		RefusalBurst:      60,
	}
}

// Config is the `limits` section.
type Config struct {
	// Scheduler is Fair (default) or FIFO.
	Scheduler SchedulerMode `yaml:"scheduler" json:"scheduler"`
	// TimeSharing (Fair only, default on): a running request yields the CPU
	// to another tenant's request that has run for less time (Turns).
	TimeSharing bool `yaml:"time_sharing" json:"time_sharing"`
	// TenantSlots (Fair only) is how many global slots one tenant whose
	// max_concurrent_requests is 0 may hold, so that another tenant's
	// request finds a slot free at once. 0: sized to the machine,
	// GOMAXPROCS / 2, at most slots - 1, at least 1 (TenantShare).
	TenantSlots int `yaml:"tenant_slots" json:"tenant_slots"`
	// Defaults apply to every tenant.
	Defaults Limits `yaml:"defaults" json:"defaults"`
	// Tenants override Defaults per namespace; a key left out of a tenant's
	// entry keeps the default.
	Tenants map[string]Limits `yaml:"tenants" json:"tenants,omitempty"`
}

// DefaultConfig is what no `limits` section means.
func DefaultConfig() Config {
	return Config{Scheduler: Fair, TimeSharing: true, Defaults: DefaultLimits()}
}

// UnmarshalYAML starts from DefaultConfig, decodes defaults over
// DefaultLimits, then each tenant's entry on top of the defaults, so a
// tenant names only what differs. Unknown keys are errors.
func (c *Config) UnmarshalYAML(node *yaml.Node) error {
	var raw struct {
		Scheduler   SchedulerMode        `yaml:"scheduler"`
		TimeSharing *bool                `yaml:"time_sharing"`
		TenantSlots *int                 `yaml:"tenant_slots"`
		Defaults    yaml.Node            `yaml:"defaults"`
		Tenants     map[string]yaml.Node `yaml:"tenants"`
	}
	if err := strictDecode(node, &raw); err != nil {
		return err
	}
	*c = DefaultConfig()
	if raw.Scheduler != "" {
		c.Scheduler = raw.Scheduler
	}
	if raw.TimeSharing != nil {
		c.TimeSharing = *raw.TimeSharing
	}
	if raw.TenantSlots != nil {
		c.TenantSlots = *raw.TenantSlots
	}
	if !raw.Defaults.IsZero() {
		if err := strictDecode(&raw.Defaults, &c.Defaults); err != nil {
			return fmt.Errorf("defaults: %w", err)
		}
	}
	if len(raw.Tenants) > 0 {
		c.Tenants = make(map[string]Limits, len(raw.Tenants))
	}
	for ns, n := range raw.Tenants {
		l := c.Defaults
		if err := strictDecode(&n, &l); err != nil {
			return fmt.Errorf("tenants.%s: %w", ns, err)
		}
		c.Tenants[ns] = l
	}
	return nil
}

// strictDecode decodes a node refusing unknown keys; Node.Decode alone
// would not, and a typo must not silently turn a limit off.
func strictDecode(n *yaml.Node, into any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(into)
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing. tenant_slots 0 is sized to the
// machine where the slots are known (TenantShare).
func (c Config) Validate() error {
	if err := c.Scheduler.Validate(); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	if c.TenantSlots < 0 {
		return fmt.Errorf("tenant_slots: must not be negative")
	}
	if err := c.Defaults.validate(); err != nil {
		return fmt.Errorf("defaults.%w", err)
	}
	for _, ns := range slices.Sorted(maps.Keys(c.Tenants)) {
		l := c.Tenants[ns]
		if err := l.validate(); err != nil {
			return fmt.Errorf("tenants.%s.%w", ns, err)
		}
	}
	return nil
}

func (l Limits) validate() error {
	switch {
	case l.MaxConcurrentRequests < 0:
		return fmt.Errorf("max_concurrent_requests: must not be negative")
	case l.MaxQueuedRequests < 0:
		return fmt.Errorf("max_queued_requests: must not be negative")
	case l.MaxFetchedSeriesPerQuery < 0:
		return fmt.Errorf("max_fetched_series_per_query: must not be negative")
	case l.MaxFetchedChunkBytesPerQuery < 0:
		return fmt.Errorf("max_fetched_chunk_bytes_per_query: must not be negative")
	case l.MaxMatchPerRequest < 0:
		return fmt.Errorf("max_match_per_request: must not be negative")
	case l.MaxSelectorsPerQuery < 0:
		return fmt.Errorf("max_selectors_per_query: must not be negative")
	case l.MaxConcurrentBackendCallsPerQuery < 0:
		return fmt.Errorf("max_concurrent_backend_calls_per_query: must not be negative")
	case l.MaxConcurrentBackendCalls < 0:
		return fmt.Errorf("max_concurrent_backend_calls: must not be negative")
	case l.MaxQueryLength < 0:
		return fmt.Errorf("max_query_length: must not be negative")
	case l.DefaultLabelWindow < 0:
		return fmt.Errorf("default_label_window: must not be negative")
	case l.MaxResponseBytes < 0:
		return fmt.Errorf("max_response_bytes: must not be negative")
	case l.MaxSamplesPerQuery < 0:
		return fmt.Errorf("max_samples_per_query: must not be negative")
	case !(l.RefusalsPerSecond >= 0) || math.IsInf(l.RefusalsPerSecond, 1):
		return fmt.Errorf("refusals_per_second: must be a number, 0 or more")
	case l.RefusalBurst < 0 || (l.RefusalsPerSecond > 0 && l.RefusalBurst == 0):
		// 0 would read as "unlimited" where several namespaces' limits
		// are combined (Strictest).
		return fmt.Errorf("refusal_burst: must be at least 1 while refusals_per_second is set")
	}
	return nil
}

// For returns the limits of a namespace: its own entry, else the defaults.
func (c *Config) For(namespace string) Limits {
	if l, ok := c.Tenants[namespace]; ok {
		return l
	}
	return c.Defaults
}

// TenantShare is the number of the slots global slots one tenant without
// a max_concurrent_requests of its own may hold (Fair only): TenantSlots,
// or GOMAXPROCS / 2, at most slots-1 and at least 1. Measured with the
// heavy noisy-neighbour query on 2 cores: one tenant's throughput was the
// same with 1, 2 or 3 running requests, while a neighbour's p95 went from
// 1.7× its quiet p95 to 4.4× and 6.5×; one slot always stays for the
// others.
func (c *Config) TenantShare(slots int) int {
	if c.TenantSlots > 0 {
		return c.TenantSlots
	}
	return max(1, min(runtime.GOMAXPROCS(0)/2, slots-1))
}

// Configured reports whether the namespace has an entry of its own.
func (c *Config) Configured(namespace string) bool {
	_, ok := c.Tenants[namespace]
	return ok
}

// LabelWindow is DefaultLabelWindow as a time.Duration (zero: all time).
func (l Limits) LabelWindow() time.Duration { return time.Duration(l.DefaultLabelWindow) }

// CheckRange refuses a request whose start..end is longer than
// max_query_length, before anything is sent to a backend.
func CheckRange(l Limits, start, end time.Time) error {
	if max := l.maxQueryLength(); max > 0 && end.Sub(start) > max {
		return &LimitError{Limit: "max_query_length", Value: l.MaxQueryLength.String(), What: "the time range of the request"}
	}
	return nil
}

// maxQueryLength is MaxQueryLength as a time.Duration (zero: unlimited).
func (l Limits) maxQueryLength() time.Duration { return time.Duration(l.MaxQueryLength) }
