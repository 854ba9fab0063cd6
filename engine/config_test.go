package engine

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, at every level (push_down), and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "timeout: 1m\npush_down: {label: region}\n", Want: func(c *Config) {
			c.Timeout = model.Duration(time.Minute)
			c.PushDown.Label = "region"
		}},
	})
}

// TestConfigValidate: what cannot work is refused, named by its key within
// the section (the assembler adds "engine: ").
func TestConfigValidate(t *testing.T) {
	configtest.Refuses(t, DefaultConfig, Config.Validate, []configtest.Refusal[Config]{
		{Key: "timeout: ", Change: func(c *Config) { c.Timeout = 0 }},
		{Key: "max_samples: ", Change: func(c *Config) { c.MaxSamples = -1 }},
		{Key: "lookback_delta: ", Change: func(c *Config) { c.LookbackDelta = 0 }},
		{Key: "default_subquery_step: ", Change: func(c *Config) { c.SubqueryStep = 0 }},
		{Key: "push_down.float_sums: ", Change: func(c *Config) { c.PushDown.FloatSums = "fast" }},
	})
}
