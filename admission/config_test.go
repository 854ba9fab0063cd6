package admission

import (
	"maps"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, at every level (a tenant's entry starts from the section's
// defaults), and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want func(*Config)
	}{
		{"{}", func(*Config) {}},
		{"scheduler: fifo\ndefaults: {max_match_per_request: 5}\n", func(c *Config) {
			c.Scheduler = FIFO
			c.Defaults.MaxMatchPerRequest = 5
		}},
		{"defaults: {max_queued_requests: 7}\ntenants: {team-a: {max_match_per_request: 5}}\n", func(c *Config) {
			c.Defaults.MaxQueuedRequests = 7
			a := c.Defaults
			a.MaxMatchPerRequest = 5
			c.Tenants = map[string]Limits{"team-a": a}
		}},
	} {
		var got Config
		if err := yaml.Unmarshal([]byte(tc.in), &got); err != nil {
			t.Fatal(err)
		}
		want := DefaultConfig()
		tc.want(&want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q decoded to\n%+v, want\n%+v", tc.in, got, want)
		}
		before := got
		before.Tenants = maps.Clone(got.Tenants)
		if err := got.Validate(); err != nil {
			t.Errorf("%q: %v", tc.in, err)
		}
		if !reflect.DeepEqual(got, before) {
			t.Errorf("Validate changed %+v to %+v", before, got)
		}
	}
}

// TestConfigValidateKeys: errors name the key within the section (the
// assembler adds "limits: ").
func TestConfigValidateKeys(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Scheduler = "" }, "scheduler: "},
		{func(c *Config) { c.TenantSlots = -1 }, "tenant_slots: "},
		{func(c *Config) { c.Defaults.MaxQueuedRequests = -1 }, "defaults.max_queued_requests: "},
		{func(c *Config) { c.Tenants = map[string]Limits{"team-a": {MaxQueryLength: -1}} }, "tenants.team-a.max_query_length: "},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error starting %q", err, tc.want)
		}
	}
}
