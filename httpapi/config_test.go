package httpapi

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// TestConfigDefaults: an empty or partial proxy or server section is its
// default with the keys it sets, and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want func(*ProxyConfig, *ServerConfig)
	}{
		{"proxy: {}\nserver: {}\n", func(*ProxyConfig, *ServerConfig) {}},
		{"proxy: {cache_ttl: 1m}\nserver: {write_timeout: 10m, tls: {cert_file: c, key_file: k}}\n", func(p *ProxyConfig, s *ServerConfig) {
			p.CacheTTL = model.Duration(time.Minute)
			s.WriteTimeout = model.Duration(10 * time.Minute)
			s.TLS = TLSConfig{CertFile: "c", KeyFile: "k"}
		}},
	} {
		var got struct {
			Proxy  ProxyConfig  `yaml:"proxy"`
			Server ServerConfig `yaml:"server"`
		}
		dec := yaml.NewDecoder(strings.NewReader(tc.in))
		dec.KnownFields(true)
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		wantP, wantS := DefaultProxyConfig(), DefaultServerConfig()
		tc.want(&wantP, &wantS)
		if got.Proxy != wantP || got.Server != wantS {
			t.Errorf("%q decoded to %+v %+v, want %+v %+v", tc.in, got.Proxy, got.Server, wantP, wantS)
		}
		before := got
		if err := got.Proxy.Validate(); err != nil {
			t.Errorf("%q: proxy: %v", tc.in, err)
		}
		if err := got.Server.Validate(); err != nil {
			t.Errorf("%q: server: %v", tc.in, err)
		}
		if !reflect.DeepEqual(got, before) {
			t.Errorf("Validate changed %+v to %+v", before, got)
		}
	}
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
