package plan

import (
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing (an empty float_sums stays
// empty and means exact).
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want func(*Config)
	}{
		{"{}", func(*Config) {}},
		{"label: region\n", func(c *Config) { c.Label = "region" }},
		{"float_sums: \"\"\n", func(c *Config) { c.FloatSums = "" }},
	} {
		var got Config
		if err := yaml.Unmarshal([]byte(tc.in), &got); err != nil {
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
	if err := (Config{FloatSums: "fast"}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "float_sums: ") {
		t.Errorf("unknown float_sums: %v, want an error naming float_sums first", err)
	}
}
