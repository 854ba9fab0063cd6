package engine

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

func m(t labels.MatchType, n, v string) *labels.Matcher { return labels.MustNewMatcher(t, n, v) }

func TestMatcherSets(t *testing.T) {
	sel := []*labels.Matcher{m(labels.MatchEqual, "__name__", "up")}
	if got := MatcherSets(nil, sel); len(got) != 1 || len(got[0]) != 1 {
		t.Fatalf("open gateway: got %v, want the selector alone", got)
	}
	if got := MatcherSets(&tenancy.Policy{Admin: true}, sel); len(got) != 1 || len(got[0]) != 1 {
		t.Fatalf("admin: got %v, want the selector alone", got)
	}
	p := &tenancy.Policy{Rules: []tenancy.Rule{
		{Matchers: []*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchEqual, "namespace", "a")}},
		{Matchers: []*labels.Matcher{m(labels.MatchEqual, "__name__", "other"), m(labels.MatchEqual, "namespace", "a")}},
		{Matchers: []*labels.Matcher{m(labels.MatchRegexp, "__name__", "u.*"), m(labels.MatchEqual, "namespace", "a")}},
	}}
	got := MatcherSets(p, sel)
	if len(got) != 2 {
		t.Fatalf("got %d sets %v, want 2 (the rule for \"other\" pruned)", len(got), got)
	}
	for _, set := range got {
		if len(set) != 3 || set[0] != sel[0] {
			t.Errorf("set %v does not start with the selector and hold the rule", set)
		}
	}
	if got := MatcherSets(p, []*labels.Matcher{m(labels.MatchEqual, "__name__", "zzz")}); len(got) != 0 {
		t.Errorf("a selector no rule can match: got %v, want nothing to ask", got)
	}
	if got := MatcherSets(&tenancy.Policy{}, sel); len(got) != 0 {
		t.Errorf("policy without rules: got %v, want nothing", got)
	}
}
