package plan

// The tenant's rules in pushed text: every pushed selector carries them in
// a form the backends evaluate on their stored series, and the answers are
// re-checked where their labels allow.

import (
	"errors"
	"fmt"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// recheckable reports whether every output series of n carries each label
// the tenant's rules name with the value of an input series: then the
// policy can be applied to the answer itself. The metric name is not
// tracked (functions drop it); a label a function writes (label_replace,
// label_join, count_values) or a join copies from the other side is not
// its input's.
func recheckable(n parser.Expr, policy *tenancy.Policy) bool {
	if policy.Unrestricted() {
		return false
	}
	for _, r := range policy.Rules {
		for _, m := range r.Matchers {
			if m.Name == model.MetricNameLabel || !keepsName(n, m.Name) || writesLabel(n, m.Name) {
				return false
			}
		}
	}
	return true
}

// writesLabel reports whether some node of n sets label l on its output
// to a value other than its input series' own.
func writesLabel(n parser.Expr, l string) bool {
	found := false
	parser.Inspect(n, func(node parser.Node, _ []parser.Node) error {
		switch e := node.(type) {
		case *parser.Call:
			if labelArgs[e.Func.Name] && len(e.Args) > 1 {
				if s, ok := e.Args[1].(*parser.StringLiteral); ok && s.Val == l {
					found = true
				}
			}
		case *parser.AggregateExpr:
			if s, ok := e.Param.(*parser.StringLiteral); ok && e.Op == parser.COUNT_VALUES && s.Val == l {
				found = true
			}
		case *parser.BinaryExpr:
			if e.VectorMatching != nil && slices.Contains(e.VectorMatching.Include, l) {
				found = true
			}
		}
		return nil
	})
	return found
}

// groupQuery renders pushed for group g: matchers on group labels decided
// here and rewritten for stored data (onStoredData), the tenant's rule added
// to every selector. skipped is set when the tenant sees nothing of g.
func (pl *Planner) groupQuery(pushed parser.Expr, g Group, groupLabels []string, policy *tenancy.Policy) (query, skipped string, err error) {
	// A fresh copy per group: the AST is changed in place.
	e, err := pl.parser.ParseExpr(pushed.String())
	if err != nil {
		return "", "", fmt.Errorf("re-parsing the fragment: %w", err)
	}
	rules, skipped, err := rulesFor(g, groupLabels, policy)
	if err != nil || skipped != "" {
		return "", skipped, err
	}
	var werr error
	multi := map[*parser.VectorSelector][]*parser.VectorSelector{}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || werr != nil {
			return nil
		}
		own, err := onStoredData(vs.LabelMatchers, g, groupLabels)
		if errors.Is(err, errGroupExcluded) {
			werr = fmt.Errorf("%w: the selector is empty there, which a pushed query cannot say", err)
			return nil
		}
		if err != nil {
			werr = err
			return nil
		}
		if rules == nil {
			vs.LabelMatchers = own
			return nil
		}
		var fit [][]*labels.Matcher
		for _, r := range rules {
			if !tenancy.Contradicts(append(slices.Clone(own), r...)) {
				fit = append(fit, r)
			}
		}
		switch {
		case len(fit) == 0:
			// No rule lets this selector see anything: select nothing.
			// The empty-name matcher keeps the selector valid and empty.
			vs.LabelMatchers = append(own, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+"), labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, ""))
			vs.Name = ""
		case len(fit) == 1:
			*vs = *withRule(vs, own, fit[0])
		case !namesOneMetric(own):
			werr = fmt.Errorf("selector %s: %d tenant rules apply, and as it does not name one metric their union is not an `or` (which merges series differing only in their name)", vs, len(fit))
		default:
			for _, r := range fit {
				multi[vs] = append(multi[vs], withRule(vs, own, r))
			}
		}
		return nil
	})
	if werr != nil {
		return "", "", werr
	}
	if len(multi) > 0 {
		if e, err = orVariants(e, multi); err != nil {
			return "", "", err
		}
	}
	q := e.String()
	if err := pl.checkEnforced(q, rules); err != nil {
		return "", "", err
	}
	return q, "", nil
}

// withRule is vs with the matchers own and rule (the group's own decided).
func withRule(vs *parser.VectorSelector, own, rule []*labels.Matcher) *parser.VectorSelector {
	out := *vs
	out.LabelMatchers = slices.Clone(own)
	for _, m := range rule {
		if slices.ContainsFunc(own, func(o *labels.Matcher) bool { return o.String() == m.String() }) {
			continue
		}
		out.LabelMatchers = append(out.LabelMatchers, m)
		if m.Name == model.MetricNameLabel {
			// x{__name__=~"x|y"} does not parse: all in braces.
			out.Name = ""
		}
	}
	return &out
}

func namesOneMetric(ms []*labels.Matcher) bool {
	return slices.ContainsFunc(ms, func(m *labels.Matcher) bool {
		return m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual && m.Value != ""
	})
}

// perSeriesRange are the functions of a range selector whose every output
// series is computed from one input series alone and carries its labels
// (less the metric name): f(A ∪ B) = f(A) or f(B) for sets of series of
// one metric.
var perSeriesRange = map[string]bool{
	"rate": true, "irate": true, "increase": true, "delta": true, "idelta": true, "deriv": true,
	"predict_linear": true, "resets": true, "changes": true,
	"avg_over_time": true, "min_over_time": true, "max_over_time": true, "sum_over_time": true,
	"count_over_time": true, "last_over_time": true, "present_over_time": true, "quantile_over_time": true,
	"stddev_over_time": true, "stdvar_over_time": true, "mad_over_time": true,
}

// selectorTimes are the functions the engine treats apart when their
// argument is a selector (it reads the samples' timestamps).
var selectorTimes = map[string]bool{"timestamp": true, "start_timestamp": true}

// orVariants replaces each selector of multi, where several tenant rules
// apply, by the `or` of its variants, one rule each. The tenant may see a
// series iff some rule admits it, so it sees exactly the union of the
// variants. That union is `V1 or V2 or …` because every series of the
// variants has the one metric name the selector names (namesOneMetric):
// `or` drops a right-hand series only where a left-hand one has the same
// labels but for the name, i.e. where it is the same series, read from the
// same data with the same samples. A range selector has no `or`: the
// union moves out over the function applied to it, which is exact for
// perSeriesRange (one output series per input series, labels kept less the
// common name, so still told apart); anything else is refused.
func orVariants(e parser.Expr, multi map[*parser.VectorSelector][]*parser.VectorSelector) (parser.Expr, error) {
	rec := func(e parser.Expr) (parser.Expr, error) { return orVariants(e, multi) }
	switch n := e.(type) {
	case *parser.VectorSelector:
		if vs, ok := multi[n]; ok {
			alts := make([]parser.Expr, len(vs))
			for i, v := range vs {
				alts[i] = v
			}
			return orOf(alts), nil
		}
		return n, nil
	case *parser.MatrixSelector:
		if vs, ok := n.VectorSelector.(*parser.VectorSelector); ok && multi[vs] != nil {
			return nil, fmt.Errorf("selector %s: %d tenant rules apply, and a range selector whose union is not one selector is pushed only under a function of single series", n, len(multi[vs]))
		}
		return n, nil
	case *parser.Call:
		if selectorTimes[n.Func.Name] {
			// These read the samples' own timestamps only from a selector
			// given directly; of an `or` they answer the step's time.
			var bad *parser.VectorSelector
			parser.Inspect(n, func(c parser.Node, _ []parser.Node) error {
				if vs, ok := c.(*parser.VectorSelector); ok && multi[vs] != nil {
					bad = vs
				}
				return nil
			})
			if bad != nil {
				return nil, fmt.Errorf("selector %s: %d tenant rules apply, and %s reads the timestamps of a selector's samples, not of an or", bad, len(multi[bad]), n.Func.Name)
			}
		}
		for i, a := range n.Args {
			ms, ok := a.(*parser.MatrixSelector)
			if !ok {
				continue
			}
			vs, _ := ms.VectorSelector.(*parser.VectorSelector)
			if multi[vs] == nil {
				continue
			}
			if !perSeriesRange[n.Func.Name] {
				return nil, fmt.Errorf("selector %s: %d tenant rules apply, and %s is not a function of single series: their union cannot move out of it", ms, len(multi[vs]), n.Func.Name)
			}
			var alts []parser.Expr
			for _, v := range multi[vs] {
				c := *n
				c.Args = slices.Clone(n.Args)
				m := *ms
				m.VectorSelector = v
				c.Args[i] = &m
				alts = append(alts, &c)
			}
			return orOf(alts), nil
		}
	}
	return withChildren(e, rec)
}

// orOf is (a or b or …).
func orOf(alts []parser.Expr) parser.Expr {
	out := alts[0]
	for _, a := range alts[1:] {
		out = &parser.BinaryExpr{Op: parser.LOR, LHS: out, RHS: a, VectorMatching: &parser.VectorMatching{Card: parser.CardManyToMany}}
	}
	return &parser.ParenExpr{Expr: out}
}

// rulesFor returns the tenant's rules as group g's backends evaluate them
// on stored data (onStoredData); nil for an unrestricted tenant. A rule the
// group's labels fail admits nothing of g and is left out; skipped is set
// when no rule admits g. A rule that cannot be written for g fails the
// group: dropping it would hide series the tenant may see, and dropping a
// matcher of it would show series it may not.
func rulesFor(g Group, groupLabels []string, policy *tenancy.Policy) ([][]*labels.Matcher, string, error) {
	if policy.Unrestricted() {
		return nil, "", nil
	}
	var out [][]*labels.Matcher
	for _, r := range policy.Rules {
		ms, err := onStoredData(r.Matchers, g, groupLabels)
		if errors.Is(err, errGroupExcluded) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("tenant rule %s: %w", r, err)
		}
		out = append(out, ms)
	}
	if len(out) == 0 {
		return nil, "no tenant rule admits the group's labels", nil
	}
	return out, "", nil
}

// errGroupExcluded: a matcher on a group label refuses the group's value,
// so the selector holds nothing of the group.
var errGroupExcluded = errors.New("excludes the group")

// onStoredData rewrites matchers for group g's backends, which evaluate a
// pushed query on their series as stored, without the labels the proxy
// adds (groupLabels). A matcher on such a label is decided against the
// group's value and, where the group passes it, rewritten exactly as for
// remote read (discovery.OnStoredData): a series storing its own value of
// the label (federation, honor_labels, remote write) is judged by that
// value, as the proxy shows it. Nothing is dropped that a stored value
// could fail. It fails with errGroupExcluded when the group's value fails a
// matcher, and otherwise when a matcher has no one-matcher form.
func onStoredData(ms []*labels.Matcher, g Group, groupLabels []string) ([]*labels.Matcher, error) {
	out := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		v := g.Labels.Get(m.Name)
		if !slices.Contains(groupLabels, m.Name) || !g.LabelsAdded || v == "" {
			// Stored on the series (or absent from this group): the
			// backend evaluates m as the proxy would.
			out = append(out, m)
			continue
		}
		if !m.Matches(v) {
			return nil, fmt.Errorf("matcher %s on group %s (%s=%q): %w", m, g.Name, m.Name, v, errGroupExcluded)
		}
		stored, one := discovery.OnStoredData(m, v)
		if !one {
			return nil, fmt.Errorf("matcher %s on group label %s: series lacking the label or storing a value it accepts are no one selector", m, m.Name)
		}
		if stored != nil {
			out = append(out, stored)
		}
	}
	return out, nil
}

// checkEnforced re-parses the query to be sent and checks that every
// selector carries one of the tenant's rules whole: the rewrite above is
// not trusted alone.
func (pl *Planner) checkEnforced(q string, rules [][]*labels.Matcher) error {
	if rules == nil {
		return nil
	}
	e, err := pl.parser.ParseExpr(q)
	if err != nil {
		return fmt.Errorf("pushed query does not parse: %w", err)
	}
	var bad string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if selectsNothing(vs.LabelMatchers) {
			return nil
		}
		have := map[string]bool{}
		for _, m := range vs.LabelMatchers {
			have[m.String()] = true
		}
		for _, r := range rules {
			all := true
			for _, m := range r {
				all = all && have[m.String()]
			}
			if all {
				return nil
			}
		}
		bad = vs.String()
		return nil
	})
	if bad != "" {
		return fmt.Errorf("pushed selector %s lacks the tenant's rules", bad)
	}
	return nil
}
