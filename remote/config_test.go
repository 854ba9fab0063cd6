package remote

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want func(*Config)
	}{
		{"{}", func(*Config) {}},
		{"timeout: 5s\nhttp_client: {follow_redirects: false}\n", func(c *Config) {
			c.Timeout = model.Duration(5 * time.Second)
			c.HTTPClient.FollowRedirects = false
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
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q decoded to\n%+v, want\n%+v", tc.in, got, want)
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
// the section (the assembler adds "backend: ").
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Timeout = 0 }, "timeout: "},
		{func(c *Config) { c.ChunkedReadLimit = 0 }, "chunked_read_limit: "},
		{func(c *Config) { c.MaxResponseBytes = -1 }, "max_response_bytes: "},
		{func(c *Config) { c.HTTPClient.BearerToken, c.HTTPClient.BearerTokenFile = "x", "/y" }, "http_client: "},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error starting %q", err, tc.want)
		}
	}
}
