package engine

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/util/annotations"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// RulesFilter holds the parameters of /api/v1/rules. The proxy applies
// them itself to what every backend sends, so they mean the same whatever
// the backends' versions.
type RulesFilter struct {
	Type          string // "", "alert" or "record"
	RuleNames     []string
	RuleGroups    []string // group names as the proxy shows them
	Files         []string
	Match         [][]*labels.Matcher // on the rule's labels, as Prometheus does
	ExcludeAlerts bool
	GroupLimit    int // 0: no pagination
	NextToken     string
}

// ErrBadNextToken is a group_next_token that names no group of the answer.
var ErrBadNextToken = errors.New("invalid group_next_token: were rule groups changed?")

// GroupName is how the proxy shows a backend's rule group: prefixed with
// the name of the proxy's group, so the same rule file on two backend
// groups yields two groups that never collide.
func GroupName(group, ruleGroup string) string { return group + "/" + ruleGroup }

// NextToken identifies a rule group for pagination.
func NextToken(file, name string) string {
	sum := sha256.Sum256([]byte(file + ";" + name))
	return hex.EncodeToString(sum[:12])
}

// AlertVisible reports whether a tenant may see an alert: exactly when the
// series ALERTS{alertstate="<state>", <the alert's labels>} it stands for
// is visible under the policy.
func AlertVisible(p *tenancy.Policy, a *v1.Alert) bool {
	return p.Matches(alertSeries(a))
}

func alertSeries(a *v1.Alert) labels.Labels {
	b := labels.NewBuilder(a.Labels)
	b.Set(model.MetricNameLabel, "ALERTS")
	b.Set("alertstate", a.State)
	return b.Labels()
}

// RuleVisible reports whether a tenant may see a rule. A recording rule is
// visible when the series it writes, as far as the rule fixes its labels
// ({__name__="<record>", <the rule's labels>}), is visible. An alerting rule
// is visible when ALERTS{alertname="<alert>", <the rule's labels>} is, or
// when at least one of its alerts is (AlertVisible). A matcher of the
// policy on a label the rule does not fix fails, so a rule whose output is
// visible only for some inputs shows only through its visible alerts.
func RuleVisible(p *tenancy.Policy, r v1.Rule) bool {
	switch r := r.(type) {
	case *v1.RecordingRule:
		b := labels.NewBuilder(r.Labels)
		b.Set(model.MetricNameLabel, r.Name)
		return p.Matches(b.Labels())
	case *v1.AlertingRule:
		b := labels.NewBuilder(r.Labels)
		b.Set(model.MetricNameLabel, "ALERTS")
		b.Set("alertname", r.Name)
		if p.Matches(b.Labels()) {
			return true
		}
		return slices.ContainsFunc(r.Alerts, func(a *v1.Alert) bool { return AlertVisible(p, a) })
	}
	return false
}

// Rules fans /api/v1/rules out to every group, names groups so they never
// collide, puts the group's labels on rules and alerts, keeps what the
// tenant may see (RuleVisible, AlertVisible) and applies flt.
func (f *Fanout) Rules(ctx context.Context, flt RulesFilter) (*v1.RuleDiscovery, annotations.Annotations, error) {
	type answer struct {
		group  *discovery.Group
		groups []*v1.RuleGroup
		warns  remote.Warnings
	}
	answers, warns, err := fanOut(ctx, f, &failedGroups{}, callRules, nil, func(ctx context.Context, g *discovery.Group, _ [][]*labels.Matcher, c *remote.Client) (answer, error) {
		gs, w, err := c.Rules(ctx)
		return answer{g, gs, w}, err
	})
	if err != nil {
		return nil, nil, err
	}
	policy := tenancy.FromContext(ctx)
	var (
		out    []*v1.RuleGroup
		hidden int
	)
	for _, a := range answers {
		for _, w := range a.warns {
			warns.Add(backendWarning(w))
		}
		for _, rg := range a.groups {
			if a.group != nil {
				rg.Name = GroupName(a.group.Name, rg.Name)
			}
			if !flt.keepsGroup(rg) {
				continue
			}
			kept := rg.Rules[:0]
			for _, r := range rg.Rules {
				labelRule(a.group, r)
				if !RuleVisible(policy, r) {
					hidden++
					continue
				}
				if !flt.keepsRule(r) {
					continue
				}
				if !policy.Unrestricted() {
					hideFreeText(r)
				}
				if ar, ok := r.(*v1.AlertingRule); ok {
					if !policy.Unrestricted() {
						ar.Alerts = slices.DeleteFunc(ar.Alerts, func(al *v1.Alert) bool { return !AlertVisible(policy, al) })
						ar.State = ruleState(ar.Alerts)
					}
					if flt.ExcludeAlerts {
						ar.Alerts = nil
					}
				}
				kept = append(kept, r)
			}
			if len(kept) > 0 {
				rg.Rules = kept
				out = append(out, rg)
			}
		}
	}
	if hidden > 0 {
		f.opts.Logger.Debug("rules hidden from tenant", "tenant", policy.Namespace, "rules", hidden,
			"reason", "neither the rule's labels nor any of its alerts are visible under the tenant's policy")
	}
	// Prometheus lists groups by file, then name.
	slices.SortStableFunc(out, func(a, b *v1.RuleGroup) int {
		return cmp.Or(strings.Compare(a.File, b.File), strings.Compare(a.Name, b.Name))
	})
	res := &v1.RuleDiscovery{RuleGroups: out}
	if flt.GroupLimit > 0 {
		if res, err = paginate(out, flt.GroupLimit, flt.NextToken); err != nil {
			return nil, nil, err
		}
	}
	if res.RuleGroups == nil {
		res.RuleGroups = []*v1.RuleGroup{}
	}
	return res, warns, nil
}

func paginate(groups []*v1.RuleGroup, limit int, token string) (*v1.RuleDiscovery, error) {
	from := 0
	if token != "" {
		from = slices.IndexFunc(groups, func(g *v1.RuleGroup) bool { return NextToken(g.File, g.Name) == token })
		if from < 0 {
			return nil, ErrBadNextToken
		}
	}
	res := &v1.RuleDiscovery{RuleGroups: groups[from:]}
	if len(res.RuleGroups) > limit {
		next := res.RuleGroups[limit]
		res.GroupNextToken = NextToken(next.File, next.Name)
		res.RuleGroups = res.RuleGroups[:limit]
	}
	return res, nil
}

// hiddenRuleError stands, for a tenant, for a rule's lastError.
const hiddenRuleError = "the rule's evaluation failed; its error is shown to admins only, as it can name series of other tenants"

// hideFreeText blanks what a backend writes into a rule as free text from
// its evaluation: lastError can quote any series the rule's query met
// ("found duplicate series for the match group {…}"), whoever they belong
// to. The rule's health stays: that it fails is the tenant's to know.
func hideFreeText(r v1.Rule) {
	switch r := r.(type) {
	case *v1.AlertingRule:
		if r.LastError != "" {
			r.LastError = hiddenRuleError
		}
	case *v1.RecordingRule:
		if r.LastError != "" {
			r.LastError = hiddenRuleError
		}
	}
}

// ruleState is an alerting rule's state as its (visible) alerts make it,
// computed as Prometheus does: the most advanced state of any alert.
func ruleState(alerts []*v1.Alert) string {
	state := "inactive"
	for _, a := range alerts {
		switch a.State {
		case "firing":
			return "firing"
		case "pending":
			state = "pending"
		}
	}
	return state
}

func labelRule(g *discovery.Group, r v1.Rule) {
	switch r := r.(type) {
	case *v1.RecordingRule:
		r.Labels = withGroupLabels(g, r.Labels)
	case *v1.AlertingRule:
		r.Labels = withGroupLabels(g, r.Labels)
		for _, a := range r.Alerts {
			a.Labels = withGroupLabels(g, a.Labels)
		}
	}
}

func (flt RulesFilter) keepsGroup(rg *v1.RuleGroup) bool {
	return (len(flt.RuleGroups) == 0 || slices.Contains(flt.RuleGroups, rg.Name)) &&
		(len(flt.Files) == 0 || slices.Contains(flt.Files, rg.File))
}

func (flt RulesFilter) keepsRule(r v1.Rule) bool {
	var (
		name string
		lset labels.Labels
	)
	switch r := r.(type) {
	case *v1.RecordingRule:
		if flt.Type == "alert" {
			return false
		}
		name, lset = r.Name, r.Labels
	case *v1.AlertingRule:
		if flt.Type == "record" {
			return false
		}
		name, lset = r.Name, r.Labels
	default:
		return false
	}
	if len(flt.RuleNames) > 0 && !slices.Contains(flt.RuleNames, name) {
		return false
	}
	if len(flt.Match) == 0 {
		return true
	}
	return slices.ContainsFunc(flt.Match, func(ms []*labels.Matcher) bool {
		for _, m := range ms {
			if !m.Matches(lset.Get(m.Name)) {
				return false
			}
		}
		return true
	})
}

// Alerts fans /api/v1/alerts out to every group and keeps the alerts the
// tenant may see (AlertVisible), with the group's labels on them.
func (f *Fanout) Alerts(ctx context.Context) (*v1.AlertDiscovery, annotations.Annotations, error) {
	type answer struct {
		group  *discovery.Group
		alerts []*v1.Alert
		warns  remote.Warnings
	}
	answers, warns, err := fanOut(ctx, f, &failedGroups{}, callAlerts, nil, func(ctx context.Context, g *discovery.Group, _ [][]*labels.Matcher, c *remote.Client) (answer, error) {
		as, w, err := c.Alerts(ctx)
		return answer{g, as, w}, err
	})
	if err != nil {
		return nil, nil, err
	}
	policy := tenancy.FromContext(ctx)
	out := []*v1.Alert{}
	hidden := 0
	for _, a := range answers {
		for _, w := range a.warns {
			warns.Add(backendWarning(w))
		}
		for _, al := range a.alerts {
			al.Labels = withGroupLabels(a.group, al.Labels)
			if AlertVisible(policy, al) {
				out = append(out, al)
			} else {
				hidden++
			}
		}
	}
	if hidden > 0 {
		f.opts.Logger.Debug("alerts hidden from tenant", "tenant", policy.Namespace, "alerts", hidden,
			"reason", "the alert's ALERTS series is not visible under the tenant's policy")
	}
	slices.SortStableFunc(out, func(a, b *v1.Alert) int { return labels.Compare(a.Labels, b.Labels) })
	return &v1.AlertDiscovery{Alerts: out}, warns, nil
}
