package cache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// Backends a Config may name.
const (
	BackendMemory = "memory"
	BackendRedis  = "redis"
)

// Config is the `cache` section of the proxy's configuration. Enabled and TTL
// are fed from `proxy.enable_caching` and `proxy.cache_ttl`.
type Config struct {
	Enabled bool           `yaml:"enabled"`
	TTL     model.Duration `yaml:"ttl"`
	Backend string         `yaml:"backend"`
	Memory  MemoryConfig   `yaml:"memory"`
	Redis   RedisConfig    `yaml:"redis"`
	// MaxFreshness: answers about the last MaxFreshness are never stored,
	// because late samples may still change them.
	MaxFreshness model.Duration `yaml:"max_freshness"`
	// SplitInterval is the target length of one cached extent of a range
	// query; each extent holds a whole number of the query's steps.
	SplitInterval model.Duration `yaml:"split_interval"`

	// KeyPrefix starts every key, so that two deployments sharing one Redis
	// never share entries (their tenants and backends may differ in ways
	// the keys cannot see). It must not hold a {hash tag}: that would put
	// every key in one Redis Cluster slot.
	KeyPrefix string `yaml:"key_prefix"`
	// SigningKey (or the file SigningKeyFile) makes every value carry an
	// HMAC-SHA256 under it: an entry written by anything not holding the
	// key is a miss. Proxies sharing entries need the same key.
	SigningKey     config.Secret `yaml:"signing_key"`
	SigningKeyFile string        `yaml:"signing_key_file"`
	signingKey     []byte

	// EngineID names the wrapped engine's answer-changing settings (default
	// lookback delta, subquery step, feature flags). It is part of every key,
	// so proxies configured differently never share entries in one Redis.
	EngineID string `yaml:"-"`
}

// MemoryConfig bounds the in-process store.
type MemoryConfig struct {
	MaxBytes int64 `yaml:"max_bytes"`
}

// RedisConfig reaches a single Redis, a cluster (several addresses) or a
// Sentinel-managed master (master_name set, addresses are the sentinels).
type RedisConfig struct {
	Addresses []string `yaml:"addresses"`
	Username  string   `yaml:"username"`
	Password  string   `yaml:"password"`
	// PasswordFile holds the password instead (a mounted Secret). It is
	// read again for every new connection, so a rotated Secret applies
	// without a restart.
	PasswordFile     string `yaml:"password_file"`
	DB               int    `yaml:"db"`
	MasterName       string `yaml:"master_name"`
	SentinelPassword string `yaml:"sentinel_password"`
	// SentinelPasswordFile holds the sentinels' password instead, read at
	// start.
	SentinelPasswordFile string `yaml:"sentinel_password_file"`
	// SentinelUsername is the ACL user for the sentinels; Username and
	// Password are the data nodes' ACL user.
	SentinelUsername string         `yaml:"sentinel_username"`
	Timeout          model.Duration `yaml:"timeout"`
	PoolSize         int            `yaml:"pool_size"`
	// TLSEnabled speaks TLS to every node (and sentinel), checked as
	// TLSConfig says: Prometheus' usual ca_file, cert_file, key_file,
	// server_name, insecure_skip_verify, min_version.
	TLSEnabled bool             `yaml:"tls_enabled"`
	TLSConfig  config.TLSConfig `yaml:"tls_config"`
	// Shared (the default) says several proxies use this Redis (replicas
	// of one Deployment, or other deployments): each trusts what the others
	// write, so a signing key is required. Only a Redis used by one proxy
	// alone may set it false and run unsigned.
	Shared bool `yaml:"shared"`
}

// Defaults.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultRedisTimeout = 100 * time.Millisecond
	DefaultMaxFreshness = time.Minute
	DefaultTTL          = time.Hour
	// DefaultSplitInterval comes from BenchmarkSplitInterval: an eight-panel
	// dashboard (6h at 30s, 24h at 2m) refreshed every 30s after a day open.
	// Per refresh, for 10m/30m/1h/2h/6h/24h extents: 511/176/92/50/22/10 keys
	// read, 1.47/1.35/1.36/1.54/2.31/2.31 MiB read, 24/58/108/308/1105/2300
	// KiB written (the extent holding the cutoff is rewritten every refresh,
	// so writes grow with the extent). 30m and 1h read least; 1h needs half
	// the keys of 30m, and the cache's own CPU time per refresh was lowest.
	DefaultSplitInterval = time.Hour
)

// DefaultConfig returns the configuration used for keys left out.
func DefaultConfig() Config {
	return Config{
		Enabled:       true,
		TTL:           model.Duration(DefaultTTL),
		Backend:       BackendMemory,
		Memory:        MemoryConfig{MaxBytes: DefaultMaxBytes},
		Redis:         RedisConfig{Timeout: model.Duration(DefaultRedisTimeout), Shared: true},
		MaxFreshness:  model.Duration(DefaultMaxFreshness),
		SplitInterval: model.Duration(DefaultSplitInterval),
	}
}

// UnmarshalYAML starts from DefaultConfig so that a partial section keeps the
// defaults of the keys it leaves out.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	switch c.Backend {
	case BackendMemory:
		if c.Memory.MaxBytes <= 0 {
			return errors.New("memory.max_bytes: must be positive")
		}
	case BackendRedis:
		if len(c.Redis.Addresses) == 0 {
			return errors.New("redis.addresses: must name at least one address")
		}
		if c.Redis.Timeout <= 0 {
			return errors.New("redis.timeout: must be positive")
		}
		if c.Redis.DB != 0 && c.Redis.MasterName == "" && len(c.Redis.Addresses) > 1 {
			return errors.New("redis.db: must be 0 for a Redis cluster")
		}
		if c.Redis.PoolSize < 0 {
			return errors.New("redis.pool_size: must not be negative")
		}
	default:
		return fmt.Errorf("backend: %q is neither %q nor %q", c.Backend, BackendMemory, BackendRedis)
	}
	if c.TTL <= 0 {
		return errors.New("ttl: must be positive")
	}
	if c.MaxFreshness < 0 {
		return errors.New("max_freshness: must not be negative")
	}
	if c.SplitInterval <= 0 {
		return errors.New("split_interval: must be positive")
	}
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		return fmt.Errorf("key_prefix: %q must not contain { or }: a Redis Cluster would put every key in the one slot of that hash tag", c.KeyPrefix)
	}
	if c.SigningKey != "" && c.SigningKeyFile != "" {
		return errors.New("signing_key and signing_key_file exclude each other")
	}
	if c.Redis.Password != "" && c.Redis.PasswordFile != "" {
		return errors.New("redis.password and redis.password_file exclude each other")
	}
	if c.Redis.SentinelPassword != "" && c.Redis.SentinelPasswordFile != "" {
		return errors.New("redis.sentinel_password and redis.sentinel_password_file exclude each other")
	}
	if c.Backend == BackendRedis && c.Redis.TLSEnabled {
		if err := c.Redis.TLSConfig.Validate(); err != nil {
			return fmt.Errorf("redis.tls_config: %w", err)
		}
	}
	return nil
}

// minSigningKeyLen keeps a guessable key from giving a false sense of
// safety: HMAC-SHA256 wants at least as many bytes as it outputs.
const minSigningKeyLen = 32

// loadSigningKey reads the key the values are signed with, if any.
func (c *Config) loadSigningKey() error {
	key := []byte(c.SigningKey)
	if c.SigningKeyFile != "" {
		b, err := os.ReadFile(c.SigningKeyFile)
		if err != nil {
			return fmt.Errorf("cache.signing_key_file: %w", err)
		}
		key = bytes.TrimSpace(b)
	}
	if len(key) == 0 {
		c.signingKey = nil
		return nil
	}
	if len(key) < minSigningKeyLen {
		return fmt.Errorf("cache signing key: %d bytes, want at least %d", len(key), minSigningKeyLen)
	}
	c.signingKey = key
	return nil
}
