package cache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/config"
	"github.com/redis/go-redis/v9"
)

// redisHoldOff is how long a RedisStore answers ErrUnavailable after a
// failed call, so that a dead or slow Redis costs one timeout per hold-off
// instead of one per query.
const redisHoldOff = time.Second

// RedisStore keeps entries in Redis: a single server, a cluster or a
// Sentinel-managed master, whichever the configuration describes.
type RedisStore struct {
	client  redis.UniversalClient
	timeout time.Duration
	now     func() time.Time

	mu        sync.Mutex
	downUntil time.Time
}

// readPassword is a password file's content less its line end.
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// passwordFromFile reads path once, so that a missing file fails the
// start, then again for each new connection (a rotated Secret applies to
// the next connection). Without a file it is nil: the static password.
func passwordFromFile(user, path, key string) (func(context.Context) (string, string, error), error) {
	if path == "" {
		return nil, nil
	}
	if _, err := readPassword(path); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return func(context.Context) (string, string, error) {
		password, err := readPassword(path)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", key, err)
		}
		return user, password, nil
	}, nil
}

// NewRedisStore builds the client; it does not connect until first used, so
// a Redis that is down at start-up only makes the cache miss.
func NewRedisStore(cfg RedisConfig) (*RedisStore, error) {
	timeout := time.Duration(cfg.Timeout)
	if timeout <= 0 {
		timeout = DefaultRedisTimeout
	}
	var tlsCfg *tls.Config
	if cfg.TLSEnabled {
		var err error
		if tlsCfg, err = config.NewTLSConfig(&cfg.TLSConfig); err != nil {
			return nil, fmt.Errorf("cache.redis.tls_config: %w", err)
		}
	}
	credentials, err := passwordFromFile(cfg.Username, cfg.PasswordFile, "cache.redis.password_file")
	if err != nil {
		return nil, err
	}
	sentinelPassword := cfg.SentinelPassword
	if cfg.SentinelPasswordFile != "" {
		if sentinelPassword, err = readPassword(cfg.SentinelPasswordFile); err != nil {
			return nil, fmt.Errorf("cache.redis.sentinel_password_file: %w", err)
		}
	}
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		CredentialsProviderContext: credentials,
		Addrs:                      cfg.Addresses,
		Username:                   cfg.Username,
		Password:                   cfg.Password,
		DB:                         cfg.DB,
		MasterName:                 cfg.MasterName,
		SentinelUsername:           cfg.SentinelUsername,
		SentinelPassword:           sentinelPassword,
		PoolSize:                   cfg.PoolSize,
		TLSConfig:                  tlsCfg,
		// Every wait is bounded by the short timeout: the cache must never
		// make a query slower than the backends would.
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		DialerRetries:         1,
	})
	return &RedisStore{client: client, timeout: timeout, now: time.Now}, nil
}

func (s *RedisStore) available() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.now().Before(s.downUntil)
}

func (s *RedisStore) failed() {
	s.mu.Lock()
	s.downUntil = s.now().Add(redisHoldOff)
	s.mu.Unlock()
}

// Get implements Store. It pipelines one GET per key rather than an MGET,
// which a cluster would refuse for keys in different slots.
func (s *RedisStore) Get(ctx context.Context, keys ...string) ([][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if !s.available() {
		return nil, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		s.failed()
		return nil, fmt.Errorf("redis get: %w", err)
	}
	out := make([][]byte, len(keys))
	for i, c := range cmds {
		b, err := c.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			s.failed()
			return nil, fmt.Errorf("redis get: %w", err)
		default:
			out[i] = b
		}
	}
	return out, nil
}

// Set implements Store.
func (s *RedisStore) Set(ctx context.Context, ttl time.Duration, entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if !s.available() {
		return ErrUnavailable
	}
	// A write already paid for should not be lost because the client went away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			p.Set(ctx, e.Key, e.Value, ttl)
		}
		return nil
	})
	if err != nil {
		s.failed()
		return fmt.Errorf("redis set: %w", err)
	}
	return nil
}

// Close implements Store.
func (s *RedisStore) Close() error { return s.client.Close() }

// redisLog takes go-redis' own messages (pool dial failures and the like)
// down to debug level: the cache already reports each failure once.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, fmt.Sprintf(format, v...))
}
