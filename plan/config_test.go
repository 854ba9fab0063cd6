package plan

import (
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
	})
	configtest.Refuses(t, DefaultConfig, Config.Validate, []configtest.Refusal[Config]{
		{Key: "float_sums: ", Change: func(c *Config) { c.FloatSums = "fast" }},
	})
}
