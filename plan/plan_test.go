package plan

import (
	"strings"
	"testing"

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
		{`rate(x[5m])`, `remote(rate(x[5m]))`},
		{`sum by (cluster, job) (rate(x[5m]))`, `remote(sum by (cluster, job) (rate(x[5m])))`},
		{`sum without (job) (rate(x[5m]))`, `remote(sum without (job) (rate(x[5m])))`},
		{`histogram_quantile(0.9, sum by (le, cluster) (rate(x_bucket[5m])))`, `remote(histogram_quantile(0.9, sum by (le, cluster) (rate(x_bucket[5m]))))`},
		{`x / on (cluster, instance) y`, `remote(x / on (cluster, instance) y)`},
		{`x / y`, `remote(x / y)`},
		{`max_over_time(rate(x[5m])[30m:1m])`, `remote(max_over_time(rate(x[5m])[30m:1m]))`},
		{`topk by (cluster) (3, x)`, `remote(topk by (cluster) (3, x))`},
		// Exact distributive aggregations combine the groups' answers.
		{`max by (job) (rate(x[5m]))`, `max by (job) (remote(max by (job) (rate(x[5m]))))`},
		{`count(x)`, `sum(remote(count(x)))`},
		{`group without (cluster) (x)`, `group without (cluster, __pushdown_group__) (remote(group without (cluster) (x)))`},
		{`min(rate(x[5m])) > 0`, `min(remote(min(rate(x[5m])))) > 0`},
		// Not exact across groups: the proxy evaluates, pushing what it can below.
		{`sum by (job) (rate(x[5m]))`, `sum by (job) (remote(rate(x[5m])))`},
		{`topk(3, x)`, `topk(3, x)`},
		{`x / on (instance) y`, `x / on (instance) y`},
		{`sort_desc(count by (cluster) (x))`, `sort_desc(remote(count by (cluster) (x)))`},
		{`absent(rate(x[5m]))`, `absent(rate(x[5m]))`},
		{`x * scalar(y)`, `x * scalar(y)`},
		{`label_replace(rate(x[5m]), "cluster", "$1", "job", "(.*)")`, `label_replace(remote(rate(x[5m])), "cluster", "$1", "job", "(.*)")`},
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
	p := New(Config{Enabled: true, Label: "region"}, testParser).Plan(mustParse(t, `rate(x[5m])`), groups("cluster", "a", "cluster", "b"), nil)
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
// are decided per group and never sent.
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
		p := planOf(t, `x / on (cluster, i) y`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{namespace="team-a"}`)}})
		if got := q(p, "g-a").Query; got != `x{namespace="team-a"} / on (cluster, i) y{namespace="team-a"}` {
			t.Errorf("query %s", got)
		}
	})
	t.Run("rule naming a group label", func(t *testing.T) {
		p := planOf(t, `rate(x[5m])`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `{cluster="a", namespace="n"}`)}})
		if got := q(p, "g-a").Query; got != `rate(x{namespace="n"}[5m])` {
			t.Errorf("query for the admitted group %s", got)
		}
		if got := q(p, "g-b"); got.Skipped == "" {
			t.Errorf("group b asked although the rule excludes it: %s", got.Query)
		}
	})
	t.Run("several rules, one fits each selector", func(t *testing.T) {
		p := planOf(t, `x / y`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `x`), rule(t, `{__name__="y", job="j"}`)}})
		if got := q(p, "g-a").Query; got != `x{__name__="x"} / y{__name__="y",job="j"}` && got != `x / y{job="j"}` {
			t.Errorf("query %s", got)
		}
	})
	t.Run("several rules fit one selector: refused", func(t *testing.T) {
		p := planOf(t, `rate({__name__=~"x|y"}[5m])`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `x`), rule(t, `y`)}})
		if p.Pushed() {
			t.Fatalf("pushed: %s", p.Explain())
		}
		if !strings.Contains(p.Explain(), "tenant rules apply") {
			t.Errorf("reason missing: %s", p.Explain())
		}
	})
	t.Run("no rule fits a selector: it selects nothing", func(t *testing.T) {
		p := planOf(t, `x or y`, gs, &tenancy.Policy{Rules: []tenancy.Rule{rule(t, `x`)}})
		got := q(p, "g-a").Query
		if !strings.Contains(got, `__name__=""`) {
			t.Errorf("query %s", got)
		}
	})
	t.Run("query matcher on group label", func(t *testing.T) {
		p := planOf(t, `rate(x{cluster=~"a|b"}[5m])`, gs, nil)
		if got := q(p, "g-b").Query; got != `rate(x[5m])` {
			t.Errorf("query %s", got)
		}
		p = planOf(t, `rate(x{cluster="a"}[5m])`, gs, nil)
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
	for _, added := range []bool{false, true} {
		gs := []Group{
			{Name: "a", Labels: labels.FromStrings("cluster", "a", "region", "eu"), LabelsAdded: added},
			{Name: "b", Labels: labels.FromStrings("cluster", "b", "region", "eu"), LabelsAdded: added},
		}
		for q, keepsRegion := range map[string]bool{
			`rate(x[5m])`:                        true,
			`sum by (cluster) (x)`:               false,
			`x / on (cluster, i) group_left y`:   true, // many-to-one keeps the many side whole
			`x / on (cluster, i) y`:              false,
			`sum without (region) (rate(x[5m]))`: false,
		} {
			p := planOf(t, q, gs, nil)
			if added && keepsRegion {
				// The proxy would add region where a series lacks it:
				// which series store their own, only the backends know.
				if p.Pushed() {
					t.Errorf("%s pushed although it keeps an added group label: %s", q, p.Explain())
				}
				continue
			}
			if !p.Pushed() {
				t.Errorf("%s (labels added %v): not pushed: %s", q, added, p.Explain())
				continue
			}
			if got := strings.Join(p.Fragments[0].Keep, ","); got != "cluster" {
				t.Errorf("%s keeps %q, want cluster", q, got)
			}
		}
	}
}

// With labels stored on the series, matchers on them are the backends' to
// evaluate, and the probe asks each group for series that would break the
// disjointness the labels claim.
func TestStoredLabelsProbe(t *testing.T) {
	gs := []Group{{Name: "a", Labels: labels.FromStrings("cluster", "a")}, {Name: "b", Labels: labels.FromStrings("cluster", "b")}}
	p := planOf(t, `rate(x{cluster=~"a|b"}[5m]) / on (cluster, i) y`, gs, nil)
	if !p.Pushed() {
		t.Fatal(p.Explain())
	}
	gq := p.Fragments[0].Queries[0]
	if gq.Query != `rate(x{cluster=~"a|b"}[5m]) / on (cluster, i) y` {
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
