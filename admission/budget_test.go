package admission

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

func TestBudgetSeriesCountsDistinctAndCancels(t *testing.T) {
	l := Limits{MaxFetchedSeriesPerQuery: 3}
	ctx, b := NewBudget(context.Background(), l)
	defer b.Done()
	for _, h := range []uint64{1, 2, 1, 3, 2, 3} { // the same series from several groups counts once
		if err := b.AddSeries(h); err != nil {
			t.Fatalf("series %d: %v", h, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("context canceled within the limit")
	}
	err := b.AddSeries(4)
	le := (*LimitError)(nil)
	if !errors.As(err, &le) || le.Limit != "max_fetched_series_per_query" || le.Value != "3" {
		t.Fatalf("fourth series: %v", err)
	}
	if !strings.Contains(err.Error(), "max_fetched_series_per_query=3") {
		t.Errorf("message %q does not name the limit and its value", err)
	}
	if !errors.Is(context.Cause(ctx), err) {
		t.Errorf("context cause %v, want the limit error", context.Cause(ctx))
	}
	if err := b.AddBytes(1); err == nil {
		t.Error("a failed budget accepts more")
	}
}

func TestBudgetBytes(t *testing.T) {
	ctx, b := NewBudget(context.Background(), Limits{MaxFetchedChunkBytesPerQuery: 100})
	defer b.Done()
	if err := b.AddBytes(60); err != nil {
		t.Fatal(err)
	}
	if err := b.AddBytes(40); err != nil {
		t.Fatal("exactly the limit must pass:", err)
	}
	err := b.AddBytes(1)
	if le := (*LimitError)(nil); !errors.As(err, &le) || le.Limit != "max_fetched_chunk_bytes_per_query" || le.Value != "100" {
		t.Fatalf("over the limit: %v", err)
	}
	if !errors.Is(context.Cause(ctx), err) || ctx.Err() == nil {
		t.Error("going over the limit did not cancel the query")
	}
	if _, n := b.Fetched(); n != 101 {
		t.Errorf("fetched %d bytes, want 101", n)
	}
}

func TestBudgetUnlimited(t *testing.T) {
	ctx, b := NewBudget(context.Background(), Limits{})
	defer b.Done()
	for i := range 1000 {
		if err := b.AddSeries(uint64(i)); err != nil {
			t.Fatal(err)
		}
		if err := b.AddBytes(1 << 20); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.CheckSpan(0, (365 * 24 * time.Hour).Milliseconds()); err != nil || ctx.Err() != nil {
		t.Fatal(err)
	}
}

func TestBudgetSpanAndMatchers(t *testing.T) {
	l := Limits{MaxQueryLength: model.Duration(time.Hour), MaxMatchPerRequest: 2}
	_, b := NewBudget(context.Background(), l)
	defer b.Done()
	if err := b.CheckSpan(0, time.Hour.Milliseconds()); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckSpan(0, time.Hour.Milliseconds()+1); err == nil || !strings.Contains(err.Error(), "max_query_length=1h") {
		t.Fatalf("span over an hour: %v", err)
	}
	if err := CheckMatchers(l, 2); err != nil {
		t.Fatal(err)
	}
	if err := CheckMatchers(l, 3); err == nil || !strings.Contains(err.Error(), "max_match_per_request=2") {
		t.Fatalf("three match[]: %v", err)
	}
}

func TestConfigOverridesInheritDefaults(t *testing.T) {
	src := `
scheduler: fair
defaults:
  max_concurrent_requests: 8
  max_fetched_series_per_query: 1000
tenants:
  team-a:
    max_concurrent_requests: 2
  team-b: {}
`
	cfg := DefaultConfig()
	if err := yaml.Unmarshal([]byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, b, other := cfg.For("team-a"), cfg.For("team-b"), cfg.For("team-c")
	if a.MaxConcurrentRequests != 2 || a.MaxFetchedSeriesPerQuery != 1000 || a.MaxQueuedRequests != 100 {
		t.Errorf("team-a %+v: want its own concurrency and the defaults' rest", a)
	}
	if b != other || other.MaxConcurrentRequests != 8 || other.MaxFetchedChunkBytesPerQuery != 64<<20 {
		t.Errorf("team-b %+v, others %+v: want the defaults", b, other)
	}
	if !cfg.Configured("team-b") || cfg.Configured("team-c") {
		t.Error("Configured")
	}
	if !cfg.TimeSharing {
		t.Error("time sharing is on unless turned off")
	}
	off := DefaultConfig()
	if err := yaml.Unmarshal([]byte("time_sharing: false"), &off); err != nil || off.TimeSharing {
		t.Errorf("time_sharing: false gave %v, %v", off.TimeSharing, err)
	}
	if s, _ := NewScheduler(off, 1, time.Second, nil); s.StartTurn("a") != nil {
		t.Error("a turn without time sharing")
	}
	for _, bad := range []string{
		"defaults: {max_concurent_requests: 1}",
		"tenants: {x: {max_fetched_series: 1}}",
		"scheduler: lifo",
		"defaults: {max_queued_requests: -1}",
	} {
		c := DefaultConfig()
		err := yaml.Unmarshal([]byte(bad), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCheckSelectors(t *testing.T) {
	l := DefaultLimits()
	if err := CheckSelectors(l, 100); err != nil {
		t.Fatal(err)
	}
	err := CheckSelectors(l, 1001)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "max_selectors_per_query" || !strings.Contains(err.Error(), "got 1001") {
		t.Fatalf("err %v", err)
	}
	l.MaxSelectorsPerQuery = 0
	if err := CheckSelectors(l, 1_000_000); err != nil {
		t.Fatalf("unlimited: %v", err)
	}
}

// TestBudgetBoundsCallsInFlight: a request has at most
// max_concurrent_backend_calls_per_query calls in flight, all requests of
// a tenant together at most max_concurrent_backend_calls; a call over
// either waits, and gives up only when its request's context ends.
func TestBudgetBoundsCallsInFlight(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TimeSharing = false
	cfg.Defaults = Limits{MaxConcurrentBackendCallsPerQuery: 2, MaxConcurrentBackendCalls: 3}
	s, err := NewScheduler(cfg, 4, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*Budget, func()) {
		_, b := NewBudget(context.Background(), s.Config().For("team-a"))
		g, leave := s.TenantCalls("team-a")
		b.ShareTenantCalls(g)
		return b, func() { leave(); b.Done() }
	}
	b1, done1 := start()
	defer done1()
	b2, done2 := start()
	defer done2()
	mustAcquire := func(b *Budget) func() {
		t.Helper()
		end, err := b.AcquireCall(context.Background())
		if err != nil {
			t.Fatalf("call within the limits: %v", err)
		}
		return end
	}
	tryAcquire := func(b *Budget) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		end, err := b.AcquireCall(ctx)
		if err == nil {
			end()
		}
		return err
	}
	e1, e2 := mustAcquire(b1), mustAcquire(b1)
	if err := tryAcquire(b1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("third call of one request: %v, want to wait until the request's context ends", err)
	}
	e3 := mustAcquire(b2)
	if err := tryAcquire(b2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("fourth call of the tenant: %v, want to wait (tenant limit 3)", err)
	}
	_, other := NewBudget(context.Background(), s.Config().For("team-b"))
	g, leave := s.TenantCalls("team-b")
	other.ShareTenantCalls(g)
	if err := tryAcquire(other); err != nil {
		t.Errorf("another tenant's call waits for team-a's: %v", err)
	}
	leave()
	other.Done()
	e1()
	e1() // ending a call twice frees one slot only
	if err := tryAcquire(b2); err != nil {
		t.Errorf("a call after one ended: %v", err)
	}
	e2()
	e3()
}

func TestCheckRange(t *testing.T) {
	l := Limits{MaxQueryLength: model.Duration(24 * time.Hour)}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := CheckRange(l, start, start.Add(24*time.Hour)); err != nil {
		t.Fatalf("a range of exactly the limit: %v", err)
	}
	err := CheckRange(l, start, start.Add(25*time.Hour))
	le := (*LimitError)(nil)
	if !errors.As(err, &le) || le.Limit != "max_query_length" || le.Value != "1d" {
		t.Fatalf("a range over the limit: %v", err)
	}
	if err := CheckRange(Limits{}, start, start.AddDate(10, 0, 0)); err != nil {
		t.Fatalf("unlimited: %v", err)
	}
}

func TestDefaultLabelWindowConfig(t *testing.T) {
	var c Config
	if err := yaml.Unmarshal([]byte("defaults: {default_label_window: 2h}\ntenants: {team-a: {default_label_window: 0s}}\n"), &c); err != nil {
		t.Fatal(err)
	}
	if got := c.For("team-b").LabelWindow(); got != 2*time.Hour {
		t.Errorf("defaults: window %v, want 2h", got)
	}
	if got := c.For("team-a").LabelWindow(); got != 0 {
		t.Errorf("team-a: window %v, want 0 (all time)", got)
	}
	if got := DefaultLimits().LabelWindow(); got != 12*time.Hour {
		t.Errorf("default window %v, want 12h", got)
	}
	c.Defaults.DefaultLabelWindow = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "default_label_window") {
		t.Errorf("a negative window: %v", err)
	}
}
