package engine

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, at every level (push_down), and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want func(*Config)
	}{
		{"{}", func(*Config) {}},
		{"timeout: 1m\npush_down: {label: region}\n", func(c *Config) {
			c.Timeout = model.Duration(time.Minute)
			c.PushDown.Label = "region"
		}},
	} {
		var got Config
		dec := yaml.NewDecoder(strings.NewReader(tc.in))
		dec.KnownFields(true)
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		want := DefaultConfig()
		tc.want(&want)
		if got != want {
			t.Errorf("%q decoded to %+v, want %+v", tc.in, got, want)
		}
		before := got
		if err := got.Validate(); err != nil {
			t.Errorf("%q: %v", tc.in, err)
		}
		if !reflect.DeepEqual(got, before) {
			t.Errorf("Validate changed %+v to %+v", before, got)
		}
	}
}

// TestConfigValidate: what cannot work is refused, named by its key within
// the section (the assembler adds "engine: ").
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Timeout = 0 }, "timeout: "},
		{func(c *Config) { c.MaxSamples = -1 }, "max_samples: "},
		{func(c *Config) { c.LookbackDelta = 0 }, "lookback_delta: "},
		{func(c *Config) { c.SubqueryStep = 0 }, "default_subquery_step: "},
		{func(c *Config) { c.PushDown.FloatSums = "fast" }, "push_down.float_sums: "},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error starting %q", err, tc.want)
		}
	}
}
