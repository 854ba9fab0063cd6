package engine

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
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
	// lastPushed is what the plan's last pushed evaluation cost, for range
	// queries [0] and instant queries [1]: the only change made to a
	// cached plan, and it does not change the plan.
	lastPushed [2]atomic.Pointer[learnedCost]
}

// pushCost is what a pushed evaluation cost the backends and the proxy:
// the samples the backends' engines read (their own statistics) and the
// points of the answers the proxy decoded.
type pushCost struct {
	read, points int64
	// untold: a backend did not say what it read.
	untold bool
	// byBackend and byProxy count the groups' parts their backends
	// evaluated and those the proxy evaluated over the group's data.
	byBackend, byProxy int
}

func (c pushCost) add(o pushCost) pushCost {
	return pushCost{read: c.read + o.read, points: c.points + o.points, untold: c.untold || o.untold,
		byBackend: c.byBackend + o.byBackend, byProxy: c.byProxy + o.byProxy}
}

// minSamplesPushedRange is what a pushed range query must have the
// backends read, in all, to be worth pushing whatever its samples per
// point: a pushed query carries fixed costs of its own (the folded probes,
// its answer in JSON, a second evaluation in the proxy, each backend's
// cost per query) that a small read does not outweigh. On a small
// three-group set (3.16, 15 s steps), aggregations by cluster or job over
// one series a target, reading about 35,000 samples for 48 per point, were
// 7-15% slower pushed; over eight runs of the bench's small set, the
// panels reading 68,000 were no faster pushed (q06, two sums folded into
// one query, 8% slower on average and slower in every run), those reading
// 205,000 5-25% faster. Pushed, such a panel costs more CPU in all: q06
// 12.9 ms a query (backends 9.4, proxy 3.4) against 10.2 ms evaluated in
// the proxy (4.6 and 5.6), q02 9.6 against 7.9 ms. An instant query's samples undercount what remote read
// would bring (whole chunks for one point), so it is judged per point only.
const minSamplesPushedRange = 100_000

// minSamplesSplitInProxy is what a query whose every part the proxy
// evaluates over each group's data must read, in all, to be worth split:
// per group, an evaluation of its own, a read of its own and a conversion
// of its answer, then one more evaluation to combine them, against one
// evaluation over every group's data. The split wins by running the groups
// side by side, which pays once the evaluation itself is several
// milliseconds of work: on a small three-group set of 2.42 backends (2
// cores shared with them), panels reading 400,000 samples or more were
// 15-25% faster split, those reading 300,000 or fewer no faster or slower.
const minSamplesSplitInProxy = 400_000

// answerCost is the cost of one backend's answer.
func answerCost(a *remote.QueryAnswer) pushCost {
	c := pushCost{read: a.SamplesRead, untold: a.SamplesRead < 0}
	for _, s := range a.Series {
		c.points += int64(len(s.T))
	}
	return c
}

type learnedCost struct {
	pushCost
	at time.Time
}

// pushCostFor is how long a learned cost decides: after it, the query is
// pushed again and its cost learned anew, so a change in the data (or in
// the time range a dashboard asks) is noticed.
const pushCostFor = 5 * time.Minute

func costSlot(instant bool) int {
	if instant {
		return 1
	}
	return 0
}

// learn keeps what a pushed evaluation cost.
func (cp *cachedPlan) learn(instant bool, c pushCost, now time.Time) {
	if c.untold {
		cp.lastPushed[costSlot(instant)].Store(nil)
		return
	}
	cp.lastPushed[costSlot(instant)].Store(&learnedCost{pushCost: c, at: now})
}

// notWorth says why the plan is better evaluated in the proxy, or "": the
// last time it was pushed (within pushCostFor), the backends read fewer
// than minSamplesPerPoint samples per point of their answers. A pushed
// point costs an evaluation step on the backend, its text in JSON and its
// decoding in the proxy; a sample read through remote read costs a few
// bytes of a compressed chunk. Where the answer is about as large as what
// it is computed from (a topk at a step finer than the scrape interval, an
// aggregation over few series), pushing only adds work.
func (cp *cachedPlan) notWorth(instant bool, minSamplesPerPoint float64, now time.Time) string {
	if minSamplesPerPoint <= 0 {
		return ""
	}
	l := cp.lastPushed[costSlot(instant)].Load()
	if l == nil || now.Sub(l.at) >= pushCostFor || l.points == 0 {
		return ""
	}
	if float64(l.read) >= minSamplesPerPoint*float64(l.points) {
		switch {
		case l.byBackend == 0 && l.byProxy > 0 && l.read < minSamplesSplitInProxy:
			return fmt.Sprintf("evaluated in the proxy: %s ago no group's backend could evaluate its part (see the groups' reasons), so the proxy evaluated each over the group's data, reading %d samples in all, fewer than %d: one evaluation over every group's data costs less than one per group and their combination; split again after %s",
				now.Sub(l.at).Round(time.Second), l.read, minSamplesSplitInProxy, pushCostFor)
		case !instant && l.byBackend > 0 && l.read < minSamplesPushedRange:
			return fmt.Sprintf("evaluated in the proxy: pushed %s ago, the backends read %d samples in all, fewer than %d: a range query this small costs less read by remote read than pushed (probes, answers in JSON, a second evaluation); pushed again after %s",
				now.Sub(l.at).Round(time.Second), l.read, minSamplesPushedRange, pushCostFor)
		}
		return ""
	}
	return fmt.Sprintf("evaluated in the proxy: pushed %s ago, the backends read %d samples for answers of %d points, fewer than %g per point (engine.push_down.min_samples_per_point): the series cost less to read than the answers; pushed again after %s",
		now.Sub(l.at).Round(time.Second), l.read, l.points, minSamplesPerPoint, pushCostFor)
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
