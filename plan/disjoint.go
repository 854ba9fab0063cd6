package plan

// What proves that no series is in two groups, and the probes that check
// it for the series a pushed query reads.

import (
	"fmt"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Disjoint finds the label proving that no series is in two groups: every
// group has it, with a value no other group has. It returns the reason when
// there is none.
func Disjoint(groups []Group, want string) (string, string) {
	if len(groups) < 2 {
		return "", "fewer than two groups: nothing to gain"
	}
	var names []string
	if want != "" {
		names = []string{want}
	} else {
		groups[0].Labels.Range(func(l labels.Label) { names = append(names, l.Name) })
	}
	for _, name := range names {
		seen := map[string]string{}
		ok := true
		for _, g := range groups {
			v := g.Labels.Get(name)
			if other, dup := seen[v]; v == "" || dup {
				ok = false
				if want != "" && v == "" {
					return "", fmt.Sprintf("group %s has no label %q", g.Name, name)
				}
				if want != "" {
					return "", fmt.Sprintf("groups %s and %s share %s=%q: a series may be in both", other, g.Name, name, v)
				}
				break
			}
			seen[v] = g.Name
		}
		if ok {
			return name, ""
		}
	}
	return "", "no label has a distinct value in every group: a series may be in two groups"
}

// sensitiveToStored lists the group labels that a vector matching of n
// compares, or that the grouping of one of its aggregations (or a function
// grouping by every label but one, as histogram_quantile) keeps: for those
// a group's series must not mix storing the group's value with lacking the
// label (MixedProbe).
func sensitiveToStored(n parser.Expr, groupLabels []string) []string {
	var out []string
	add := func(l string) {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	parser.Inspect(n, func(node parser.Node, _ []parser.Node) error {
		for _, l := range groupLabels {
			switch e := node.(type) {
			case *parser.BinaryExpr:
				if e.LHS.Type() == parser.ValueTypeVector && e.RHS.Type() == parser.ValueTypeVector && matchesOn(e.VectorMatching, l) {
					add(l)
				}
			case *parser.AggregateExpr:
				if keepsLabel(e.Grouping, e.Without, l) {
					add(l)
				}
			case *parser.Call:
				switch e.Func.Name {
				case "histogram_quantile", "histogram_quantiles", "histogram_fraction":
					add(l)
				}
			}
		}
		return nil
	})
	return out
}

// probe lists, for the query sent to g, every selector with the
// disjointness label required to differ from g's value (and, where the proxy
// adds the label, to be stored at all): series the group's answer would
// wrongly attribute to g. Where the proxy adds g's labels, it also lists,
// for each label of sensitive, the mixed probe over every selector.
func (pl *Planner) probe(q string, g Group, label string, sensitive []string) ([][]*labels.Matcher, []MixedProbe, error) {
	e, err := pl.parser.ParseExpr(q)
	if err != nil {
		return nil, nil, err
	}
	var (
		out   [][]*labels.Matcher
		mixed []MixedProbe
	)
	if g.LabelsAdded {
		for _, l := range sensitive {
			if v := g.Labels.Get(l); v != "" {
				mixed = append(mixed, MixedProbe{Label: l})
			}
		}
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || selectsNothing(vs.LabelMatchers) {
			return nil
		}
		for i := range mixed {
			mp := &mixed[i]
			stored := append(slices.Clone(vs.LabelMatchers), labels.MustNewMatcher(labels.MatchEqual, mp.Label, g.Labels.Get(mp.Label)))
			lacking := append(slices.Clone(vs.LabelMatchers), labels.MustNewMatcher(labels.MatchEqual, mp.Label, ""))
			if !tenancy.Contradicts(stored) {
				mp.Stored = append(mp.Stored, stored)
			}
			if !tenancy.Contradicts(lacking) && slices.ContainsFunc(lacking, func(m *labels.Matcher) bool { return !m.Matches("") }) {
				mp.Lacking = append(mp.Lacking, lacking)
			}
		}
		set := slices.Clone(vs.LabelMatchers)
		if g.LabelsAdded {
			set = append(set, labels.MustNewMatcher(labels.MatchNotEqual, label, ""))
		}
		set = append(set, labels.MustNewMatcher(labels.MatchNotEqual, label, g.Labels.Get(label)))
		if !tenancy.Contradicts(set) {
			out = append(out, set)
		}
		return nil
	})
	// A label no selector can store, or none can lack, needs no probe.
	mixed = slices.DeleteFunc(mixed, func(mp MixedProbe) bool { return len(mp.Stored) == 0 || len(mp.Lacking) == 0 })
	return out, mixed, nil
}

func selectsNothing(ms []*labels.Matcher) bool {
	for _, m := range ms {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual && m.Value == "" {
			return true
		}
	}
	return false
}
