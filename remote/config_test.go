package remote

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "timeout: 5s\nhttp_client: {follow_redirects: false}\n", Want: func(c *Config) {
			c.Timeout = model.Duration(5 * time.Second)
			c.HTTPClient.FollowRedirects = false
		}},
	})
}

// TestConfigValidate: what cannot work is refused, named by its key within
// the section (the assembler adds "backend: ").
func TestConfigValidate(t *testing.T) {
	configtest.Refuses(t, DefaultConfig, Config.Validate, []configtest.Refusal[Config]{
		{Key: "timeout: ", Change: func(c *Config) { c.Timeout = 0 }},
		{Key: "chunked_read_limit: ", Change: func(c *Config) { c.ChunkedReadLimit = 0 }},
		{Key: "max_response_bytes: ", Change: func(c *Config) { c.MaxResponseBytes = -1 }},
		{Key: "http_client: ", Change: func(c *Config) { c.HTTPClient.BearerToken, c.HTTPClient.BearerTokenFile = "x", "/y" }},
	})
}
