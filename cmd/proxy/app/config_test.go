package app

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// seedExample is the configuration example the project started from; every
// key of it must stay valid.
const seedExample = `
discovery:
  kubernetes:
    namespaces:
      - monitoring
      - kube-system
    label_selectors:
      app: prometheus
    annotation_selectors:
      prometheus.io/scrape: "true"
    port: "9090"
    resource_types:
      - Service
      - Pod
  refresh_interval: 30s
tenants:
  watch_all_namespaces: true
proxy:
  enable_caching: true
  cache_ttl: 5m
  enable_metrics: true
  enable_request_logging: true
  max_concurrent_requests: 100
  backend_timeout: 30s
auth:
  type: "jwt"
  jwt:
    secret_key: "your-secret-key"
    issuer: "prometheus-proxy"
    audience: "prometheus-users"
`

func TestConfigFilesLoad(t *testing.T) {
	root := e2eutil.RepoRoot(t)
	files := map[string]string{"seed example": seedExample}
	for _, name := range []string{"examples/config.yaml", "examples/kubernetes/config.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	// The complete example of the configuration page, the first yaml
	// block under "## Configuration".
	page, err := os.ReadFile(filepath.Join(root, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(page), "## Configuration")
	if i < 0 {
		t.Fatal("docs/configuration.md has no ## Configuration section")
	}
	block := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(string(page)[i:])
	if block == nil {
		t.Fatal("docs/configuration.md has no yaml block under ## Configuration")
	}
	files["docs/configuration.md example"] = block[1]
	for name, text := range files {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(path); err != nil {
				t.Fatalf("%s does not load: %v", name, err)
			}
		})
	}
}

func TestConfigSeedKeysTakeEffect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(seedExample), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Cache.Enabled || time.Duration(cfg.Cache.TTL) != 5*time.Minute {
		t.Errorf("proxy.enable_caching/cache_ttl did not reach the cache: %+v", cfg.Cache)
	}
	if time.Duration(cfg.Backend.Timeout) != 30*time.Second {
		t.Errorf("proxy.backend_timeout did not reach the backends: %v", cfg.Backend.Timeout)
	}
	if len(cfg.Discovery.Kubernetes) != 1 || cfg.Discovery.Kubernetes[0].Port != "9090" || len(cfg.Discovery.Kubernetes[0].ResourceTypes) != 2 {
		t.Errorf("discovery.kubernetes not read: %+v", cfg.Discovery.Kubernetes)
	}
	if cfg.Auth.Type != "jwt" || cfg.Auth.JWT.Issuer != "prometheus-proxy" {
		t.Errorf("auth not read: %+v", cfg.Auth.Type)
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("proxy:\n  enable_cachng: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "enable_cachng") {
		t.Fatalf("a misspelt key was accepted: %v", err)
	}
}

// TestTracingConfig: the section is checked as Prometheus checks its own.
func TestTracingConfig(t *testing.T) {
	for _, tc := range []struct {
		yaml, err string
	}{
		{"", ""},
		{"tracing: {endpoint: \"\"}", ""},
		{"tracing: {endpoint: 127.0.0.1:4317, insecure: true, sampling_fraction: 0.5, compression: gzip, timeout: 5s, headers: {x-org: a}}", ""},
		{"tracing: {endpoint: 127.0.0.1:4318, client_type: http}", ""},
		{"tracing: {endpoint: 127.0.0.1:4317, client_type: udp}", "client_type"},
		{"tracing: {endpoint: 127.0.0.1:4317, compression: zstd}", "compression"},
		{"tracing: {endpoint: 127.0.0.1:4317, headers: {Authorization: x}}", "authorization"},
		{"tracing: {endpoint: 127.0.0.1:4317, sampling_fraction: 2}", "sampling_fraction"},
		{"tracing: {endpoint: 127.0.0.1:4317, sample_rate: 1}", "sample_rate"},
	} {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.yaml, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one naming %s", tc.yaml, err, tc.err)
		}
	}
}

// TestBackendTimeoutFromConfigFile: the seed's proxy.backend_timeout must
// bound backend calls when backend.timeout is not set.
func TestBackendTimeoutFromConfigFile(t *testing.T) {
	path := t.TempDir() + "/config.yaml"
	if err := os.WriteFile(path, []byte("proxy:\n  backend_timeout: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(cfg.Backend.Timeout); got != time.Second {
		t.Errorf("backend timeout %v, want proxy.backend_timeout's 1s", got)
	}
}

// TestConfigErrorsNameSectionOnce: a bad key is reported with its section
// added once by the assembler, and a partial section keeps the defaults of
// the keys it leaves out.
func TestConfigErrorsNameSectionOnce(t *testing.T) {
	for in, want := range map[string]string{
		"cache:\n  split_interval: 0s\n":                   "cache: split_interval: ",
		"discovery:\n  load_balancing: fastest\n":          "discovery: load_balancing: ",
		"engine:\n  timeout: 0s\n":                         "engine: timeout: ",
		"limits:\n  defaults: {max_queued_requests: -1}\n": "limits: defaults.max_queued_requests: ",
		"tenants:\n  namespace_label: \"\"\n":              "tenants: namespace_label: ",
		"server:\n  idle_timeout: 0s\n":                    "server: idle_timeout: ",
	} {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", in, err, want)
			continue
		}
		section, _, _ := strings.Cut(want, ":")
		if strings.Count(strings.TrimPrefix(err.Error(), path+": "), section) != 1 {
			t.Errorf("%q: %v names its section more than once", in, err)
		}
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("discovery:\n  load_balancing: random\nbackend:\n  buffer_reads: true\nproxy:\n  backend_timeout: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Discovery.LoadBalancing, want.Backend.BufferReads = discovery.Random, true
	want.Proxy.BackendTimeout, want.Backend.Timeout = model.Duration(3*time.Second), model.Duration(3*time.Second)
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("partial sections decoded to\n%+v\nwant\n%+v", cfg, want)
	}
}
