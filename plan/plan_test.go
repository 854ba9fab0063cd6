package plan

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

var testParser = parser.NewParser(parser.Options{EnableExperimentalFunctions: true})

func groups(kv ...string) []Group {
	var out []Group
	for i := 0; i < len(kv); i += 2 {
		out = append(out, Group{Name: "g-" + kv[i+1], Labels: labels.FromStrings(kv[i], kv[i+1]), LabelsAdded: true})
	}
	return out
}

func planOf(t *testing.T, q string, gs []Group, p *tenancy.Policy) *Plan {
	t.Helper()
	e, err := testParser.ParseExpr(q)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Enabled: true}, testParser).Plan(e, gs, p)
}

func TestPlans(t *testing.T) {
	gs := groups("cluster", "a", "cluster", "b", "cluster", "c")
	for _, tc := range []struct{ q, want string }{
		// Whole queries whose answer keeps the disjointness label.
		{`rate(x[5m])`, `rate(x[5m])`}, // no aggregation: nothing to gain
		{`sum by (cluster, job) (rate(x[5m]))`, `remote(sum by (cluster, job) (rate(x[5m])))`},
		{`sum without (job) (rate(x[5m]))`, `remote(sum without (job) (rate(x[5m])))`},
		{`histogram_quantile(0.9, sum by (le, cluster) (rate(x_bucket[5m])))`, `remote(histogram_quantile(0.9, sum by (le, cluster) (rate(x_bucket[5m]))))`},
		{`max by (cluster) (x / on (cluster, instance) y)`, `remote(max by (cluster) (x / on (cluster, instance) y))`},
		{`count by (cluster) (x / y)`, `remote(count by (cluster) (x / y))`},
		{`max by (cluster) (max_over_time(rate(x[5m])[30m:1m]))`, `remote(max by (cluster) (max_over_time(rate(x[5m])[30m:1m])))`},
		// Within a group too, ties decide by input order: always ranked.
		{`topk by (cluster) (3, x)`, `topk by (cluster) (3, remote(topk by (cluster) (4, x)))`},
		{`max by (cluster) (topk by (cluster) (3, x))`, `max by (cluster) (topk by (cluster) (3, remote(topk by (cluster) (4, x))))`},
		{`limitk(2, max by (cluster) (x))`, `limitk(2, max by (cluster) (x))`},
		{`max by (cluster) (limit_ratio(0.5, x))`, `max by (cluster) (limit_ratio(0.5, x))`},
		{`max by (job) (x or max without (env) (y))`, `max by (job) (remote(max by (job) (x or max without (env) (y))))`},
		// Exact distributive aggregations combine the groups' answers.
		{`max by (job) (rate(x[5m]))`, `max by (job) (remote(max by (job) (rate(x[5m]))))`},
		{`count(x)`, `sum(remote(count(x)))`},
		{`group without (cluster) (x)`, `group without (cluster, __pushdown_group__) (remote(group without (cluster) (x)))`},
		{`min(rate(x[5m])) > 0`, `min(remote(min(rate(x[5m])))) > 0`},
		// Not exact across groups: the proxy evaluates, pushing what it can below.
		{`sum by (job) (rate(x[5m]))`, `sum by (job) (rate(x[5m]))`},
		{`sum by (job) (sum by (cluster, job) (x))`, `sum by (job) (remote(sum by (cluster, job) (x)))`},
		{`topk(3, x)`, `topk(3, remote(topk(4, x)))`}, // used only where no tie decides
		{`bottomk by (job) (2, rate(x[5m]))`, `bottomk by (job) (2, remote(bottomk by (job) (3, rate(x[5m]))))`},
		{`topk((3), x)`, `topk((3), remote(topk(4, x)))`},
		{`topk(scalar(y), x)`, `topk(scalar(y), x)`},
		{`topk(2.5, x)`, `topk(2.5, x)`},
		{`limitk(3, x)`, `limitk(3, x)`},
		{`topk(3, sum by (job) (x))`, `topk(3, sum by (job) (x))`},
		{`count(x / on (instance) y)`, `count(x / on (instance) y)`},
		{`sort_desc(count by (cluster) (x))`, `sort_desc(remote(count by (cluster) (x)))`},
		{`absent(count by (cluster) (x))`, `absent(count by (cluster) (x))`},
		{`x * scalar(y)`, `x * scalar(y)`},
		{`count(label_replace(x, "cluster", "$1", "job", "(.*)"))`, `count(label_replace(x, "cluster", "$1", "job", "(.*)"))`},
		{`label_replace(count by (cluster) (x), "a", "$1", "cluster", "(.*)")`, `label_replace(remote(count by (cluster) (x)), "a", "$1", "cluster", "(.*)")`}, // in the proxy, over the answer with cluster added
		{`x`, `x`},
		{`x[5m]`, `x[5m]`},
		{`vector(1)`, `vector(1)`},
	} {
		t.Run(tc.q, func(t *testing.T) {
			p := planOf(t, tc.q, gs, nil)
			if got := p.String(); got != tc.want {
				t.Errorf("plan %s\nwant %s\n%s", got, tc.want, p.Explain())
			}
		})
	}
}

// A series may be in two groups when no label tells the groups apart: then
// nothing is pushed, and the reason says why.
func TestNotDisjointRefused(t *testing.T) {
	for name, gs := range map[string][]Group{
		"shared value": groups("cluster", "a", "cluster", "a", "cluster", "b"),
		"missing label": {
			{Name: "g1", Labels: labels.FromStrings("cluster", "a")},
			{Name: "g2", Labels: labels.EmptyLabels()},
		},
		"one group": groups("cluster", "a"),
	} {
		t.Run(name, func(t *testing.T) {
			p := planOf(t, `max by (job) (rate(x[5m]))`, gs, nil)
			if p.Pushed() || p.String() != `max by (job) (rate(x[5m]))` {
				t.Fatalf("pushed over groups that are not disjoint: %s", p)
			}
			if len(p.Decisions) == 0 || p.Decisions[0].Reason == "" {
				t.Fatalf("no reason given: %+v", p.Decisions)
			}
		})
	}
	p := New(Config{Enabled: true, Label: "region"}, testParser).Plan(mustParse(t, `max(rate(x[5m]))`), groups("cluster", "a", "cluster", "b"), nil)
	if p.Pushed() || !strings.Contains(p.Explain(), `no label "region"`) {
		t.Fatalf("the configured label is missing, yet: %s", p.Explain())
	}
}

func mustParse(t *testing.T, q string) parser.Expr {
	t.Helper()
	e, err := testParser.ParseExpr(q)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func rule(t *testing.T, sel string) tenancy.Rule {
	t.Helper()
	ms, err := testParser.ParseMetricSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return tenancy.Rule{Matchers: ms, Origin: sel}
}

// Every pushed selector carries the tenant's rule; matchers on group labels
// are decided per group and sent in the form remote read uses.
func TestTenantRulesInEverySelector(t *testing.T) {
	gs := groups("cluster", "a", "cluster", "b")
	q := func(p *Plan, group string) GroupQuery {
		for _, gq := range p.Fragments[0].Queries {
			if gq.Group.Name == group {
				return gq
			}
		}
		t.Fatalf("no query for %s", group)
		return GroupQuery{}
	}
	t.Run("one rule", func(t *testing.T) {
		p := planOf(t, `count(x / on (cluster, i) y)`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{namespace="team-a"}`)}})
		if got := q(p, "g-a").Query; got != `count(x{namespace="team-a"} / on (cluster, i) y{namespace="team-a"})` {
			t.Errorf("query %s", got)
		}
	})
	t.Run("rule naming a group label", func(t *testing.T) {
		p := planOf(t, `max(rate(x[5m]))`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{cluster="a", namespace="n"}`)}})
		// Kept in the form remote read uses: a series of group a storing
		// cluster="b" is b's to the proxy, and not the tenant's.
		if got := q(p, "g-a").Query; got != `max(rate(x{cluster=~"a|",namespace="n"}[5m]))` {
			t.Errorf("query for the admitted group %s", got)
		}
		if got := q(p, "g-b"); got.Skipped == "" {
			t.Errorf("group b asked although the rule excludes it: %s", got.Query)
		}
	})
	t.Run("several rules, one fits each selector", func(t *testing.T) {
		p := planOf(t, `max(x / y)`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `x`), rule(t, `{__name__="y", job="j"}`)}})
		if got := q(p, "g-a").Query; got != `max(x{__name__="x"} / y{__name__="y",job="j"})` && got != `max(x / y{job="j"})` {
			t.Errorf("query %s", got)
		}
	})
	t.Run("rule on the metric name of a named selector", func(t *testing.T) {
		p := planOf(t, `max(rate(x[5m]))`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{__name__=~"x|x_sum"}`)}})
		if got := q(p, "g-a").Query; got != `max(rate({__name__="x",__name__=~"x|x_sum"}[5m]))` {
			t.Errorf("query %s\n%s", got, p.Explain())
		}
	})
	t.Run("several rules fit one selector: refused", func(t *testing.T) {
		p := planOf(t, `max(rate({__name__=~"x|y"}[5m]))`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `x`), rule(t, `y`)}})
		if p.Pushed() {
			t.Fatalf("pushed: %s", p.Explain())
		}
		if !strings.Contains(p.Explain(), "tenant rules apply") {
			t.Errorf("reason missing: %s", p.Explain())
		}
	})
	t.Run("several rules fit a selector of one metric: their or", func(t *testing.T) {
		two := &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{job="api", namespace="n"}`), rule(t, `up{job=~"api|worker", namespace="n"}`)}}
		for query, want := range map[string]string{
			`max by (job) (up)`: `max by (job) ((up{job="api",namespace="n"} or up{job=~"api|worker",namespace="n"}))`,
			`max(rate(up[5m]))`: `max((rate(up{job="api",namespace="n"}[5m]) or rate(up{job=~"api|worker",namespace="n"}[5m])))`,
			`max(quantile_over_time(0.9, up[5m] offset 1m))`: `max((quantile_over_time(0.9, up{job="api",namespace="n"}[5m] offset 1m) or quantile_over_time(0.9, up{job=~"api|worker",namespace="n"}[5m] offset 1m)))`,
			`max(max_over_time(up[30m:1m]))`:                 `max(max_over_time((up{job="api",namespace="n"} or up{job=~"api|worker",namespace="n"})[30m:1m]))`,
			`count(up{instance="i"} / on (cluster, job) x)`:  `count((up{instance="i",job="api",namespace="n"} or up{instance="i",job=~"api|worker",namespace="n"}) / on (cluster, job) x{job="api",namespace="n"})`,
		} {
			p := planOf(t, query, gs, two)
			if !p.Pushed() {
				t.Errorf("%s not pushed: %s", query, p.Explain())
				continue
			}
			if got := q(p, "g-a").Query; got != want {
				t.Errorf("%s: query %s\nwant %s", query, got, want)
			}
		}
		// Not one metric, or a range function across series: refused.
		for _, query := range []string{`max({job="api"})`, `max(double_exponential_smoothing(up[5m], 0.5, 0.5))`, `max(absent_over_time(up[5m]))`, `max(timestamp(up))`} {
			if p := planOf(t, query, gs, two); p.Pushed() {
				t.Errorf("%s pushed: %s", query, p.Explain())
			} else if !strings.Contains(p.Explain(), "tenant rules apply") && !strings.Contains(p.Explain(), "absent") {
				t.Errorf("%s: reason missing: %s", query, p.Explain())
			}
		}
	})
	t.Run("no rule fits a selector: it selects nothing", func(t *testing.T) {
		p := planOf(t, `count(x or y)`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `x`)}})
		got := q(p, "g-a").Query
		if !strings.Contains(got, `__name__=""`) {
			t.Errorf("query %s", got)
		}
	})
	t.Run("query matcher on group label", func(t *testing.T) {
		p := planOf(t, `max(rate(x{cluster=~"a|b"}[5m]))`, gs, nil)
		if got := q(p, "g-b").Query; got != `max(rate(x{cluster=~"(?:a|b)|"}[5m]))` {
			t.Errorf("query %s", got)
		}
		p = planOf(t, `max(rate(x{cluster="a"}[5m]))`, gs, nil)
		if p.Pushed() {
			t.Errorf("pushed a selector that is empty in a group: %s", p.Explain())
		}
	})
}

func TestCheckEnforcedCatchesMissingRule(t *testing.T) {
	pl := New(Config{Enabled: true}, testParser)
	r := rule(t, `{namespace="a"}`).Matchers
	if err := pl.checkEnforced(`rate(x{namespace="a"}[5m]) / y`, [][]*labels.Matcher{r}); err == nil {
		t.Fatal("a selector without the rule passed the check")
	}
	if err := pl.checkEnforced(`rate(x{namespace="a"}[5m]) / y{namespace="a"}`, [][]*labels.Matcher{r}); err != nil {
		t.Fatal(err)
	}
}

func TestKeeps(t *testing.T) {
	for q, want := range map[string]string{
		`rate(x[5m])`:                        "cluster,region",
		`sum by (cluster) (x)`:               "cluster",
		`x / on (cluster, i) group_left y`:   "cluster,region", // many-to-one keeps the many side whole
		`x / on (cluster, i) y`:              "cluster",
		`sum without (region) (rate(x[5m]))`: "cluster",
		`x or y`:                             "cluster,region",
		`count_values("v", x)`:               "",
		`topk by (cluster) (3, x)`:           "cluster,region", // picks input series whole
		`bottomk without (region) (3, x)`:    "cluster,region",
	} {
		w := &walker{allLabels: []string{"cluster", "region"}}
		if got := strings.Join(w.keeps(mustParse(t, q)), ","); got != want {
			t.Errorf("%s keeps %q, want %q", q, got, want)
		}
	}
	// The proxy adds region where a series lacks it: which series store
	// their own, only the backends know, so such an answer is not pushed.
	gs := []Group{
		{Name: "a", Labels: labels.FromStrings("cluster", "a", "region", "eu"), LabelsAdded: true},
		{Name: "b", Labels: labels.FromStrings("cluster", "b", "region", "eu"), LabelsAdded: true},
	}
	if p := planOf(t, `max by (cluster, region) (x)`, gs, nil); p.Pushed() {
		t.Errorf("pushed although it keeps an added group label: %s", p.Explain())
	}
	if p := planOf(t, `topk by (cluster) (3, x)`, gs, nil); p.Pushed() {
		t.Errorf("pushed although topk keeps the added group label region: %s", p.Explain())
	}
	if p := planOf(t, `max by (cluster) (x)`, gs, nil); !p.Pushed() || strings.Join(p.Fragments[0].Keep, ",") != "cluster" {
		t.Errorf("not pushed keeping cluster: %s", p.Explain())
	}
}

// With labels stored on the series, matchers on them are the backends' to
// evaluate, and the probe asks each group for series that would break the
// disjointness the labels claim.
func TestStoredLabelsProbe(t *testing.T) {
	gs := []Group{{Name: "a", Labels: labels.FromStrings("cluster", "a")}, {Name: "b", Labels: labels.FromStrings("cluster", "b")}}
	p := planOf(t, `count(rate(x{cluster=~"a|b"}[5m]) / on (cluster, i) y)`, gs, nil)
	if !p.Pushed() {
		t.Fatal(p.Explain())
	}
	gq := p.Fragments[0].Queries[0]
	if gq.Query != `count(rate(x{cluster=~"a|b"}[5m]) / on (cluster, i) y)` {
		t.Errorf("query %s", gq.Query)
	}
	var probes []string
	for _, set := range gq.Probe {
		var ms []string
		for _, m := range set {
			ms = append(ms, m.String())
		}
		probes = append(probes, strings.Join(ms, ","))
	}
	want := `cluster=~"a|b",__name__="x",cluster!="a"` + "|" + `__name__="y",cluster!="a"`
	if got := strings.Join(probes, "|"); got != want {
		t.Errorf("probe %s\nwant  %s", got, want)
	}
}

func TestReplicaLabelRefused(t *testing.T) {
	gs := groups("cluster", "a", "cluster", "b")
	for i := range gs {
		gs[i].IsReplicaLabel = func(n string) bool { return n == "prometheus_replica" }
	}
	for _, q := range []string{`count by (prometheus_replica) (x)`, `max(x{prometheus_replica="r0"})`} {
		if p := planOf(t, q, gs, nil); p.Pushed() || !strings.Contains(p.Explain(), "replica label") {
			t.Errorf("%s: %s", q, p.Explain())
		}
	}
}

func planWith(t *testing.T, cfg Config, q string, gs []Group, p *tenancy.Policy) *Plan {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(cfg, testParser).Plan(mustParse(t, q), gs, p)
}

// With float_sums: reassociate, sum and avg are combined across groups;
// without it they stay in the proxy, saying which key would push them.
func TestPlansReassociate(t *testing.T) {
	gs := groups("cluster", "a", "cluster", "b", "cluster", "c")
	on := Config{Enabled: true, FloatSums: FloatSumsReassociate}
	// weighted is the combination of avg: the groups' means weighted by
	// their counts.
	weighted := func(grouping, outer, inner string) string {
		agg := func(op, g string) string {
			if g == "" {
				return op + "("
			}
			return op + " " + g + " ("
		}
		mean, count := "remote("+agg("avg", grouping)+inner+"))", "remote("+agg("count", grouping)+inner+"))"
		return agg("sum", outer) + mean + " * ignoring (__pushdown_part__) (" + count + " / ignoring (__pushdown_group__, __pushdown_part__) group_left () sum without (__pushdown_group__, __pushdown_part__) (" + count + ")))"
	}
	for _, tc := range []struct{ q, want string }{
		{`sum by (job) (rate(x[5m]))`, `sum by (job) (remote(sum by (job) (rate(x[5m]))))`},
		{`sum(increase(x[1h]))`, `sum(remote(sum(increase(x[1h]))))`},
		{`sum without (cluster, instance) (x)`, `sum without (cluster, instance, __pushdown_group__) (remote(sum without (cluster, instance) (x)))`},
		{`histogram_quantile(0.9, sum by (le, job) (rate(x_bucket[5m])))`, `histogram_quantile(0.9, sum by (le, job) (remote(sum by (le, job) (rate(x_bucket[5m])))))`},
		{`topk(5, sum by (instance) (rate(x[5m])))`, `topk(5, sum by (instance) (remote(sum by (instance) (rate(x[5m])))))`},
		{`sum by (job) (sum by (cluster, job) (x))`, `sum by (job) (remote(sum by (job) (sum by (cluster, job) (x))))`},
		{`sum(rate(x{code=~"5.."}[5m])) / sum(rate(x[5m]))`, `sum(remote(sum(rate(x{code=~"5.."}[5m])))) / sum(remote(sum(rate(x[5m]))))`},
		{`avg by (job) (rate(x[5m]))`, weighted("by (job)", "by (job)", "rate(x[5m])")},
		{`1 - avg(x)`, "1 - " + weighted("", "", "x")},
		{`avg without (cluster, instance) (x)`, weighted("without (cluster, instance)", "without (cluster, instance, __pushdown_group__, __pushdown_part__)", "x")},
		// Still exact as before: whole queries keeping the label, min/max/count/group.
		{`sum by (cluster, job) (rate(x[5m]))`, `remote(sum by (cluster, job) (rate(x[5m])))`},
		{`count(x)`, `sum(remote(count(x)))`},
		// Never combined: order-dependent or needing every input.
		{`limitk(3, x)`, `limitk(3, x)`},
		{`stddev(x)`, `stddev(x)`},
		{`quantile(0.5, x)`, `quantile(0.5, x)`},
		{`sum(x / on (instance) y)`, `sum(x / on (instance) y)`},
	} {
		t.Run(tc.q, func(t *testing.T) {
			p := planWith(t, on, tc.q, gs, nil)
			if got := p.String(); got != tc.want {
				t.Errorf("plan %s\nwant %s\n%s", got, tc.want, p.Explain())
			}
			// The rewritten query is evaluated from its text: it must parse.
			if _, err := testParser.ParseExpr(p.Expr.String()); err != nil {
				t.Errorf("rewritten query %s: %v", p.Expr, err)
			}
		})
	}
	t.Run("explain says why", func(t *testing.T) {
		ex := planWith(t, on, `avg by (job) (x) + sum(x)`, gs, nil).Explain()
		for _, want := range []string{"pushed: avg by (job) (x): avg re-associated (engine.push_down.float_sums: reassociate)", "pushed: sum(x): sum re-associated", "within float rounding"} {
			if !strings.Contains(ex, want) {
				t.Errorf("explain lacks %q:\n%s", want, ex)
			}
		}
		ex = planWith(t, Config{Enabled: true}, `sum by (job) (x)`, gs, nil).Explain()
		if !strings.Contains(ex, "kept in proxy: sum by (job) (x): sum is combined across groups only with engine.push_down.float_sums: reassociate") {
			t.Errorf("explain with the opt-in off does not name it:\n%s", ex)
		}
	})
	t.Run("off is unchanged", func(t *testing.T) {
		for _, q := range []string{`sum by (job) (rate(x[5m]))`, `avg(x)`, `histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))`} {
			if p := planWith(t, Config{Enabled: true, FloatSums: FloatSumsExact}, q, gs, nil); p.Pushed() {
				t.Errorf("%s pushed with float_sums: exact: %s", q, p)
			}
		}
	})
	t.Run("avg: one query per group, tenant rules in both parts", func(t *testing.T) {
		p := planWith(t, on, `avg by (job) (x)`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{namespace="team-a"}`)}})
		if len(p.Fragments) != 1 {
			t.Fatalf("want 1 fragment: %s", p.Explain())
		}
		want := `label_replace(avg by (job) (x{namespace="team-a"}), "__pushdown_part__", "mean", "", "") or label_replace(count by (job) (x{namespace="team-a"}), "__pushdown_part__", "count", "", "")`
		for _, gq := range p.Fragments[0].Queries {
			if gq.Query != want {
				t.Errorf("group %s: %s\nwant %s", gq.Group.Name, gq.Query, want)
			}
		}
	})
	t.Run("avg not half pushed", func(t *testing.T) {
		// A selector empty in one group cannot be pushed; neither avg
		// fragment may stay behind in the plan.
		p := planWith(t, on, `avg(x{cluster="a"})`, gs, nil)
		if p.Pushed() {
			t.Errorf("pushed: %s", p.Explain())
		}
	})
	if err := (&Config{FloatSums: "fast"}).Validate(); err == nil || !strings.Contains(err.Error(), "float_sums") {
		t.Errorf("unknown float_sums accepted: %v", err)
	}
}

func TestRankedDecided(t *testing.T) {
	top := &Ranked{K: 2}
	bottom := &Ranked{K: 2, Bottom: true}
	for _, tc := range []struct {
		r    *Ranked
		vals []float64
		want bool
	}{
		{top, []float64{1, 2}, true},        // at most k: every series wins
		{top, []float64{3, 2, 1}, true},     // 3, 2 win; 1 does not
		{top, []float64{3, 2, 2}, false},    // which 2 wins is the storage's order
		{top, []float64{2, 2, 1}, true},     // both 2s win: the tie does not decide
		{bottom, []float64{1, 1, 2}, true},  // both 1s win
		{bottom, []float64{1, 2, 2}, false}, // which 2
		{top, []float64{3, 2, math.NaN()}, false},
	} {
		if got := tc.r.Decided(tc.vals); got != tc.want {
			t.Errorf("bottom=%v %v: decided %v, want %v", tc.r.Bottom, tc.vals, got, tc.want)
		}
	}
	r := &Ranked{K: 1, Grouping: []string{"job"}}
	a, b := labels.FromStrings("__name__", "x", "job", "a", "i", "1"), labels.FromStrings("__name__", "y", "job", "a", "i", "2")
	if r.Key(a) != r.Key(b) {
		t.Error("by (job): series of one job in different output groups")
	}
	r = &Ranked{K: 1, Grouping: []string{"i"}, Without: true}
	if r.Key(a) != r.Key(b) {
		t.Error("without (i): the metric name kept in the output group")
	}
}

// A rule matcher on a label the proxy adds to a group (an external or
// configured label) is never dropped from a pushed query: a series storing
// its own value of that label (federation, honor_labels, remote write) is
// judged by it, as the proxy shows it. One case per way a rule comes to
// name such a label, and per matcher type.
func TestRuleOnGroupLabelKeptForStoredValues(t *testing.T) {
	gs := []Group{
		{Name: "c1", Labels: labels.FromStrings("cluster", "c1", "env", "prod"), LabelsAdded: true},
		{Name: "c2", Labels: labels.FromStrings("cluster", "c2", "env", "prod"), LabelsAdded: true},
	}
	for _, tc := range []struct {
		name, rule string
		want       string // the query sent to c1, "" when c1 is not asked
		skipC2     bool
	}{
		// spec.labelSelectors {env: prod}: rule ANDed with env="prod".
		{"labelSelectors", `{__name__="m", env="prod", namespace="team-a"}`, `sum by (cluster) (m{env=~"prod|",namespace="team-a"})`, false},
		// tenants.namespace_label: cluster, spec.source c1.
		{"namespace_label on a group label", `{__name__="m", cluster="c1"}`, `sum by (cluster) (m{cluster=~"c1|"})`, true},
		{"regexp", `{__name__="m", env=~"prod|qa"}`, `sum by (cluster) (m{env=~"(?:prod|qa)|"})`, false},
		// Accepts "": the backend evaluates it as it is.
		{"not equal", `{__name__="m", env!="staging"}`, `sum by (cluster) (m{env!="staging"})`, false},
		{"not regexp", `{__name__="m", env!~"stag.*"}`, `sum by (cluster) (m{env!~"stag.*"})`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planOf(t, `sum by (cluster) (m)`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, tc.rule)}})
			if !p.Pushed() {
				t.Fatalf("not pushed: %s", p.Explain())
			}
			for _, gq := range p.Fragments[0].Queries {
				switch {
				case gq.Group.Name == "c1" && gq.Query != tc.want:
					t.Errorf("query for c1 %s\nwant          %s", gq.Query, tc.want)
				case gq.Group.Name == "c2" && tc.skipC2 != (gq.Skipped != ""):
					t.Errorf("c2: query %q, skipped %q", gq.Query, gq.Skipped)
				}
			}
		})
	}
	// !~ with a regex accepting "": "lacks the label or stores a value it
	// refuses" is no one matcher, so the group is refused, not unfiltered.
	p := planOf(t, `sum by (cluster) (m)`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{__name__="m", env!~"|staging"}`)}})
	if p.Pushed() || !strings.Contains(p.Explain(), "no one selector") {
		t.Errorf("pushed or no reason: %s", p.Explain())
	}
}

// Where a fragment's answer keeps every label the rules name, the answer
// is re-checked against the policy; where an aggregation removes one, the
// rules in every pushed selector are what filters.
func TestRecheckable(t *testing.T) {
	ns := &tenancy.Policy{Rules: []tenancy.Rule{{Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "namespace", "a")}}}}
	named := &tenancy.Policy{Rules: []tenancy.Rule{{Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "x")}}}}
	for _, tc := range []struct {
		q      string
		policy *tenancy.Policy
		want   bool
	}{
		{`max by (cluster, namespace) (x)`, ns, true},
		{`rate(x[5m])`, ns, true},
		{`topk(3, x)`, ns, true},
		{`max by (cluster) (x)`, ns, false},
		{`max by (namespace) (label_replace(x, "namespace", "b", "", ""))`, ns, false},
		{`count_values("namespace", x)`, ns, false},
		{`x * on (i) group_left (namespace) y`, ns, false},
		{`topk(3, x)`, named, false}, // the metric name is not tracked
		{`max by (namespace) (x)`, nil, false},
	} {
		if got := recheckable(mustParse(t, tc.q), tc.policy); got != tc.want {
			t.Errorf("%s: recheckable %v, want %v", tc.q, got, tc.want)
		}
	}
}

// Cases the push-down fuzzer found (engine/pushdown_fuzz_test.go): the
// backends do not store the labels the proxy adds, so whatever compares or
// picks by label sets differs where one side still has such a label.
func TestFuzzFoundRefusals(t *testing.T) {
	gs := []Group{
		{Name: "g0", Labels: labels.FromStrings("cluster", "g0", "env", "prod"), LabelsAdded: true},
		{Name: "g1", Labels: labels.FromStrings("cluster", "g1", "env", "prod"), LabelsAdded: true},
	}
	for q, why := range map[string]string{
		`count by (cluster) (level - max without (env) (level))`:    `matches on group label "env"`,
		`max by (cluster) (level or max without (env) (gauge))`:     `matches on group label "env"`,
		`limit_ratio by (cluster) (0.5, max without (env) (gauge))`: "limit_ratio picks series",
		`max by (cluster) (bottomk without (job) (5, x))`:           "bottomk inside a pushed part",
		`limitk by (cluster) (1, max by (cluster, job) (x))`:        "limitk picks series by the order",
	} {
		p := New(Config{Enabled: true, FloatSums: FloatSumsReassociate}, testParser).Plan(mustParse(t, q), gs, nil)
		if !strings.Contains(p.Explain(), "kept in proxy: "+q) || !strings.Contains(p.Explain(), why) {
			t.Errorf("%s: %s\nwant refused for %q", q, p.Explain(), why)
		}
	}
	p := New(Config{Enabled: true, FloatSums: FloatSumsReassociate}, testParser).Plan(mustParse(t, `avg by (job, __name__) (x)`), gs, nil)
	if !strings.Contains(p.Explain(), "avg by the metric name") {
		t.Errorf("avg by __name__: %s", p.Explain())
	}
	// A matching or grouping that compares env probes, per group, for
	// series storing the group's env beside series lacking it.
	p = New(Config{Enabled: true}, testParser).Plan(mustParse(t, `max by (cluster) (x / y)`), gs, nil)
	if !p.Pushed() {
		t.Fatal(p.Explain())
	}
	var mixed []string
	for _, mp := range p.Fragments[0].Queries[0].Mixed {
		mixed = append(mixed, mp.Label)
		if len(mp.Stored) != 2 || len(mp.Lacking) != 2 {
			t.Errorf("%s: %d stored, %d lacking sets; want one per selector", mp.Label, len(mp.Stored), len(mp.Lacking))
		}
	}
	if strings.Join(mixed, ",") != "cluster,env" {
		t.Errorf("mixed probes for %v, want cluster and env", mixed)
	}
}
