package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

func TestPlanCacheKey(t *testing.T) {
	groups := []*discovery.Group{{Name: "a", Labels: labels.FromStrings("cluster", "a")}, {Name: "b", Labels: labels.FromStrings("cluster", "b")}}
	pgs := planGroups(groups)
	tenantA := &tenancy.Policy{Namespace: "a", Fingerprint: "f-a"}
	tenantB := &tenancy.Policy{Namespace: "b", Fingerprint: "f-b"}
	key := func(q string, p *tenancy.Policy, pgs []plan.Group) planKey {
		t.Helper()
		k, ok := planCacheKey(q, p, groups, pgs)
		if !ok {
			t.Fatalf("%q under %v: not cacheable", q, p)
		}
		return k
	}
	base := key("sum(up)", tenantA, pgs)
	if key("sum(up)", tenantA, planGroups(groups)) != base {
		t.Error("the same query, rules and groups give another key")
	}
	moved := planGroups(groups)
	moved[1].Labels = labels.FromStrings("cluster", "a")
	for name, k := range map[string]planKey{
		"another query":         key("sum(up) ", tenantA, pgs),
		"other rules":           key("sum(up)", tenantB, pgs),
		"no rules (no tenancy)": key("sum(up)", nil, pgs),
		"other group labels":    key("sum(up)", tenantA, moved),
	} {
		if k == base {
			t.Errorf("%s: same key", name)
		}
	}
	if _, ok := planCacheKey("sum(up)", &tenancy.Policy{Namespace: "x"}, groups, pgs); ok {
		t.Error("a policy without a fingerprint is cacheable: two rule sets could share a plan")
	}
	if _, ok := planCacheKey(strings.Repeat(" ", planCacheMaxQuery)+"up", tenantA, groups, pgs); ok {
		t.Error("a query longer than planCacheMaxQuery is cacheable")
	}
}

func TestPlanCacheBounded(t *testing.T) {
	var c planCache
	for i := range 3 * planCacheEntries {
		q := "sum(up) + " + strings.Repeat("1", i%50) + string(rune('a'+i%26)) + strings.Repeat(" ", i/26)
		c.put(planKey{query: q}, &cachedPlan{plan: &plan.Plan{}, rewritten: q})
		if len(c.entries) > planCacheEntries || c.bytes > planCacheBytes {
			t.Fatalf("after %d puts: %d entries, %d bytes", i+1, len(c.entries), c.bytes)
		}
	}
	// Large entries are bounded by bytes before entries.
	big := strings.Repeat("x", planCacheBytes/32)
	for i := range 64 {
		c.put(planKey{query: big + string(rune('a'+i%26)) + strings.Repeat(" ", i/26)}, &cachedPlan{plan: &plan.Plan{}})
		if c.bytes > planCacheBytes {
			t.Fatalf("after %d large puts: %d bytes", i+1, c.bytes)
		}
	}
	sum := 0
	for _, e := range c.entries {
		sum += e.size
	}
	if sum != c.bytes {
		t.Errorf("bytes = %d, entries hold %d", c.bytes, sum)
	}
	k := planKey{query: "q"}
	cp := &cachedPlan{plan: &plan.Plan{}}
	c.put(k, cp)
	if c.get(k) != cp {
		t.Error("an entry just put is not found")
	}
}

// TestNotWorthSplitInProxy: a query whose every group's part the proxy
// evaluated over the group's data is evaluated in one pass while its split
// read too little to pay for the extra evaluations; where a backend
// evaluated a part, or the split read enough, it stays split. A range query
// pushed to backends that read very little in all is evaluated in the
// proxy too; an instant one is judged per point only.
func TestNotWorthSplitInProxy(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name               string
		cost               pushCost
		minSamplesPerPoint float64
		inProxy            bool
	}{
		{"small, every part by the proxy", pushCost{read: 100_000, points: 1_000, byProxy: 3}, 16, true},
		{"large, every part by the proxy", pushCost{read: 500_000, points: 1_000, byProxy: 3}, 16, false},
		{"small, a part by a backend", pushCost{read: 150_000, points: 1_000, byProxy: 2, byBackend: 1}, 16, false},
		{"small, every part by backends", pushCost{read: 150_000, points: 1_000, byBackend: 3}, 16, false},
		{"tiny range, pushed", pushCost{read: 35_000, points: 723, byBackend: 3}, 16, true},
		{"small range, pushed", pushCost{read: 68_256, points: 1_464, byBackend: 3}, 16, true},
		{"small, but min_samples_per_point: 0", pushCost{read: 100_000, points: 1_000, byProxy: 3}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := &cachedPlan{}
			cp.learn(false, tc.cost, now)
			why := cp.notWorth(false, tc.minSamplesPerPoint, now.Add(time.Second))
			if got := why != ""; got != tc.inProxy {
				t.Fatalf("notWorth = %q; want evaluated in one pass: %v", why, tc.inProxy)
			}
			if tc.inProxy && !strings.Contains(why, "fewer than 400000") && !strings.Contains(why, "fewer than 100000:") {
				t.Errorf("reason %q does not say what was read against what it must", why)
			}
			if cp.notWorth(true, tc.minSamplesPerPoint, now.Add(time.Second)) != "" {
				t.Error("a range query's cost decided for instant queries")
			}
			if why := cp.notWorth(false, tc.minSamplesPerPoint, now.Add(pushCostFor)); why != "" {
				t.Errorf("after %s: %q; want it split again", pushCostFor, why)
			}
		})
	}
}
