package e2eproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// ConfigFromYAML loads a configuration file as the proxy would.
func ConfigFromYAML(t testing.TB, text string) app.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

// WaitFor fails the test unless cond holds within the given time.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	e2eutil.Eventually(t, within, what, func() error {
		if cond() {
			return nil
		}
		return errors.New("condition not met")
	})
}

// WaitGroups waits until the proxy's groups (name → replica URLs) are want.
func WaitGroups(t testing.TB, p *Proxy, what string, want map[string][]string) {
	t.Helper()
	start := time.Now()
	for {
		got := map[string][]string{}
		for _, g := range p.App.Backends().Groups() {
			urls := []string{}
			for _, r := range g.Replicas {
				urls = append(urls, r.URL)
			}
			got[g.Name] = urls
		}
		for _, urls := range want {
			slices.Sort(urls)
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			t.Logf("%s: groups followed after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: groups after 5 s:\n%v\nwant:\n%v", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const BackendTimeout = time.Second

// FaultConfig is the fleet's config with cluster-c's replicas replaced by
// urls, a short backend timeout and fast health checks.
func FaultConfig(f *Fleet, urls ...string) app.Config {
	cfg := BaseConfig(f)
	cfg.Proxy.EnableCaching = false
	cfg.Proxy.BackendTimeout = model.Duration(BackendTimeout)
	cfg.Backend.Timeout = 0 // filled from proxy.backend_timeout
	cfg.Discovery.HealthCheckInterval = model.Duration(200 * time.Millisecond)
	// The fault tests ask one proxy several things at once, each held for
	// the hung group's timeout; the default share of slots (one tenant,
	// GOMAXPROCS/2 on this machine) would queue them past queue_timeout.
	cfg.Limits.TenantSlots = 8
	if len(urls) > 0 {
		cfg.Discovery.Static[2].URLs = urls
	}
	return cfg
}

func Instant(f *Fleet, query string, extra ...string) APIRequest {
	p := url.Values{"query": {query}, "time": {FormatTime(f.Data.Start.Add(time.Hour))}}
	for i := 0; i+1 < len(extra); i += 2 {
		p.Set(extra[i], extra[i+1])
	}
	return APIRequest{Path: "/api/v1/query", Params: p}
}

// TargetStatus is one replica in /debug/targets.
type TargetStatus struct {
	Group     string
	Labels    map[string]string
	URL       string
	Healthy   bool
	LastError string
	LastCheck time.Time
	Latency   time.Duration
	Raw       map[string]any
}

func Targets(t *testing.T, p *Proxy) []TargetStatus {
	t.Helper()
	a := DoRequest(t, p.URL, APIRequest{Path: "/debug/targets"})
	var groups []struct {
		Group    string            `json:"group"`
		Labels   map[string]string `json:"labels"`
		Replicas []map[string]any  `json:"replicas"`
	}
	if err := json.Unmarshal(a.Body, &groups); a.Code != http.StatusOK || err != nil {
		t.Fatalf("/debug/targets: HTTP %d, %v: %s", a.Code, err, Clip(a.Body))
	}
	var out []TargetStatus
	for _, g := range groups {
		for _, r := range g.Replicas {
			ts := TargetStatus{Group: g.Group, Labels: g.Labels, Raw: r}
			ts.URL, _ = r["url"].(string)
			ts.Healthy, _ = r["healthy"].(bool)
			ts.LastError, _ = r["last_error"].(string)
			if s, ok := r["last_check"].(string); ok {
				ts.LastCheck, _ = time.Parse(time.RFC3339Nano, s)
			}
			if ns, ok := r["latency_ns"].(float64); ok {
				ts.Latency = time.Duration(ns)
			}
			out = append(out, ts)
		}
	}
	return out
}

// MetricSum adds up the samples of a metric whose label text contains every
// fragment (a trailing-open fragment like `result="` matches any value).
func MetricSum(t *testing.T, p *Proxy, name string, fragments ...string) float64 {
	t.Helper()
	a := DoRequest(t, p.URL, APIRequest{Path: "/metrics"})
	if a.Code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", a.Code)
	}
	sum, err := e2eutil.SumMetric(bytes.NewReader(a.Body), name, fragments...)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return sum
}

func CloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
