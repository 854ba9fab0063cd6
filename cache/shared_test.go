package cache

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// sharedFixture is one more proxy on the store of f, configured by edit.
func sharedFixture(t *testing.T, store Store, edit func(*Config)) *fixture {
	t.Helper()
	cfg := testConfig()
	edit(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.loadSigningKey(); err != nil {
		t.Fatal(err)
	}
	return newFixture(t, cfg, store)
}

// TestSigningKey: an entry is believed only by a proxy holding the key it
// was signed with; one written without the key, or under another, is a miss
// (counted as unreadable) and the answer is still exact.
func TestSigningKey(t *testing.T) {
	ctx := context.Background()
	start, end, step := dataEnd.Add(-3*time.Hour), dataEnd.Add(-5*time.Minute), 30*time.Second
	qs := `sum by (job) (rate(http_requests_total[5m]))`
	keyA := config.Secret(strings.Repeat("a", 32))
	keyB := config.Secret(strings.Repeat("b", 32))
	store := NewMemoryStore(DefaultMaxBytes)

	writer := sharedFixture(t, store, func(c *Config) { c.SigningKey = keyA })
	writer.rangeQuery(ctx, qs, start, end, step)
	if store.Len() == 0 {
		t.Fatal("nothing stored")
	}
	for name, key := range map[string]config.Secret{"other key": keyB, "no key": ""} {
		f := sharedFixture(t, store, func(c *Config) { c.SigningKey = key })
		f.rangeQuery(ctx, qs, start, end, step)
		if runs := f.counter.take(); len(runs) != 1 || !runs[0].start.Equal(start) {
			t.Errorf("%s: runs %v, want one over the whole range (entries of key A must not be believed)", name, runs)
		}
		if v := f.counterValue("prometheus_proxy_cache_errors_total", "op", "decode"); v == 0 {
			t.Errorf("%s: no unreadable entry counted", name)
		}
	}
	// The no-key proxy above rewrote the entries without a MAC: a proxy
	// with key A must not take them either, and repairs them.
	reader := sharedFixture(t, store, func(c *Config) { c.SigningKey = keyA })
	reader.rangeQuery(ctx, qs, start, end, step)
	if runs := reader.counter.take(); len(runs) != 1 {
		t.Errorf("key A after an unsigned writer: runs %v, want 1", runs)
	}
	reader.rangeQuery(ctx, qs, start, end, step)
	if runs := reader.counter.take(); len(runs) != 0 {
		t.Errorf("key A after its own write: runs %v, want 0", runs)
	}

	short := testConfig()
	short.SigningKey = "too short"
	if err := short.loadSigningKey(); err == nil {
		t.Error("a 9-byte signing key was accepted")
	}
}

// TestKeyPrefix: two deployments on one store share nothing; every key
// starts with its prefix; a prefix with a hash tag is refused.
func TestKeyPrefix(t *testing.T) {
	ctx := context.Background()
	start, end, step := dataEnd.Add(-3*time.Hour), dataEnd.Add(-5*time.Minute), 30*time.Second
	qs := `sum by (job) (rate(http_requests_total[5m]))`
	store := NewMemoryStore(DefaultMaxBytes)
	a := sharedFixture(t, store, func(c *Config) { c.KeyPrefix = "prod:" })
	a.rangeQuery(ctx, qs, start, end, step)
	n := store.Len()
	for k := range store.items {
		if !strings.HasPrefix(k, "prod:"+keyPrefix) {
			t.Fatalf("key %q lacks the prefix", k)
		}
	}
	b := sharedFixture(t, store, func(c *Config) { c.KeyPrefix = "staging:" })
	b.rangeQuery(ctx, qs, start, end, step)
	if runs := b.counter.take(); len(runs) != 1 || !runs[0].start.Equal(start) {
		t.Errorf("second deployment: runs %v, want one over the whole range", runs)
	}
	if store.Len() != 2*n {
		t.Errorf("%d entries after both deployments, want %d", store.Len(), 2*n)
	}
	a.counter.take()
	a.rangeQuery(ctx, qs, start, end, step)
	if runs := a.counter.take(); len(runs) != 0 {
		t.Errorf("first deployment warm: runs %v", runs)
	}

	bad := testConfig()
	bad.KeyPrefix = "{proxy}:"
	if err := bad.Validate(); err == nil {
		t.Error("a key prefix with a hash tag was accepted")
	}
}

// TestKeysSpreadOverSlots: the extents of one query land in many Redis
// Cluster slots (CRC16 mod 16384 of the key, as the cluster computes it),
// not in one hot slot.
func TestKeysSpreadOverSlots(t *testing.T) {
	f := sharedFixture(t, NewMemoryStore(DefaultMaxBytes), func(c *Config) { c.KeyPrefix = "p:" })
	f.rangeQuery(context.Background(), `sum by (job) (rate(http_requests_total[5m]))`, dataEnd.Add(-24*time.Hour), dataEnd.Add(-5*time.Minute), time.Minute)
	ms := f.store.(*MemoryStore)
	slots := map[uint16]bool{}
	for k := range ms.items {
		slots[clusterSlot(k)] = true
	}
	if len(slots) < ms.Len()*3/4 || ms.Len() < 20 {
		t.Fatalf("%d keys in %d slots", ms.Len(), len(slots))
	}
}

// clusterSlot is Redis Cluster's key slot (CRC16-XMODEM of the hash tag or
// the whole key, mod 16384), written out from the cluster specification.
func clusterSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

type allowPartialKey struct{}

// partialQueryable stands for a fan-out with one group down: a request that
// accepts partial answers gets the data with a warning, one that does not
// gets an error. Select waits for release, so that identical queries are
// in flight together.
type partialQueryable struct {
	release chan struct{}
	selects atomic.Int32
}

func (p *partialQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := testDB.Querier(mint, maxt)
	return partialQuerier{q, p}, err
}

type partialQuerier struct {
	storage.Querier
	p *partialQueryable
}

func (q partialQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	q.p.selects.Add(1)
	<-q.p.release
	if allow, _ := ctx.Value(allowPartialKey{}).(bool); !allow {
		return storage.ErrSeriesSet(errors.New("group g2 unavailable"))
	}
	var w annotations.Annotations
	w.Add(errors.New("partial response: group g2 unavailable"))
	return warnSet{q.Querier.Select(ctx, sortSeries, hints, ms...), w}
}

type warnSet struct {
	storage.SeriesSet
	w annotations.Annotations
}

func (s warnSet) Warnings() annotations.Annotations { return s.w }

// TestCoalescingKeepsPartialResponse: of two identical queries in flight
// together, the one refusing partial answers fails and the one accepting
// them gets the data with its warning; neither gets the other's answer.
func TestCoalescingKeepsPartialResponse(t *testing.T) {
	f := newScopedFixture(t, testConfig(), flightScopeFunc(func(ctx context.Context) string {
		allow, _ := ctx.Value(allowPartialKey{}).(bool)
		if allow {
			return "warn"
		}
		return "abort"
	}), NewMemoryStore(DefaultMaxBytes))
	start, end, step := dataEnd.Add(-3*time.Hour), dataEnd.Add(-5*time.Minute), 30*time.Second
	qs := `sum by (job) (rate(http_requests_total[5m]))`
	pq := &partialQueryable{release: make(chan struct{})}
	run := func(allow bool) *promql.Result {
		ctx := context.WithValue(context.Background(), allowPartialKey{}, allow)
		q, err := f.cache.NewRangeQuery(ctx, pq, nil, qs, start, end, step)
		if err != nil {
			t.Error(err)
			return &promql.Result{Err: err}
		}
		defer q.Close()
		return q.Exec(ctx)
	}
	var warn, abort *promql.Result
	var wg sync.WaitGroup
	wg.Go(func() { warn = run(true) })
	for pq.selects.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	wg.Go(func() { abort = run(false) })
	// Coalesced, the second query never reaches Select; kept apart, it does.
	deadline := time.Now().Add(2 * time.Second)
	for pq.selects.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(pq.release)
	wg.Wait()
	if warn.Err != nil || len(warn.Warnings) == 0 {
		t.Errorf("partial allowed: err %v, warnings %v; want data with a warning", warn.Err, warn.Warnings)
	}
	if abort.Err == nil {
		t.Errorf("partial refused: answered %d series with warnings %v; want an error", len(abort.Value.(promql.Matrix)), abort.Warnings)
	}
}

// flightScopeFunc is a Scope that keeps coalesced executions apart by what
// the function reads from their context, and adds nothing to keys.
type flightScopeFunc func(context.Context) string

func (flightScopeFunc) KeyScope() string                         { return "" }
func (f flightScopeFunc) FlightScope(ctx context.Context) string { return f(ctx) }
