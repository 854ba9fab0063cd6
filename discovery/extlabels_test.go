package discovery

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// extGroup is a group whose replicas reported external labels, as after a
// health-check round.
func extGroup(t *testing.T, configured map[string]string, reported ...map[string]string) *Group {
	t.Helper()
	g := &Group{Name: "g", Labels: labels.FromMap(configured), replicaLabels: DefaultReplicaLabels}
	for i, ext := range reported {
		r := newReplica("http://r" + string(rune('0'+i)))
		r.setReportedLabels(labels.FromMap(ext))
		g.Replicas = append(g.Replicas, r)
	}
	g.refreshView()
	return g
}

func selector(t *testing.T, s string) []*labels.Matcher {
	t.Helper()
	ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// evalSets says whether a series with stored labels lset is selected by
// the backend's matcher sets (OR of ANDs), as the backend's TSDB would.
func evalSets(sets [][]*labels.Matcher, lset labels.Labels) bool {
	for _, set := range sets {
		ok := true
		for _, m := range set {
			if !m.Matches(lset.Get(m.Name)) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestRewriteMatchersIsExact checks every matcher type against what the
// answer would be: a series is selected by the rewritten sets on the
// backend (stored labels) iff the original matchers accept the series as
// the answer shows it (external labels applied, stored value winning).
func TestRewriteMatchersIsExact(t *testing.T) {
	g := extGroup(t, nil, map[string]string{"cluster": "eu", "prometheus": "mon/k8s", "prometheus_replica": "k8s-0"})
	stored := []labels.Labels{
		labels.FromStrings("__name__", "up", "job", "a"),
		labels.FromStrings("__name__", "up", "job", "a", "cluster", "eu"),
		labels.FromStrings("__name__", "up", "job", "b", "cluster", "us"),
		labels.FromStrings("__name__", "up", "job", "b", "cluster", "eu-2"),
		labels.FromStrings("__name__", "up", "job", "c", "prometheus_replica", "x"),
	}
	for _, sel := range []string{
		`up{cluster="eu"}`, `up{cluster="us"}`, `up{cluster=""}`,
		`up{cluster!="eu"}`, `up{cluster!="us"}`, `up{cluster!=""}`,
		`up{cluster=~"eu|us"}`, `up{cluster=~"e.*"}`, `up{cluster=~"us"}`, `up{cluster=~".*"}`, `up{cluster=~"eu|"}`,
		`up{cluster!~"us"}`, `up{cluster!~"eu"}`, `up{cluster!~"|us"}`, `up{cluster!~"e.*"}`, `up{cluster!~""}`,
		`{cluster="eu"}`, `{cluster!=""}`, `{cluster=~"eu", prometheus="mon/k8s"}`,
		`up{prometheus_replica="k8s-0"}`, `up{prometheus_replica=""}`, `up{prometheus_replica!~"k8s-.*"}`,
		`up{job="a", cluster!~"us|eu-2"}`,
	} {
		ms := selector(t, sel)
		sets, ok, reason := g.RewriteMatchers([][]*labels.Matcher{ms})
		for _, set := range sets {
			for _, m := range set {
				if m.Type == labels.MatchEqual && m.Name == "cluster" && m.Value != "" {
					t.Errorf("%s: sends %s, which the backend's remote read would turn into cluster=\"\"", sel, m)
				}
				if m.Name == "prometheus_replica" {
					t.Errorf("%s: sends a matcher on a replica label: %s", sel, m)
				}
			}
		}
		for _, s := range stored {
			shown := g.ApplyExternalLabels(s)
			want := true
			for _, m := range ms {
				want = want && m.Matches(shown.Get(m.Name))
			}
			// A group is skipped only when its own value contradicts the
			// matchers; series storing another value are then not seen.
			if !ok {
				if want && !s.Has("cluster") {
					t.Errorf("%s: group skipped (%s) but %s matches", sel, reason, shown)
				}
				continue
			}
			if got := evalSets(sets, s); got != want {
				t.Errorf("%s: stored %s (shown %s): backend selects %v, want %v (sets %v)", sel, s, shown, got, want, sets)
			}
		}
	}
}

func TestRewriteMatchersSkipsWithReason(t *testing.T) {
	g := extGroup(t, map[string]string{"team": "x"}, map[string]string{"cluster": "eu"})
	for sel, want := range map[string]string{
		`up{cluster="us"}`:                `group label cluster="eu" contradicts matcher cluster="us"`,
		`up{cluster!~"e.*"}`:              `contradicts matcher cluster!~"e.*"`,
		`up{cluster=""}`:                  `contradicts matcher cluster=""`,
		`up{team="y"}`:                    `group label team="x" contradicts`,
		`up{prometheus_replica=~"a|b"}`:   `replica label prometheus_replica is dropped from every answer`,
		`up{cluster="eu", team=~"x|y|z"}`: ``,
	} {
		_, ok, reason := g.RewriteMatchers([][]*labels.Matcher{selector(t, sel)})
		if want == "" {
			if !ok {
				t.Errorf("%s: skipped: %s", sel, reason)
			}
			continue
		}
		if ok || !strings.Contains(reason, want) {
			t.Errorf("%s: ok=%v reason %q, want it to say %q", sel, ok, reason, want)
		}
	}
	// Of several sets (tenant rules), only the contradicted ones go.
	sets, ok, _ := g.RewriteMatchers([][]*labels.Matcher{selector(t, `up{cluster="us"}`), selector(t, `up{job="a"}`)})
	if !ok || len(sets) != 1 {
		t.Errorf("sets %v ok=%v, want the second set alone", sets, ok)
	}
	if sets, ok, _ := g.RewriteMatchers(nil); !ok || sets != nil {
		t.Errorf("no matchers: %v %v, want nil and asked", sets, ok)
	}
}

func TestApplyExternalLabels(t *testing.T) {
	g := extGroup(t, map[string]string{"region": "west", "cluster": "configured", "__meta_kubernetes_namespace": "mon"},
		map[string]string{"cluster": "eu", "prometheus_replica": "k8s-0"},
		map[string]string{"cluster": "eu", "prometheus_replica": "k8s-1"})
	if got, want := g.ExternalLabels(), labels.FromStrings("cluster", "eu", "region", "west"); !labels.Equal(got, want) {
		t.Errorf("ExternalLabels() = %s, want %s (backend wins over configured, no replica or __ labels)", got, want)
	}
	if c := g.ExternalLabelsConflict(); !strings.Contains(c, "configured label cluster") {
		t.Errorf("conflict %q should name the configured label that differs", c)
	}
	for in, want := range map[string]string{
		`{__name__="up"}`: `{__name__="up", cluster="eu", region="west"}`,
		`{__name__="up", cluster="stored", prometheus_replica="k8s-1", replica="r"}`: `{__name__="up", cluster="stored", region="west"}`,
	} {
		got := g.ApplyExternalLabels(parseLabels(t, in))
		if !labels.Equal(got, parseLabels(t, want)) {
			t.Errorf("ApplyExternalLabels(%s) = %s, want %s", in, got, want)
		}
	}
}

func parseLabels(t *testing.T, s string) labels.Labels {
	t.Helper()
	ms := selector(t, s)
	b := labels.NewBuilder(labels.EmptyLabels())
	for _, m := range ms {
		b.Set(m.Name, m.Value)
	}
	return b.Labels()
}

func TestReplicasDisagreeingIsAConflict(t *testing.T) {
	g := extGroup(t, nil, map[string]string{"cluster": "eu", "prometheus_replica": "0"}, map[string]string{"cluster": "us", "prometheus_replica": "1"})
	if c := g.ExternalLabelsConflict(); !strings.Contains(c, `cluster="us"`) || !strings.Contains(c, `cluster="eu"`) {
		t.Errorf("conflict %q should show both label sets", c)
	}
	same := extGroup(t, nil, map[string]string{"cluster": "eu", "prometheus_replica": "0"}, map[string]string{"cluster": "eu", "prometheus_replica": "1"})
	if c := same.ExternalLabelsConflict(); c != "" {
		t.Errorf("replicas differing only in the replica label: conflict %q", c)
	}
}

func TestDisjointOn(t *testing.T) {
	a := extGroup(t, nil, map[string]string{"cluster": "a"})
	b := extGroup(t, map[string]string{"cluster": "b"})
	b.Name = "b"
	c := extGroup(t, nil, map[string]string{"cluster": "a"})
	c.Name = "c"
	if ok, why := DisjointOn([]*Group{a, b}, "cluster"); !ok {
		t.Errorf("a and b are disjoint on cluster: %s", why)
	}
	if ok, why := DisjointOn([]*Group{a, b, c}, "cluster"); ok || !strings.Contains(why, `share cluster="a"`) {
		t.Errorf("a and c share cluster=a: ok=%v %s", ok, why)
	}
	if ok, why := DisjointOn([]*Group{a, b}, "region"); ok || !strings.Contains(why, "no label region") {
		t.Errorf("no group has region: ok=%v %s", ok, why)
	}
}

// TestManagerReadsExternalLabels: a probe round records each replica's
// labels; the group's labels, its status and the topology follow.
func TestManagerReadsExternalLabels(t *testing.T) {
	reported := map[string]labels.Labels{
		"http://a0": labels.FromStrings("cluster", "a", "prometheus_replica", "0"),
		"http://a1": labels.FromStrings("cluster", "a", "prometheus_replica", "1"),
	}
	cfg := DefaultConfig()
	cfg.Static = []StaticGroup{{Name: "a", URLs: []string{"http://a0", "http://a1"}}}
	probe := func(_ context.Context, _ *Group, r *Replica) (labels.Labels, error) { return reported[r.URL], nil }
	m, err := NewManager(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	before := m.Topology()
	m.CheckNow(context.Background(), probe)
	st := m.Status()[0]
	if st.ExternalLabels["cluster"] != "a" || len(st.ExternalLabels) != 1 || st.Replicas[1].ExternalLabels["prometheus_replica"] != "1" {
		t.Errorf("status %+v", st)
	}
	if m.Topology() == before {
		t.Error("topology did not change with the group's labels")
	}
}

// The conflict message reaches logs and /debug/targets: replica URLs in it
// are redacted.
func TestConflictRedactsURLs(t *testing.T) {
	g := &Group{Name: "g", replicaLabels: DefaultReplicaLabels}
	for i, ext := range []map[string]string{{"cluster": "eu"}, {"cluster": "us"}} {
		r := newReplica("http://user:s3cret@r" + string(rune('0'+i)) + ":9090")
		r.setReportedLabels(labels.FromMap(ext))
		g.Replicas = append(g.Replicas, r)
	}
	g.refreshView()
	if c := g.ExternalLabelsConflict(); c == "" || strings.Contains(c, "s3cret") || !strings.Contains(c, "user:xxxxx@r0") {
		t.Errorf("conflict %q", c)
	}
}
