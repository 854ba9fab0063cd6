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

// Validate fills zero values with defaults.
func (c *ProxyConfig) Validate() error {
	d := DefaultProxyConfig()
	if c.CacheTTL <= 0 {
		c.CacheTTL = d.CacheTTL
	}
	if c.MaxConcurrentRequests <= 0 {
		c.MaxConcurrentRequests = d.MaxConcurrentRequests
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = d.QueueTimeout
	}
	if c.BackendTimeout <= 0 {
		c.BackendTimeout = d.BackendTimeout
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
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

// Validate fills defaults and checks the configuration.
func (c *ServerConfig) Validate() error {
	if c.CORSOrigin == "" {
		c.CORSOrigin = ".*"
	}
	if _, err := regexp.Compile("^(?s:" + c.CORSOrigin + ")$"); err != nil {
		return fmt.Errorf("server.cors_origin: %w", err)
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = model.Duration(10 * time.Second)
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = model.Duration(5 * time.Minute)
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = model.Duration(5 * time.Minute)
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = model.Duration(2 * time.Minute)
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = model.Duration(15 * time.Second)
	}
	if c.DrainDelay < 0 {
		return fmt.Errorf("server.drain_delay must not be negative")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("server.tls: cert_file and key_file go together")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		return fmt.Errorf("server.tls: client_ca_file needs cert_file and key_file")
	}
	return nil
}
