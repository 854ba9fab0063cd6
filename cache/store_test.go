package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func TestMemoryStoreLRU(t *testing.T) {
	ctx := context.Background()
	entry := func(i int) Entry { return Entry{Key: fmt.Sprintf("k%02d", i), Value: make([]byte, 100)} }
	per := (&memoryItem{key: "k00", value: make([]byte, 100)}).size()
	s := NewMemoryStore(10 * per)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	for i := range 10 {
		_ = s.Set(ctx, time.Minute, entry(i))
	}
	if s.Len() != 10 || s.Bytes() != 10*per {
		t.Fatalf("len %d bytes %d", s.Len(), s.Bytes())
	}
	// Touch k00 so that k01 is the least recently used, then overflow by one.
	if v, _ := s.Get(ctx, "k00"); v[0] == nil {
		t.Fatal("k00 missing")
	}
	_ = s.Set(ctx, time.Minute, entry(10))
	got, _ := s.Get(ctx, "k00", "k01", "k10")
	if got[0] == nil || got[1] != nil || got[2] == nil {
		t.Fatalf("after eviction: k00 %v k01 %v k10 %v", got[0] != nil, got[1] != nil, got[2] != nil)
	}
	if s.Bytes() > 10*per {
		t.Fatalf("bytes %d above the bound %d", s.Bytes(), 10*per)
	}
	// Replacing a key does not count it twice.
	_ = s.Set(ctx, time.Minute, entry(10))
	if s.Len() != 10 || s.Bytes() != 10*per {
		t.Fatalf("after replace: len %d bytes %d", s.Len(), s.Bytes())
	}
	// A value larger than the whole store is not kept (and evicts nothing).
	_ = s.Set(ctx, time.Minute, Entry{Key: "huge", Value: make([]byte, 11*per)})
	if v, _ := s.Get(ctx, "huge"); v[0] != nil || s.Len() != 10 {
		t.Fatal("oversized value stored")
	}
	// Expiry.
	now = now.Add(time.Minute)
	if v, _ := s.Get(ctx, "k10"); v[0] != nil {
		t.Fatal("expired entry returned")
	}
}

func TestConfigYAML(t *testing.T) {
	var c Config
	in := "backend: redis\nredis:\n  addresses: [\"127.0.0.1:6379\"]\n  master_name: mymaster\nmax_freshness: 2m\n"
	dec := yaml.NewDecoder(strings.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	if c.Backend != BackendRedis || c.Redis.MasterName != "mymaster" || time.Duration(c.MaxFreshness) != 2*time.Minute ||
		c.Redis.Timeout != want.Redis.Timeout || c.Memory != want.Memory || c.SplitInterval != want.SplitInterval || !c.Enabled {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	dec = yaml.NewDecoder(strings.NewReader("backend: memory\nmemroy: {max_bytes: 1}\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err == nil {
		t.Fatal("misspelt key accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Backend = "memcached" }, "backend: "},
		{func(c *Config) { c.Backend = BackendRedis }, "addresses"},
		{func(c *Config) { c.Backend, c.Redis.Addresses, c.Redis.DB = BackendRedis, []string{"a:1", "b:1"}, 3 }, "cluster"},
		{func(c *Config) { c.Memory.MaxBytes = -1 }, "max_bytes"},
		{func(c *Config) { c.MaxFreshness = -1 }, "max_freshness"},
		{func(c *Config) { c.SplitInterval = -1 }, "split_interval"},
		{func(c *Config) { c.TTL = -1 }, "ttl: "},
		{func(c *Config) { c.SplitInterval = 0 }, "split_interval: "},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one about %s", err, tc.want)
		}
		if err != nil && strings.HasPrefix(err.Error(), "cache") {
			t.Errorf("error %q names the section: the assembler adds it", err)
		}
	}
}

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing it checks.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "ttl: 2h\nredis: {addresses: [a:1]}\n", Want: func(c *Config) {
			c.TTL = model.Duration(2 * time.Hour)
			c.Redis.Addresses = []string{"a:1"}
		}},
	})
}

// TestConfigYAMLSharedRedis: the keys for a shared, authenticated Redis
// parse, and the signing key is read from its file.
func TestConfigYAMLSharedRedis(t *testing.T) {
	keyFile := t.TempDir() + "/key"
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("s", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := "backend: redis\nkey_prefix: 'prod:'\nsigning_key_file: " + keyFile + "\n" +
		"redis:\n  addresses: [a:1, b:2]\n  master_name: m\n  username: proxy\n  password: pw\n" +
		"  sentinel_username: s\n  sentinel_password: spw\n  tls_enabled: true\n  tls_config: {server_name: redis.example, insecure_skip_verify: false}\n"
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := c.loadSigningKey(); err != nil {
		t.Fatal(err)
	}
	if c.KeyPrefix != "prod:" || string(c.signingKey) != strings.Repeat("s", 40) || c.Redis.Username != "proxy" ||
		c.Redis.SentinelUsername != "s" || !c.Redis.TLSEnabled || c.Redis.TLSConfig.ServerName != "redis.example" {
		t.Fatalf("decoded %+v", c)
	}
	c.SigningKey = "also inline"
	if err := c.Validate(); err == nil {
		t.Error("signing_key and signing_key_file together were accepted")
	}
}

// TestSharedRedisNeedsSigningKey: a Redis shared by several proxies (the
// default) without a signing key is refused before any connection, saying
// what an unsigned shared Redis means; with a key, or marked as used by
// one proxy alone, it starts, the latter with a warning.
func TestSharedRedisNeedsSigningKey(t *testing.T) {
	redis := e2eutil.StartRedis(t)
	base := DefaultConfig()
	base.Enabled, base.Backend, base.Redis.Addresses = true, BackendRedis, []string{redis.Addr}

	_, err := New(base, newPromEngine(), nil, nil, nil)
	if !errors.Is(err, ErrUnsignedSharedRedis) || !strings.Contains(err.Error(), "signing_key") || !strings.Contains(err.Error(), "shared: false") {
		t.Fatalf("shared Redis without a key: %v, want ErrUnsignedSharedRedis naming signing_key and shared: false", err)
	}

	signed := base
	signed.SigningKey = config.Secret(strings.Repeat("k", 32))
	e, err := New(signed, newPromEngine(), nil, nil, nil)
	if err != nil {
		t.Fatalf("shared Redis with a key: %v", err)
	}
	_ = e.Close()

	var logs bytes.Buffer
	alone := base
	alone.Redis.Shared = false
	e, err = New(alone, newPromEngine(), nil, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Redis of one proxy without a key: %v", err)
	}
	_ = e.Close()
	if !strings.Contains(logs.String(), "neither signed nor encrypted") {
		t.Errorf("no start-up warning about the unsigned Redis in the log:\n%s", logs.String())
	}
}
