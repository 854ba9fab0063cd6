package plan

import (
	"math"
	"testing"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing (an empty float_sums stays
// empty and means exact).
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "label: region\n", Want: func(c *Config) { c.Label = "region" }},
		{YAML: "float_sums: \"\"\n", Want: func(c *Config) { c.FloatSums = "" }},
		{YAML: "min_samples_per_point: 0\n", Want: func(c *Config) { c.MinSamplesPerPoint = 0 }},
	})
	configtest.Refuses(t, DefaultConfig, Config.Validate, []configtest.Refusal[Config]{
		{Key: "float_sums: ", Change: func(c *Config) { c.FloatSums = "fast" }},
		{Key: "min_samples_per_point: ", Change: func(c *Config) { c.MinSamplesPerPoint = -1 }},
		{Key: "min_samples_per_point: ", Change: func(c *Config) { c.MinSamplesPerPoint = math.Inf(1) }},
	})
}
