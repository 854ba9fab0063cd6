package query

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
)

// storedLabelsFleet is two Prometheus servers with external labels
// {cluster: cN, env: prod}, each storing, beside series without those
// labels, series with their own value of them (as federation,
// honor_labels or remote write leave): the proxy shows a stored value,
// not the group's. With foreign, each also stores a series of team-b
// claiming cluster="other" (which the disjointness probe finds for any
// query that may read it).
func storedLabelsFleet(t *testing.T, at time.Time, foreign bool) []discovery.StaticGroup {
	t.Helper()
	var groups []discovery.StaticGroup
	for i := 1; i <= 2; i++ {
		cluster := "c" + strconv.Itoa(i)
		ts := strconv.FormatInt(at.Add(-time.Minute).Unix(), 10)
		lines := []string{
			"# TYPE m gauge",
			`m{namespace="team-a",pod="p1",env="staging"} 1000 ` + ts,
			`m{namespace="team-a",pod="p2"} 1 ` + ts,
		}
		if foreign {
			lines = append(lines, `m{namespace="team-b",pod="p3",cluster="other"} 500 `+ts)
		}
		om := strings.Join(append(lines, "# EOF", ""), "\n")
		p := e2eutil.StartPrometheus(t, e2eutil.V3, strings.NewReader(om), e2eutil.WithName("stored-"+cluster),
			e2eutil.WithExternalLabels(map[string]string{"cluster": cluster, "env": "prod"}))
		groups = append(groups, discovery.StaticGroup{Name: cluster, URLs: []string{p.URL}})
	}
	return groups
}

// TestPushDownStoredGroupLabels: a series storing its own value of a group
// label that a tenant rule names never reaches that tenant through
// push-down, for each way a rule names such a label (labelSelectors;
// spec.source with tenants.namespace_label on a group label), and the
// query is pushed (so the proof is of the pushed path, not a fallback).
func TestPushDownStoredGroupLabels(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	groups := storedLabelsFleet(t, at, true)
	dir := t.TempDir()
	for name, body := range map[string]string{
		"team-a.yaml": `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: prod-only, namespace: team-a}
spec:
  source: team-a
  labelSelectors: {env: prod}
  metrics: [m]
`,
		// tenants.namespace_label: env, so spec.source is an env.
		"prod.yaml": `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: prod-env, namespace: prod}
spec:
  source: prod
  metrics: [m]
`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, tenant, nsLabel string
		query                 string
		want                  map[string]float64 // by cluster
	}{
		// p1 stores env="staging": not team-a's prod; p2 (env from
		// the group) is. p3 is team-b's.
		{"labelSelectors", "team-a", "namespace", `sum by (cluster) (m)`, map[string]float64{"c1": 1, "c2": 1}},
		{"labelSelectors-combined", "team-a", "namespace", `count(m)`, map[string]float64{"": 2}},
		// Tenant prod reads env prod of every namespace: p2, not p1.
		// (p3, storing a cluster of its own, would be prod's too, and the
		// probe would refuse the push: the selector leaves it out.)
		{"namespace_label", "prod", "env", `sum by (cluster) (m{namespace="team-a"})`, map[string]float64{"c1": 1, "c2": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answers := map[bool]map[string]float64{}
			for _, on := range []bool{false, true} {
				cfg := app.DefaultConfig()
				cfg.Discovery.Static = groups
				cfg.Proxy.EnableRequestLogging = false
				cfg.Proxy.EnableCaching = false
				cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
				cfg.Tenants.NamespaceLabel = tc.nsLabel
				cfg.Engine.PushDown = plan.Config{Enabled: on, FloatSums: plan.FloatSumsReassociate}
				p := startExtProxy(t, cfg)
				r := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {tc.query}, "time": {e2eproxy.FormatTime(at)}}, Header: e2eproxy.TenantHeader(tc.tenant)}
				a := e2eproxy.DoRequest(t, p.URL, r)
				if a.Code != http.StatusOK {
					t.Fatalf("push-down %v: HTTP %d %s", on, a.Code, a.Body)
				}
				answers[on] = vectorByLabel(t, a.Body, "cluster")
				if pushed := pushDownCount(t, p, "pushed"); on && pushed != 1 {
					r.Params.Set("explain", "true")
					t.Errorf("push-down on: %v queries pushed, want 1 (the test proves the pushed path only when it is taken)\n%s", pushed, e2eproxy.DoRequest(t, p.URL, r).Body)
				}
			}
			for on, got := range answers {
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("push-down %v: %s as %s answered %v, want %v", on, tc.query, tc.tenant, got, tc.want)
				}
			}
		})
	}
}

// TestPushDownQueryLength: a tenant limited by max_query_length cannot
// read further back through a pushed query than through remote read.
func TestPushDownQueryLength(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	groups := storedLabelsFleet(t, at, false)
	for _, on := range []bool{false, true} {
		cfg := app.DefaultConfig()
		cfg.Discovery.Static = groups
		cfg.Proxy.EnableRequestLogging = false
		cfg.Proxy.EnableCaching = false
		cfg.Engine.PushDown = plan.Config{Enabled: on, FloatSums: plan.FloatSumsReassociate}
		cfg.Limits.Defaults.MaxQueryLength = model.Duration(24 * time.Hour)
		p := startExtProxy(t, cfg)
		for _, q := range []string{`max by (cluster) (max_over_time(m[90d]))`, `count(max_over_time(m[90d]))`, `max by (cluster) (max_over_time(m[2d] offset 1h)) - max by (cluster) (m)`} {
			a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {q}, "time": {e2eproxy.FormatTime(at)}}})
			if a.Code != http.StatusUnprocessableEntity || !strings.Contains(string(a.Body), "max_query_length") {
				t.Errorf("push-down %v: %s: HTTP %d %s; want 422 naming max_query_length", on, q, a.Code, a.Body)
			}
		}
		// Within the limit the same shape is answered (and pushed).
		a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`max by (cluster) (max_over_time(m[1h]))`}, "time": {e2eproxy.FormatTime(at)}}})
		if a.Code != http.StatusOK || !e2eproxy.HasData(t, a) {
			t.Errorf("push-down %v: within the limit: HTTP %d %s", on, a.Code, a.Body)
		}
		if pushed := pushDownCount(t, p, "pushed"); on && pushed != 1 {
			t.Errorf("push-down on: %v queries pushed, want the one within the limit", pushed)
		}
		if fell := pushDownCount(t, p, "fallback"); fell != 0 {
			t.Errorf("push-down %v: %v queries fell back: a query refused for a limit must not be evaluated again", on, fell)
		}
	}
}

// vectorByLabel reads an instant vector answer as label value → sample.
func vectorByLabel(t *testing.T, body []byte, label string) map[string]float64 {
	t.Helper()
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	out := map[string]float64{}
	for _, r := range resp.Data.Result {
		v, err := strconv.ParseFloat(r.Value[1].(string), 64)
		if err != nil {
			t.Fatal(err)
		}
		out[r.Metric[label]] = v
	}
	return out
}
