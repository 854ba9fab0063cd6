// Package httpapi serves the proxy over HTTP: Prometheus' own query API
// handlers, tenant identification, limits, request logs and management endpoints.
package httpapi

import (
	"fmt"
	"regexp"
	"time"

	"github.com/prometheus/common/model"
)

// ProxyConfig is the seed's `proxy` section. Caching and backend timeout are
// read here and handed by the assembler to the packages they configure.
type ProxyConfig struct {
	EnableCaching         bool           `yaml:"enable_caching"`
	CacheTTL              model.Duration `yaml:"cache_ttl"`
	EnableMetrics         bool           `yaml:"enable_metrics"`
	EnableRequestLogging  bool           `yaml:"enable_request_logging"`
	MaxConcurrentRequests int            `yaml:"max_concurrent_requests"`
	// QueueTimeout is how long a request waits for a slot when
	// max_concurrent_requests are running, before it gets 503.
	QueueTimeout   model.Duration `yaml:"queue_timeout"`
	BackendTimeout model.Duration `yaml:"backend_timeout"`
	// MaxBodyBytes bounds POST bodies (form-encoded queries).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// DefaultProxyConfig returns the defaults (those of the seed's example).
func DefaultProxyConfig() ProxyConfig {
	return ProxyConfig{
		EnableCaching:         true,
		CacheTTL:              model.Duration(5 * time.Minute),
		EnableMetrics:         true,
		EnableRequestLogging:  true,
		MaxConcurrentRequests: 100,
		QueueTimeout:          model.Duration(time.Second),
		BackendTimeout:        model.Duration(30 * time.Second),
		MaxBodyBytes:          1 << 20,
	}
}

// UnmarshalYAML starts from DefaultProxyConfig, so keys left out keep their
// defaults.
func (c *ProxyConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultProxyConfig()
	type plain ProxyConfig
	return unmarshal((*plain)(c))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing.
func (c ProxyConfig) Validate() error {
	switch {
	case c.CacheTTL <= 0:
		return fmt.Errorf("cache_ttl: %s is not positive", c.CacheTTL)
	case c.MaxConcurrentRequests <= 0:
		return fmt.Errorf("max_concurrent_requests: %d is not positive", c.MaxConcurrentRequests)
	case c.QueueTimeout <= 0:
		return fmt.Errorf("queue_timeout: %s is not positive", c.QueueTimeout)
	case c.BackendTimeout <= 0:
		return fmt.Errorf("backend_timeout: %s is not positive", c.BackendTimeout)
	case c.MaxBodyBytes <= 0:
		return fmt.Errorf("max_body_bytes: %d is not positive", c.MaxBodyBytes)
	}
	return nil
}

// ServerConfig is the `server` section.
type ServerConfig struct {
	TLS TLSConfig `yaml:"tls"`
	// CORSOrigin is a regexp of allowed browser origins, as Prometheus' --web.cors.origin.
	CORSOrigin string `yaml:"cors_origin"`
	// ReadHeaderTimeout bounds the wait for a request's headers.
	ReadHeaderTimeout model.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout model.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds a request from the end of its headers to the end
	// of the answer: it must exceed the longest query (engine.timeout).
	WriteTimeout model.Duration `yaml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle that long.
	IdleTimeout     model.Duration `yaml:"idle_timeout"`
	ShutdownTimeout model.Duration `yaml:"shutdown_timeout"`
	// ManagementAddress (e.g. ":9091") serves /metrics, /health and /ready
	// without credentials, for ServiceMonitors and kubelet probes; the main
	// port then keeps them admin-only when tenancy is on. Empty: none.
	ManagementAddress string `yaml:"management_address"`
	// DrainDelay: on SIGTERM /ready turns 503 at once, but the listener
	// keeps serving for this long, so that load balancers (a Kubernetes
	// Service following readiness) stop sending new requests before it
	// closes; then in-flight requests get shutdown_timeout to finish.
	DrainDelay model.Duration `yaml:"drain_delay"`
}

// TLSConfig is the server's certificate and, for mTLS, the client CA.
type TLSConfig struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// DefaultServerConfig returns the defaults of the `server` section.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		CORSOrigin:        ".*",
		ReadHeaderTimeout: model.Duration(10 * time.Second),
		ReadTimeout:       model.Duration(5 * time.Minute),
		WriteTimeout:      model.Duration(5 * time.Minute),
		IdleTimeout:       model.Duration(2 * time.Minute),
		ShutdownTimeout:   model.Duration(15 * time.Second),
	}
}

// UnmarshalYAML starts from DefaultServerConfig, so keys left out keep
// their defaults.
func (c *ServerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultServerConfig()
	type plain ServerConfig
	return unmarshal((*plain)(c))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing.
func (c ServerConfig) Validate() error {
	if _, err := regexp.Compile("^(?s:" + c.CORSOrigin + ")$"); err != nil {
		return fmt.Errorf("cors_origin: %w", err)
	}
	for _, d := range []struct {
		key string
		v   model.Duration
	}{
		{"read_header_timeout", c.ReadHeaderTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout},
		{"idle_timeout", c.IdleTimeout}, {"shutdown_timeout", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s: %s is not positive", d.key, d.v)
		}
	}
	if c.DrainDelay < 0 {
		return fmt.Errorf("drain_delay: must not be negative")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("tls: cert_file and key_file go together")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		return fmt.Errorf("tls: client_ca_file needs cert_file and key_file")
	}
	return nil
}
