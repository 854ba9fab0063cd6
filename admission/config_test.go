package admission

import (
	"math"
	"testing"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, at every level (a tenant's entry starts from the section's
// defaults), and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "scheduler: fifo\ndefaults: {max_match_per_request: 5}\n", Want: func(c *Config) {
			c.Scheduler = FIFO
			c.Defaults.MaxMatchPerRequest = 5
		}},
		{YAML: "defaults: {max_queued_requests: 7}\ntenants: {team-a: {max_match_per_request: 5}}\n", Want: func(c *Config) {
			c.Defaults.MaxQueuedRequests = 7
			a := c.Defaults
			a.MaxMatchPerRequest = 5
			c.Tenants = map[string]Limits{"team-a": a}
		}},
	})
}

// TestConfigValidateKeys: errors name the key within the section (the
// assembler adds "limits: ").
func TestConfigValidateKeys(t *testing.T) {
	configtest.Refuses(t, DefaultConfig, Config.Validate, []configtest.Refusal[Config]{
		{Key: "scheduler: ", Change: func(c *Config) { c.Scheduler = "" }},
		{Key: "tenant_slots: ", Change: func(c *Config) { c.TenantSlots = -1 }},
		{Key: "defaults.max_queued_requests: ", Change: func(c *Config) { c.Defaults.MaxQueuedRequests = -1 }},
		{Key: "tenants.team-a.max_query_length: ", Change: func(c *Config) { c.Tenants = map[string]Limits{"team-a": {MaxQueryLength: -1}} }},
		{Key: "defaults.refusals_per_second: ", Change: func(c *Config) { c.Defaults.RefusalsPerSecond = -1 }},
		{Key: "defaults.refusals_per_second: ", Change: func(c *Config) { c.Defaults.RefusalsPerSecond = math.NaN() }},
		{Key: "defaults.refusals_per_second: ", Change: func(c *Config) { c.Defaults.RefusalsPerSecond = math.Inf(1) }},
		{Key: "defaults.refusal_burst: ", Change: func(c *Config) { c.Defaults.RefusalBurst = 0 }},
	})
}
