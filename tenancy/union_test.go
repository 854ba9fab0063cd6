package tenancy

import (
	"testing"
)

// TestUnion: the union shows a series iff some part does, its fingerprint
// differs from each part's and does not depend on the order, and the same
// rules reached through different namespaces fingerprint alike.
func TestUnion(t *testing.T) {
	r := newTestRegistry(t, Config{AdminNamespaces: []string{"monitoring"}})
	r.Update("s", []*MetricAccess{
		newMA("team-a", "a", "team-a", nil, "up", "http_.*"),
		newMA("team-b", "b", "team-b", map[string]string{"cluster": "c1"}, "memory_usage_bytes"),
		newMA("team-c", "c", "team-c", nil, "node_load1"),
	})
	pol := func(ns string) *Policy {
		t.Helper()
		p, err := r.Policy(ns)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := pol("team-a"), pol("team-b")
	ab, ba := Union(a, b), Union(b, a)
	if ab.Namespace != "team-a,team-b" || len(ab.Namespaces) != 2 || ab.Admin {
		t.Fatalf("union: namespace %q, namespaces %v, admin %v", ab.Namespace, ab.Namespaces, ab.Admin)
	}
	if ab.Fingerprint != ba.Fingerprint {
		t.Errorf("the order changed the fingerprint: %s vs %s", ab.Fingerprint, ba.Fingerprint)
	}
	for _, part := range []*Policy{a, b, pol("team-c"), Union(a, pol("team-c"))} {
		if ab.Fingerprint == part.Fingerprint {
			t.Errorf("the union shares the fingerprint of %s", part.Namespace)
		}
	}
	if Union(a) != a {
		t.Error("a union of one is not that policy")
	}
	if Union(a, a).Fingerprint != a.Fingerprint {
		t.Error("a namespace named twice is not the namespace")
	}
	for _, c := range []struct {
		name string
		kv   []string
		want bool
	}{
		{"up", []string{"namespace", "team-a"}, true},
		{"http_requests_total", []string{"namespace", "team-a"}, true},
		{"memory_usage_bytes", []string{"namespace", "team-b", "cluster", "c1"}, true},
		{"memory_usage_bytes", []string{"namespace", "team-b", "cluster", "c2"}, false},
		{"memory_usage_bytes", []string{"namespace", "team-a"}, false},
		{"up", []string{"namespace", "team-b", "cluster", "c1"}, false},
		{"node_load1", []string{"namespace", "team-c"}, false},
	} {
		l := s(c.name, c.kv...)
		if got := ab.Matches(l); got != c.want {
			t.Errorf("%s: visible %v, want %v", l, got, c.want)
		}
		if ab.Matches(l) != (a.Matches(l) || b.Matches(l)) {
			t.Errorf("%s: the union differs from the OR of its parts", l)
		}
	}
	if u := Union(a, pol("monitoring")); !u.Admin || !u.Unrestricted() {
		t.Errorf("a union with an admin namespace: %+v, want admin", u)
	}
	if got := r.Namespaces(); len(got) != 3 || got[0] != "team-a" || got[2] != "team-c" {
		t.Errorf("Namespaces() = %v, want the three with rules (admin namespaces not counted)", got)
	}
}
