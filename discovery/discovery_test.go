package discovery

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		err  string
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad balancing", func(c *Config) { c.LoadBalancing = "least-loaded" }, "load_balancing: "},
		{"bad partial", func(c *Config) { c.PartialResponse = "maybe" }, "partial_response: "},
		{"no refresh", func(c *Config) { c.RefreshInterval = 0 }, "refresh_interval: "},
		{"no health checks", func(c *Config) { c.HealthCheckInterval = 0 }, "health_check_interval: "},
		{"no threshold", func(c *Config) { c.UnhealthyThreshold = 0 }, "unhealthy_threshold: "},
		{"bad replica label", func(c *Config) { c.ReplicaLabels = []string{"a-b"} }, "replica_labels: "},
		{"no name", func(c *Config) { c.Static = []StaticGroup{{URLs: []string{"http://a:9090"}}} }, "name is required"},
		{"no urls", func(c *Config) { c.Static = []StaticGroup{{Name: "a"}} }, "at least one url"},
		{"bad url", func(c *Config) { c.Static = []StaticGroup{{Name: "a", URLs: []string{"a:9090"}}} }, "bad url"},
		{"duplicate", func(c *Config) {
			c.Static = []StaticGroup{{Name: "a", URLs: []string{"http://a"}}, {Name: "a", URLs: []string{"http://b"}}}
		}, "static[1]: duplicate"},
		{"kubernetes entry", func(c *Config) { c.Kubernetes = KubernetesClusters{{Name: "eu", Port: "0"}} }, "kubernetes[eu].port: "},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: Validate() = %v, want error containing %q", tc.name, err, tc.err)
		}
		if err != nil && strings.HasPrefix(err.Error(), "discovery") {
			t.Errorf("%s: %q names the section: the assembler adds it", tc.name, err)
		}
	}
}

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, at every level (a kubernetes entry starts from
// DefaultKubernetesConfig), and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	eu := DefaultKubernetesConfig()
	eu.Name, eu.Port = "eu", "web"
	us := DefaultKubernetesConfig()
	us.Name, us.Access = "us", AccessAPIServer
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "load_balancing: random\nreplica_labels: []\n", Want: func(c *Config) { c.LoadBalancing, c.ReplicaLabels = Random, []string{} }},
		{YAML: "kubernetes: {name: eu, port: web}\n", Want: func(c *Config) { c.Kubernetes = KubernetesClusters{eu} }},
		{YAML: "kubernetes:\n  - {name: eu, port: web}\n  - {name: us, access: apiserver}\n", Want: func(c *Config) { c.Kubernetes = KubernetesClusters{eu, us} }},
	})
}

func TestOrderRoundRobinAndHealth(t *testing.T) {
	g := StaticGroups([]StaticGroup{{Name: "g", URLs: []string{"http://a", "http://b", "http://c"}}})[0]
	first := map[string]int{}
	for range 6 {
		first[g.Order(RoundRobin)[0].URL]++
	}
	for _, u := range []string{"http://a", "http://b", "http://c"} {
		if first[u] != 2 {
			t.Errorf("round robin: %s first %d times of 6, want 2", u, first[u])
		}
	}
	b := g.Replicas[1]
	b.Observe(errors.New("down"), 0, 2, 2)
	if !b.Healthy() {
		t.Fatal("one failure must not mark a replica unhealthy (hysteresis)")
	}
	b.Observe(errors.New("down"), 0, 2, 2)
	if b.Healthy() {
		t.Fatal("two failures in a row must mark it unhealthy")
	}
	for range 6 {
		order := g.Order(RoundRobin)
		if order[len(order)-1] != b {
			t.Fatalf("unhealthy replica must come last, got %v first", order[0].URL)
		}
	}
	b.Observe(nil, 0, 2, 2)
	if b.Healthy() {
		t.Fatal("one success must not bring it back")
	}
	b.Observe(nil, 0, 2, 2)
	if !b.Healthy() {
		t.Fatal("two successes must bring it back")
	}
	if st := b.Status(); st.LastError != "" || st.LastCheck.IsZero() {
		t.Errorf("status after recovery: %+v", st)
	}
}

func TestGroupMatches(t *testing.T) {
	g := &Group{Name: "a", Labels: labels.FromStrings("cluster", "a")}
	for _, tc := range []struct {
		m    *labels.Matcher
		want bool
	}{
		{labels.MustNewMatcher(labels.MatchEqual, "cluster", "a"), true},
		{labels.MustNewMatcher(labels.MatchEqual, "cluster", "b"), false},
		{labels.MustNewMatcher(labels.MatchRegexp, "cluster", "a|b"), true},
		{labels.MustNewMatcher(labels.MatchNotEqual, "cluster", "a"), false},
		{labels.MustNewMatcher(labels.MatchEqual, "job", "x"), true},
	} {
		ok, reason := g.Matches([]*labels.Matcher{tc.m})
		if ok != tc.want || (!ok && reason == "") {
			t.Errorf("%s: Matches = %v (%q), want %v with a reason when false", tc.m, ok, reason, tc.want)
		}
	}
}

func TestManagerKeepsHealthAcrossUpdates(t *testing.T) {
	probeErr := errors.New("refused")
	probe := func(_ context.Context, _ *Group, r *Replica) (labels.Labels, error) {
		if r.URL == "http://bad" {
			return labels.EmptyLabels(), probeErr
		}
		return labels.EmptyLabels(), nil
	}
	m, err := NewManager(DefaultConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.set("test", StaticGroups([]StaticGroup{{Name: "g", URLs: []string{"http://good", "http://bad"}}}))
	m.CheckNow(context.Background(), probe)
	m.CheckNow(context.Background(), probe)
	m.set("test", StaticGroups([]StaticGroup{{Name: "g", URLs: []string{"http://good", "http://bad", "http://new"}}}))
	st := m.Status()
	if len(st) != 1 || len(st[0].Replicas) != 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, r := range st[0].Replicas {
		if want := r.URL != "http://bad"; r.Healthy != want {
			t.Errorf("%s healthy=%v, want %v", r.URL, r.Healthy, want)
		}
	}
}

func TestTopologyFollowsGroupsNotReplicas(t *testing.T) {
	m, err := NewManager(DefaultConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.set("test", StaticGroups([]StaticGroup{{Name: "a", URLs: []string{"http://a1"}}}))
	one := m.Topology()
	m.set("test", StaticGroups([]StaticGroup{{Name: "a", URLs: []string{"http://a1", "http://a2"}}}))
	if m.Topology() != one {
		t.Error("a new replica changed the topology; replicas hold the same data")
	}
	m.set("test", StaticGroups([]StaticGroup{{Name: "a", URLs: []string{"http://a1"}}, {Name: "b", URLs: []string{"http://b1"}}}))
	if m.Topology() == one {
		t.Error("a new group did not change the topology")
	}
	m.set("test", StaticGroups([]StaticGroup{{Name: "a", URLs: []string{"http://a1"}, Labels: map[string]string{"cluster": "x"}}}))
	if m.Topology() == one {
		t.Error("new group labels did not change the topology")
	}
}
