package engine

import (
	"strconv"
	"strings"
	"sync"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// planCache keeps the plans of recent queries. A plan is a function of the
// query text, the tenant's rules (their fingerprint) and the groups as the
// planner sees them (names, labels, replica labels), so a dashboard
// refreshing the same panels is planned once, not parsed and walked again
// on every refresh: for small queries the planner's parses were most of
// the proxy's own CPU. Plans in it are never changed (ExplainQuery plans
// afresh).
//
// It is bounded in entries and in bytes (query text and pushed text), and
// queries longer than planCacheMaxQuery are not kept, so a tenant sending
// unique large queries cannot grow it.
type planCache struct {
	mu      sync.Mutex
	entries map[planKey]*cachedPlan
	bytes   int
}

const (
	planCacheEntries  = 1024
	planCacheBytes    = 8 << 20
	planCacheMaxQuery = 8 << 10
)

type planKey struct{ query, rules, groups string }

type cachedPlan struct {
	plan      *plan.Plan
	rewritten string // plan.Expr.String()
	size      int
	// verdicts memoizes evaluatesAsProxy per backend version and group
	// query: a parse each, otherwise on every execution.
	verdicts sync.Map
}

type verdict struct {
	ok  bool
	why string
}

// evaluatesAsProxy is the package's evaluatesAsProxy, remembered.
func (cp *cachedPlan) evaluatesAsProxy(version, query string) (same bool, why string) {
	k := version + "\x00" + query
	if v, ok := cp.verdicts.Load(k); ok {
		return v.(verdict).ok, v.(verdict).why
	}
	same, why = evaluatesAsProxy(version, query)
	cp.verdicts.Store(k, verdict{same, why})
	return same, why
}

// key is the cache key of qs under policy over groups; ok is false when the
// plan must not be cached (no fingerprint to tell rule sets apart, or a
// query too long).
// groups and pgs are the same groups (pgs = planGroups(groups), one
// snapshot of their labels, the one the plan is made from).
func planCacheKey(qs string, policy *tenancy.Policy, groups []*discovery.Group, pgs []plan.Group) (planKey, bool) {
	if len(qs) > planCacheMaxQuery {
		return planKey{}, false
	}
	rules := ""
	if policy != nil {
		if policy.Fingerprint == "" {
			return planKey{}, false
		}
		rules = policy.Fingerprint
	}
	var b strings.Builder
	for i, g := range pgs {
		b.WriteString(strconv.Quote(g.Name))
		b.WriteString(g.Labels.String())
		for _, l := range groups[i].ReplicaLabels() {
			b.WriteString("~")
			b.WriteString(strconv.Quote(l))
		}
		b.WriteString(";")
	}
	return planKey{query: qs, rules: rules, groups: b.String()}, true
}

func (c *planCache) get(k planKey) *cachedPlan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[k]
}

func (c *planCache) put(k planKey, cp *cachedPlan) {
	cp.size = len(k.query) + len(k.groups) + len(cp.rewritten)
	for _, f := range cp.plan.Fragments {
		for _, gq := range f.Queries {
			cp.size += len(gq.Query)
		}
	}
	if cp.size > planCacheBytes/16 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[planKey]*cachedPlan{}
	}
	if old, ok := c.entries[k]; ok {
		c.bytes -= old.size
	}
	// Full: drop arbitrary entries (map order) until it fits.
	for ek, e := range c.entries {
		if len(c.entries) < planCacheEntries && c.bytes+cp.size <= planCacheBytes {
			break
		}
		delete(c.entries, ek)
		c.bytes -= e.size
	}
	c.entries[k] = cp
	c.bytes += cp.size
}
