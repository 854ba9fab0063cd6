package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cache"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/httpapi"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Config is the whole configuration file; each section belongs to the
// package it configures.
type Config struct {
	Discovery discovery.Config     `yaml:"discovery"`
	Proxy     httpapi.ProxyConfig  `yaml:"proxy"`
	Server    httpapi.ServerConfig `yaml:"server"`
	Engine    engine.Config        `yaml:"engine"`
	Backend   remote.Config        `yaml:"backend"`
	Tenants   tenancy.Config       `yaml:"tenants"`
	Auth      authn.Config         `yaml:"auth"`
	Cache     cache.Config         `yaml:"cache"`
	Limits    admission.Config     `yaml:"limits"`
	Tracing   tracing.Config       `yaml:"tracing"`
}

// defaultConfig is what an empty file means.
func defaultConfig() Config {
	backend := remote.DefaultConfig()
	backend.Timeout = 0 // filled from proxy.backend_timeout unless backend.timeout is set
	return Config{
		Proxy:   httpapi.DefaultProxyConfig(),
		Engine:  engine.DefaultConfig(),
		Backend: backend,
		Tenants: tenancy.DefaultConfig(),
		Cache:   cache.DefaultConfig(),
		Limits:  admission.DefaultConfig(),
		Tracing: tracing.DefaultConfig(),
	}
}

// loadConfig reads a YAML file; unknown keys are errors, so a typo does not
// silently turn a setting off.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, cfg.validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func (c *Config) validate() error {
	if err := c.Proxy.Validate(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	// proxy.backend_timeout is the seed's key for every backend call.
	if c.Backend.Timeout <= 0 {
		c.Backend.Timeout = c.Proxy.BackendTimeout
	}
	if err := c.Backend.Validate(); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if err := c.Discovery.Validate(); err != nil {
		return err
	}
	if err := c.Engine.Validate(); err != nil {
		return err
	}
	if err := c.Server.Validate(); err != nil {
		return err
	}
	if err := c.Tenants.Validate(); err != nil {
		return fmt.Errorf("tenants: %w", err)
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := c.Tracing.Validate(); err != nil {
		return err
	}
	if c.Server.WriteTimeout <= c.Engine.Timeout {
		return fmt.Errorf("server.write_timeout (%s) must be longer than engine.timeout (%s), or the longest queries are cut off", c.Server.WriteTimeout, c.Engine.Timeout)
	}
	// The seed's proxy.enable_caching and proxy.cache_ttl drive the cache.
	c.Cache.Enabled = c.Proxy.EnableCaching
	c.Cache.TTL = c.Proxy.CacheTTL
	// Settings that change answers go into every cache key, so proxies
	// configured differently never share entries in one Redis.
	c.Cache.EngineID = fmt.Sprintf("lookback=%s;subquery_step=%s;prometheus=%s",
		c.Engine.LookbackDelta, c.Engine.SubqueryStep, httpapi.PrometheusCompatVersion())
	if err := c.Cache.Validate(); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}
