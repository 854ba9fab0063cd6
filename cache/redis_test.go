package cache

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func redisConfig(addr string) Config {
	cfg := testConfig()
	cfg.Backend = BackendRedis
	cfg.Redis.Addresses = []string{addr}
	// Round-trip tests are about correctness: on a loaded machine a real
	// Redis can miss the production 100ms budget and turn hits into bypasses.
	// TestRedisHanging sets the short timeout it measures.
	cfg.Redis.Timeout = model.Duration(5 * time.Second)
	return cfg
}

func newRedisFixture(t *testing.T, addr string) (*fixture, *RedisStore) {
	cfg := redisConfig(addr)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rs, err := NewRedisStore(cfg.Redis)
	if err != nil {
		t.Fatal(err)
	}
	return newFixture(t, cfg, rs), rs
}

// TestRedisRoundTrip: answers go through a real redis-server, warm answers
// are exact and need no engine run, entries carry the TTL.
func TestRedisRoundTrip(t *testing.T) {
	srv := e2eutil.StartRedis(t)
	f, _ := newRedisFixture(t, srv.Addr)
	ctx := context.Background()
	start, end, step := dataEnd.Add(-6*time.Hour), dataEnd.Add(-5*time.Minute), time.Minute
	for _, qs := range suite {
		cold := f.rangeQuery(ctx, qs, start, end, step)
		f.counter.take()
		f.rangeQuery(ctx, qs, start, end, step)
		if runs := f.counter.take(); len(cold.Warnings) == 0 && queryShape(t, qs).lead == 0 && len(runs) != 0 {
			t.Fatalf("%s: warm runs %v", qs, runs)
		}
	}
	if hits := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "hit"); hits == 0 {
		t.Fatal("no hits counted")
	}
	if errs := f.counterValue("prometheus_proxy_cache_errors_total", "store", "redis"); errs != 0 {
		t.Fatalf("%v errors", errs)
	}

	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer func() { _ = c.Close() }()
	keys, err := c.Keys(ctx, keyPrefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v, err %v", keys, err)
	}
	ttl, err := c.TTL(ctx, keys[0]).Result()
	if err != nil || ttl <= 0 || ttl > DefaultTTL {
		t.Fatalf("ttl %v, err %v", ttl, err)
	}
}

// TestRedisKilled: with Redis gone mid-test every answer is still right,
// lookups are counted as bypasses, and the cache works again once Redis is
// back.
func TestRedisKilled(t *testing.T) {
	srv := e2eutil.StartRedis(t)
	f, rs := newRedisFixture(t, srv.Addr)
	var mu sync.Mutex
	clock := time.Now()
	rs.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	ctx := context.Background()
	start, end, step := dataEnd.Add(-3*time.Hour), dataEnd.Add(-5*time.Minute), 30*time.Second
	qs := `sum by (code) (rate(http_requests_total[5m]))`
	f.rangeQuery(ctx, qs, start, end, step)
	f.rangeQuery(ctx, qs, start, end, step)
	if runs := f.counter.take(); len(runs) != 1 {
		t.Fatalf("runs %v, want one (cold only)", runs)
	}

	// Queries keep coming while Redis dies under them.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures []string
	var answered int
	for w := range 2 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				qs := suite[i%len(suite)]
				_, d := f.compare(ctx, qs, start.Add(time.Duration(i%7)*step), end, step)
				mu.Lock()
				answered++
				if d != "" {
					failures = append(failures, d)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	srv.Kill()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(failures) > 0 || answered == 0 {
		t.Fatalf("%d answers, %d wrong: %v", answered, len(failures), failures)
	}

	for i, qs := range suite {
		began := time.Now()
		f.rangeQuery(ctx, qs, start.Add(time.Duration(i)*step), end, step) // fails the test on any wrong answer
		if d := time.Since(began); d > 2*time.Second {
			t.Fatalf("%s took %s with Redis down", qs, d)
		}
	}
	bypass := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass")
	if bypass == 0 {
		t.Fatal("no bypass counted")
	}
	// The first failing call (a lookup or a write) is an error; the calls
	// after it, during the hold-off, are bypassed without trying.
	get := f.counterValue("prometheus_proxy_cache_errors_total", "store", "redis", "op", "get")
	set := f.counterValue("prometheus_proxy_cache_errors_total", "store", "redis", "op", "set")
	if get+set == 0 {
		t.Fatal("failed store calls not counted")
	}
	f.counter.take()

	srv.Restart()
	mu.Lock()
	clock = clock.Add(2 * redisHoldOff)
	mu.Unlock()
	f.rangeQuery(ctx, qs, start, end, step) // refills the empty server
	f.rangeQuery(ctx, qs, start, end, step)
	if runs := f.counter.take(); len(runs) != 1 {
		t.Fatalf("after restart: runs %v, want one", runs)
	}
}

// TestRedisHanging: a Redis that accepts connections and never answers costs
// at most the short timeout, and then nothing for the hold-off.
func TestRedisHanging(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }() // hold the connection, say nothing
		}
	}()
	cfg := redisConfig(ln.Addr().String())
	cfg.Redis.Timeout = model.Duration(100 * time.Millisecond)
	rs, err := NewRedisStore(cfg.Redis)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, cfg, rs)
	ctx := context.Background()
	start, end, step := dataEnd.Add(-2*time.Hour), dataEnd.Add(-5*time.Minute), time.Minute
	for i, qs := range suite[:5] {
		began := time.Now()
		f.rangeQuery(ctx, qs, start, end, step)
		d := time.Since(began)
		if d > time.Second {
			t.Fatalf("query %d took %s", i, d)
		}
	}
	if bypass := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass"); bypass == 0 {
		t.Fatal("no bypass counted")
	}
}

// TestRedisPasswordFile: the password is read from its file, again for
// each new connection, so a rotated Secret applies once the old
// connections are gone; a missing file fails the start.
func TestRedisPasswordFile(t *testing.T) {
	srv := e2eutil.StartRedis(t,
		e2eutil.RedisArgs("--user", "default", "off", "--user", "proxy", "on", ">s3cret", "~*", "+@all"),
		e2eutil.RedisAuth("proxy", "s3cret"))
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig().Redis
	cfg.Addresses, cfg.Username, cfg.PasswordFile = []string{srv.Addr}, "proxy", file
	store, err := NewRedisStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	ctx := context.Background()
	roundTrip := func(key string) error {
		if err := store.Set(ctx, time.Minute, Entry{Key: key, Value: []byte("v")}); err != nil {
			return err
		}
		got, err := store.Get(ctx, key)
		if err == nil && (len(got) != 1 || string(got[0]) != "v") {
			err = fmt.Errorf("read back %q", got)
		}
		return err
	}
	if err := roundTrip("a"); err != nil {
		t.Fatalf("with the file's password: %v", err)
	}

	// Rotate: the server's password, then the file; drop the connections
	// made with the old one.
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "proxy", Password: "s3cret"})
	defer func() { _ = admin.Close() }()
	if err := admin.Do(ctx, "ACL", "SETUSER", "proxy", "resetpass", ">n3w").Err(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("n3w\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "USER", "proxy").Err(); err != nil {
		t.Fatal(err)
	}
	// The hold-off after the killed connection's failure passes first.
	if !e2eutil.WaitFor(5*time.Second, func() bool { return roundTrip("b") == nil }) {
		t.Fatalf("after rotation: %v", roundTrip("b"))
	}

	cfg.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, err := NewRedisStore(cfg); err == nil || !strings.Contains(err.Error(), "cache.redis.password_file") {
		t.Errorf("missing password file: %v", err)
	}
	both := DefaultConfig()
	both.Redis.Password, both.Redis.PasswordFile = "x", file
	if err := both.Validate(); err == nil || !strings.HasPrefix(err.Error(), "redis.password") {
		t.Errorf("password and password_file: %v", err)
	}
}
