package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

func policyOf(t *testing.T, selectors ...string) *tenancy.Policy {
	t.Helper()
	p := &tenancy.Policy{Namespace: "team-a"}
	for _, s := range selectors {
		ms, err := Parser().ParseMetricSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		p.Rules = append(p.Rules, tenancy.Rule{Matchers: ms, Origin: s})
	}
	return p
}

func TestRuleAndAlertVisibility(t *testing.T) {
	p := policyOf(t, `{__name__="ALERTS", namespace="team-a"}`, `{__name__=~"team_a:.*", namespace="team-a"}`)
	alert := func(state string, kv ...string) *v1.Alert {
		return &v1.Alert{Labels: labels.FromStrings(kv...), State: state}
	}
	mine := alert("firing", "alertname", "X", "namespace", "team-a")
	theirs := alert("firing", "alertname", "X", "namespace", "team-b")
	cases := []struct {
		name string
		rule v1.Rule
		want bool
	}{
		{"recording rule fixing the namespace", &v1.RecordingRule{Name: "team_a:x:sum", Labels: labels.FromStrings("namespace", "team-a")}, true},
		{"recording rule of another name", &v1.RecordingRule{Name: "other:x:sum", Labels: labels.FromStrings("namespace", "team-a")}, false},
		{"recording rule not fixing the namespace", &v1.RecordingRule{Name: "team_a:x:sum"}, false},
		{"alerting rule fixing the namespace, no alerts", &v1.AlertingRule{Name: "X", Labels: labels.FromStrings("namespace", "team-a")}, true},
		{"alerting rule of another namespace", &v1.AlertingRule{Name: "X", Labels: labels.FromStrings("namespace", "team-b"), Alerts: []*v1.Alert{theirs}}, false},
		{"alerting rule visible through an alert", &v1.AlertingRule{Name: "X", Alerts: []*v1.Alert{theirs, mine}}, true},
		{"alerting rule with only foreign alerts", &v1.AlertingRule{Name: "X", Alerts: []*v1.Alert{theirs}}, false},
	}
	for _, c := range cases {
		if got := RuleVisible(p, c.rule); got != c.want {
			t.Errorf("%s: visible=%v, want %v", c.name, got, c.want)
		}
	}
	if !AlertVisible(p, mine) || AlertVisible(p, theirs) {
		t.Error("alerts: want team-a's visible and team-b's not")
	}
	// The state is part of the ALERTS series.
	firingOnly := policyOf(t, `{__name__="ALERTS", alertstate="firing", namespace="team-a"}`)
	if AlertVisible(firingOnly, alert("pending", "alertname", "X", "namespace", "team-a")) {
		t.Error("a pending alert is visible to a rule granting only firing ones")
	}
	if !RuleVisible(nil, &v1.RecordingRule{Name: "anything"}) {
		t.Error("no policy (tenancy off) must see every rule")
	}
}

func TestRuleState(t *testing.T) {
	for _, c := range []struct {
		states []string
		want   string
	}{{nil, "inactive"}, {[]string{"pending"}, "pending"}, {[]string{"pending", "firing"}, "firing"}, {[]string{"firing", "pending"}, "firing"}} {
		var as []*v1.Alert
		for _, s := range c.states {
			as = append(as, &v1.Alert{State: s})
		}
		if got := ruleState(as); got != c.want {
			t.Errorf("%v: %s, want %s", c.states, got, c.want)
		}
	}
}

func TestPaginate(t *testing.T) {
	groups := []*v1.RuleGroup{{File: "a", Name: "g1"}, {File: "a", Name: "g2"}, {File: "b", Name: "g1"}}
	res, err := paginate(groups, 2, "")
	if err != nil || len(res.RuleGroups) != 2 || res.GroupNextToken != NextToken("b", "g1") {
		t.Fatalf("first page: %+v %v", res, err)
	}
	res, err = paginate(groups, 2, res.GroupNextToken)
	if err != nil || len(res.RuleGroups) != 1 || res.RuleGroups[0].File != "b" || res.GroupNextToken != "" {
		t.Fatalf("second page: %+v %v", res, err)
	}
	if _, err := paginate(groups, 2, "bogus"); !errors.Is(err, ErrBadNextToken) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestExemplarQuery(t *testing.T) {
	a := labels.MustNewMatcher(labels.MatchEqual, "__name__", "x")
	b := labels.MustNewMatcher(labels.MatchEqual, "namespace", "team-a")
	c := labels.MustNewMatcher(labels.MatchRegexp, "job", "api|web")
	sets := [][]*labels.Matcher{{a, b}, {a, c}}
	// The backend parses what it is sent: it must be valid PromQL.
	q := remote.ExemplarQuery(sets)
	if _, err := Parser().ParseExpr(q); err != nil {
		t.Errorf("%s: %v", q, err)
	}
}

// A rule's lastError can quote series of any namespace: a tenant reads a
// fixed text instead, an admin the backend's own.
func TestHideFreeText(t *testing.T) {
	leak := `found duplicate series for the match group {pod="x"} on the right hand-side of the operation: [{namespace="team-b", pod="x"}]`
	ar := &v1.AlertingRule{Name: "A", LastError: leak, Health: "err"}
	rr := &v1.RecordingRule{Name: "r", LastError: leak, Health: "err"}
	ok := &v1.RecordingRule{Name: "ok", Health: "ok"}
	for _, r := range []v1.Rule{ar, rr, ok} {
		hideFreeText(r)
	}
	if strings.Contains(ar.LastError, "team-b") || strings.Contains(rr.LastError, "team-b") || ar.LastError != hiddenRuleError {
		t.Errorf("lastError shown: %q / %q", ar.LastError, rr.LastError)
	}
	if ar.Health != "err" || ok.LastError != "" {
		t.Errorf("health %q, empty error became %q", ar.Health, ok.LastError)
	}
}
