package httpapi

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

// TestConfigDefaults: an empty or partial proxy or server section is its
// default with the keys it sets, and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultProxyConfig, ProxyConfig.Validate, []configtest.Case[ProxyConfig]{
		{YAML: "{}"},
		{YAML: "cache_ttl: 1m\n", Want: func(p *ProxyConfig) { p.CacheTTL = model.Duration(time.Minute) }},
	})
	configtest.Decodes(t, DefaultServerConfig, ServerConfig.Validate, []configtest.Case[ServerConfig]{
		{YAML: "{}"},
		{YAML: "write_timeout: 10m\ntls: {cert_file: c, key_file: k}\n", Want: func(s *ServerConfig) {
			s.WriteTimeout = model.Duration(10 * time.Minute)
			s.TLS = TLSConfig{CertFile: "c", KeyFile: "k"}
		}},
	})
}

// TestConfigValidate: what cannot work is refused, named by its key within
// the section (the assembler adds "proxy: " or "server: ").
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{func() error { c := DefaultProxyConfig(); c.MaxConcurrentRequests = 0; return c.Validate() }(), "max_concurrent_requests: "},
		{func() error { c := DefaultProxyConfig(); c.CacheTTL = 0; return c.Validate() }(), "cache_ttl: "},
		{func() error { c := DefaultServerConfig(); c.CORSOrigin = "("; return c.Validate() }(), "cors_origin: "},
		{func() error { c := DefaultServerConfig(); c.IdleTimeout = 0; return c.Validate() }(), "idle_timeout: "},
		{func() error { c := DefaultServerConfig(); c.TLS.KeyFile = "k"; return c.Validate() }(), "tls: "},
	} {
		if tc.err == nil || !strings.HasPrefix(tc.err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error starting %q", tc.err, tc.want)
		}
	}
}
