package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/common/model"
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

// DefaultConfig is what an empty file means: every section's DefaultConfig,
// with what one section takes from another resolved.
func DefaultConfig() Config {
	backend := remote.DefaultConfig()
	backend.Timeout = 0 // from proxy.backend_timeout unless backend.timeout is set
	cfg := Config{
		Discovery: discovery.DefaultConfig(),
		Proxy:     httpapi.DefaultProxyConfig(),
		Server:    httpapi.DefaultServerConfig(),
		Engine:    engine.DefaultConfig(),
		Backend:   backend,
		Tenants:   tenancy.DefaultConfig(),
		Auth:      authn.DefaultConfig(),
		Cache:     cache.DefaultConfig(),
		Limits:    admission.DefaultConfig(),
		Tracing:   tracing.DefaultConfig(),
	}
	cfg.resolve()
	return cfg
}

// LoadConfig reads a YAML file; unknown keys are errors, so a typo does not
// silently turn a setting off. Each section starts from its package's
// DefaultConfig (its UnmarshalYAML), so keys left out keep their defaults.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		return cfg, cfg.Validate()
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
	// backend.timeout left out takes proxy.backend_timeout (resolve), which
	// the backend section's own default would hide.
	var written struct {
		Backend struct {
			Timeout *model.Duration `yaml:"timeout"`
		} `yaml:"backend"`
	}
	if err := yaml.Unmarshal(b, &written); err == nil && written.Backend.Timeout == nil {
		cfg.Backend.Timeout = 0
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate resolves what one section takes from another, then checks
// every section, adding the section's name to its error once. The
// sections' own Validate change nothing.
func (c *Config) Validate() error {
	c.resolve()
	return c.check()
}

// resolve is the one place where a value comes from another section: the
// seed's proxy keys drive the backends' timeout and the cache, and the
// engine's answer-changing settings go into every cache key, so proxies
// configured differently never share entries in one Redis.
func (c *Config) resolve() {
	if c.Backend.Timeout <= 0 {
		c.Backend.Timeout = c.Proxy.BackendTimeout
	}
	c.Cache.Enabled = c.Proxy.EnableCaching
	c.Cache.TTL = c.Proxy.CacheTTL
	c.Cache.EngineID = fmt.Sprintf("lookback=%s;subquery_step=%s;prometheus=%s",
		c.Engine.LookbackDelta, c.Engine.SubqueryStep, httpapi.PrometheusCompatVersion())
}

// check validates every section, in the order of the file's reference.
func (c Config) check() error {
	for _, s := range []struct {
		name    string
		section interface{ Validate() error }
	}{
		{"discovery", c.Discovery}, {"proxy", c.Proxy}, {"server", c.Server}, {"engine", c.Engine},
		{"backend", c.Backend}, {"tenants", c.Tenants}, {"auth", c.Auth}, {"cache", c.Cache},
		{"limits", c.Limits}, {"tracing", c.Tracing},
	} {
		if err := s.section.Validate(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if c.Server.WriteTimeout <= c.Engine.Timeout {
		return fmt.Errorf("server.write_timeout (%s) must be longer than engine.timeout (%s), or the longest queries are cut off", c.Server.WriteTimeout, c.Engine.Timeout)
	}
	return nil
}
