package plan

// What the backends may evaluate: the walker over the query, the tables of
// what distributes, and the fragments it makes.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// combine says how an aggregation distributes: the backends evaluate Inner,
// the proxy aggregates their answers with Outer. Only operations whose
// result does not depend on the order of the inputs are listed, so the
// answer is bit for bit the one of a single evaluation. sum and avg are not
// here (see reassociative): float addition is not associative, so partial
// sums differ from one sum in the last bits; stddev, stdvar, quantile need every input; topk,
// bottomk and limitk choose among ties by input order.
type combine struct{ Inner, Outer parser.ItemType }

var distributive = map[parser.ItemType]combine{
	parser.MIN:   {parser.MIN, parser.MIN},
	parser.MAX:   {parser.MAX, parser.MAX},
	parser.COUNT: {parser.COUNT, parser.SUM}, // counts are integers: their sum is exact below 2^53
	parser.GROUP: {parser.GROUP, parser.GROUP},
}

// selects lists the aggregations whose answer is some of their input
// series, unchanged: their grouping only says which compete.
var selects = map[parser.ItemType]bool{parser.TOPK: true, parser.BOTTOMK: true, parser.LIMITK: true, parser.LIMIT_RATIO: true}

// reassociative lists the aggregations combined across groups only under
// FloatSumsReassociate: their combination re-orders float additions.
var reassociative = map[parser.ItemType]bool{parser.SUM: true, parser.AVG: true}

// notLocal lists functions whose answer is not made series by series from
// their input: they read no series (time, vector, pi), build labels from the
// query (absent*), cross series (scalar, info), or order (sort*: kept in the
// proxy, whose engine sorts the merged answer).
var notLocal = map[string]string{
	"absent":             "builds its series from the selector, not from data",
	"absent_over_time":   "builds its series from the selector, not from data",
	"scalar":             "needs every series of the vector",
	"info":               "joins series the planner does not see",
	"vector":             "reads no series",
	"time":               "reads no series",
	"pi":                 "reads no series",
	"sort":               "orders the whole answer",
	"sort_desc":          "orders the whole answer",
	"sort_by_label":      "orders the whole answer",
	"sort_by_label_desc": "orders the whole answer",
}

// labelArgs are the functions whose string arguments name labels.
var labelArgs = map[string]bool{"label_replace": true, "label_join": true}

type walker struct {
	pl          *Planner
	plan        *Plan
	groups      []Group
	policy      *tenancy.Policy
	label       string
	groupLabels []string // labels the proxy adds (the backends do not store them)
	allLabels   []string // every group label name
}

func (w *walker) decide(n parser.Node, pushed bool, reason string) {
	w.plan.Decisions = append(w.plan.Decisions, Decision{Node: n.String(), Pushed: pushed, Reason: reason})
}

// rewrite replaces the largest pushable subtrees of n, top down.
func (w *walker) rewrite(n parser.Expr) parser.Expr {
	if n.Type() == parser.ValueTypeVector && readsData(n) {
		if out, pushed := w.push(n); pushed {
			return out
		}
	}
	switch e := n.(type) {
	case *parser.AggregateExpr:
		if e.Op == parser.LIMITK {
			// limitk picks the first k series in the order its input
			// comes in, and a pushed answer comes in another order than
			// the same part evaluated here.
			w.decide(n, false, "limitk picks series by the order of its input, which a pushed part would change")
			return n
		}
	case *parser.Call:
		if _, bad := notLocal[e.Func.Name]; bad && strings.HasPrefix(e.Func.Name, "absent") {
			// absent reads its argument's selector matchers: a synthetic
			// selector there would change its labels.
			return n
		}
	case *parser.SubqueryExpr, *parser.StepInvariantExpr:
		// A subquery's inside is evaluated at other instants than the
		// query's steps: only whole (above) is it pushed.
		return n
	}
	return mapChildren(n, w.rewrite)
}

// push replaces n by a fragment when n may be evaluated by the backends, as
// a whole (local) or as the groups' parts of a distributive aggregation.
func (w *walker) push(n parser.Expr) (parser.Expr, bool) {
	if agg, ok := n.(*parser.AggregateExpr); ok && (agg.Op == parser.TOPK || agg.Op == parser.BOTTOMK) {
		// Even within one group, which of tied series win is decided by
		// the order of its input: pushed only as a ranked combination,
		// whose answer is checked for such ties.
		if ok, why := w.local(agg.Expr); !ok {
			w.decide(n, false, why)
			return n, false
		}
		return w.pushRanked(agg)
	}
	ok, why := w.local(n)
	if ok {
		if !worthPushing(n) {
			w.decide(n, false, "no aggregation: its answer is as large as what remote read brings")
			return n, false
		}
		sel, ok := w.fragment(n, n, false)
		if ok {
			w.decide(n, true, fmt.Sprintf("every output series is computed from one group's series (keeps %q)", w.label))
		}
		return sel, ok
	}
	agg, isAgg := n.(*parser.AggregateExpr)
	if !isAgg {
		w.decide(n, false, why)
		return n, false
	}
	c, dist := distributive[agg.Op]
	dist = dist || agg.Op == parser.TOPK || agg.Op == parser.BOTTOMK
	_, float := reassociative[agg.Op]
	reassociate := float && w.pl.cfg.FloatSums == FloatSumsReassociate
	switch {
	case float && !reassociate:
		w.decide(n, false, fmt.Sprintf("%s is combined across groups only with engine.push_down.float_sums: %s (float addition is not associative: partial sums differ from one sum in the last bits), and %s", agg.Op, FloatSumsReassociate, why))
		return n, false
	case !dist && !reassociate:
		w.decide(n, false, fmt.Sprintf("%s does not distribute exactly and %s", agg.Op, why))
		return n, false
	}
	if ok, why := w.local(agg.Expr); !ok {
		w.decide(n, false, why)
		return n, false
	}
	if agg.Op == parser.AVG {
		return w.pushAvg(agg)
	}
	if agg.Op == parser.TOPK || agg.Op == parser.BOTTOMK {
		return w.pushRanked(agg)
	}
	if reassociate {
		c = combine{parser.SUM, parser.SUM}
	}
	inner := &parser.AggregateExpr{Op: c.Inner, Expr: agg.Expr, Grouping: agg.Grouping, Without: agg.Without}
	sel, ok := w.fragment(agg, inner, true)
	if !ok {
		return n, false
	}
	if reassociate {
		w.decide(n, true, fmt.Sprintf("sum re-associated (engine.push_down.float_sums: %s): partial sums in each group, sum of their answers; equal to one sum within float rounding", FloatSumsReassociate))
	} else {
		w.decide(n, true, fmt.Sprintf("%s distributes: %s in each group, %s of their answers", agg.Op, c.Inner, c.Outer))
	}
	return &parser.AggregateExpr{Op: c.Outer, Expr: sel, Grouping: outerGrouping(agg), Without: agg.Without, PosRange: agg.PosRange}, true
}

// outerGrouping is the grouping that combines the groups' answers to agg:
// agg's own, with GroupLabel dropped too where agg groups "without".
func outerGrouping(agg *parser.AggregateExpr) []string {
	if agg.Without {
		return append(slices.Clone(agg.Grouping), GroupLabel)
	}
	return agg.Grouping
}

// pushAvg combines avg across groups as the mean of the groups' means,
// each weighted by its share of the count:
//
//	sum(avg_g × (count_g / sum(count_g)))
//
// rather than sum(sum_g) / sum(count_g): Prometheus' avg switches to an
// incremental mean where the running sum would overflow, and so must this,
// so no partial sum is ever formed. Each term is at most the group's mean in
// magnitude and the weights add up to 1, so no step overflows where the
// means do not; where one group holds a whole output group, its weight is
// exactly 1 and the answer is that group's avg bit for bit.
//
// Each group answers mean and count in one query, told apart by PartLabel,
// so a group is asked (and probed) once.
func (w *walker) pushAvg(agg *parser.AggregateExpr) (parser.Expr, bool) {
	if !agg.Without && slices.Contains(agg.Grouping, model.MetricNameLabel) {
		// The combination multiplies and divides, which drops the name.
		w.decide(agg, false, "avg by the metric name: combining the groups' means would drop it")
		return agg, false
	}
	part := func(op parser.ItemType, name string) parser.Expr {
		return &parser.Call{
			Func: parser.Functions["label_replace"],
			Args: parser.Expressions{
				&parser.AggregateExpr{Op: op, Expr: agg.Expr, Grouping: agg.Grouping, Without: agg.Without},
				&parser.StringLiteral{Val: PartLabel}, &parser.StringLiteral{Val: name},
				&parser.StringLiteral{Val: ""}, &parser.StringLiteral{Val: ""},
			},
		}
	}
	both := &parser.BinaryExpr{Op: parser.LOR, LHS: part(parser.AVG, "mean"), RHS: part(parser.COUNT, "count"),
		VectorMatching: &parser.VectorMatching{Card: parser.CardManyToMany}}
	before := len(w.plan.Fragments)
	sel, ok := w.fragment(agg, both, true)
	if !ok {
		return agg, false
	}
	f := w.plan.Fragments[before]
	f.Parts = map[string]parser.Expr{
		"mean":  &parser.AggregateExpr{Op: parser.AVG, Expr: agg.Expr, Grouping: agg.Grouping, Without: agg.Without},
		"count": &parser.AggregateExpr{Op: parser.COUNT, Expr: agg.Expr, Grouping: agg.Grouping, Without: agg.Without},
	}
	id := sel.(*parser.VectorSelector).LabelMatchers[0].Value
	mean := fmt.Sprintf("{%s=%q,%s=\"mean\"}", SelectorLabel, id, PartLabel)
	count := fmt.Sprintf("{%s=%q,%s=\"count\"}", SelectorLabel, id, PartLabel)
	grouping := "without"
	outer := append(slices.Clone(agg.Grouping), GroupLabel, PartLabel)
	if !agg.Without {
		grouping, outer = "by", agg.Grouping
	}
	q := fmt.Sprintf("sum %s (%s) (%s * ignoring (%s) (%s / ignoring (%s, %s) group_left () sum without (%s, %s) (%s)))",
		grouping, strings.Join(outer, ", "), mean, PartLabel, count, GroupLabel, PartLabel, GroupLabel, PartLabel, count)
	e, err := w.pl.parser.ParseExpr(q)
	if err != nil {
		// The planner's own text: it must parse.
		w.plan.Fragments = w.plan.Fragments[:before]
		w.decide(agg, false, "combining avg: "+err.Error())
		return agg, false
	}
	w.decide(agg, true, fmt.Sprintf("avg re-associated (engine.push_down.float_sums: %s): avg and count in each group, the groups' means weighted by their counts summed in the proxy; equal to one avg within float rounding", FloatSumsReassociate))
	return e, true
}

// worthPushing: a fragment must shrink what travels. Without an
// aggregation its answer has as many series as it reads, and the JSON of a
// query answer is larger than the compressed chunks remote read brings, so
// the proxy evaluates it (measured: BenchmarkPushDown).
func worthPushing(n parser.Expr) bool {
	agg := false
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if _, ok := n.(*parser.AggregateExpr); ok {
			agg = true
		}
		return nil
	})
	return agg
}

// readsData reports whether n reads any series.
func readsData(n parser.Node) bool {
	found := false
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if _, ok := n.(*parser.VectorSelector); ok {
			found = true
		}
		return nil
	})
	return found
}

// local reports whether every output series of n is computed from the
// series of one group only, and carries the disjointness label: then the
// groups' answers, side by side, are n's answer.
func (w *walker) local(n parser.Expr) (ok bool, why string) {
	if inner, ok := wrapped(n); ok {
		return w.local(inner)
	}
	switch e := n.(type) {
	case *parser.VectorSelector, *parser.MatrixSelector:
		return true, ""
	case *parser.NumberLiteral, *parser.StringLiteral:
		return true, ""
	case *parser.Call:
		if why, bad := notLocal[e.Func.Name]; bad {
			return false, e.Func.Name + " " + why
		}
		if len(e.Args) == 0 {
			return false, e.Func.Name + "() reads no series"
		}
		if labelArgs[e.Func.Name] {
			for _, a := range e.Args[1:] {
				if s, ok := a.(*parser.StringLiteral); ok && slices.Contains(w.groupLabels, s.Val) {
					return false, fmt.Sprintf("%s names group label %q, which the backends do not store", e.Func.Name, s.Val)
				}
			}
		}
		for _, a := range e.Args {
			if ok, why := w.local(a); !ok {
				return false, why
			}
		}
		return true, ""
	case *parser.AggregateExpr:
		if e.Op == parser.TOPK || e.Op == parser.BOTTOMK {
			return false, fmt.Sprintf("%s inside a pushed part picks among tied series by the backend's order, which no check here can see", e.Op)
		}
		if e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO {
			// limitk picks by input order, limit_ratio by a hash of the
			// whole label set: on a backend, series lack the labels the
			// proxy adds, so both pick other series.
			return false, fmt.Sprintf("%s picks series by their order or a hash of their labels, which differ on the backends", e.Op)
		}
		if e.Param != nil {
			if ok, why := w.constant(e.Param); !ok {
				return false, why
			}
			if s, ok := e.Param.(*parser.StringLiteral); ok && slices.Contains(w.groupLabels, s.Val) {
				return false, fmt.Sprintf("%s names group label %q", e.Op, s.Val)
			}
		}
		if ok, why := w.local(e.Expr); !ok {
			return false, why
		}
		if !keepsLabel(e.Grouping, e.Without, w.label) {
			return false, fmt.Sprintf("%s's grouping drops %q: its groups span backend groups", e.Op, w.label)
		}
		return true, ""
	case *parser.BinaryExpr:
		lv, rv := e.LHS.Type() != parser.ValueTypeScalar, e.RHS.Type() != parser.ValueTypeScalar
		switch {
		case lv && rv:
			m := e.VectorMatching
			if m != nil && !keepsLabel(m.MatchingLabels, !m.On, w.label) {
				return false, fmt.Sprintf("%s matches series across groups: its matching drops %q", e.Op, w.label)
			}
			for _, l := range w.groupLabels {
				// The proxy shows a group label on every series the
				// backends do not store it on; where one side still has
				// it and the other does not, the proxy's matching sees a
				// difference the backends' does not.
				if matchesOn(m, l) && (keepsName(e.LHS, l) != keepsName(e.RHS, l) || mayKeep(e.LHS, l) != mayKeep(e.RHS, l)) {
					return false, fmt.Sprintf("%s matches on group label %q, which one side has and the other not: the backends, which do not store it, would match series the proxy does not", e.Op, l)
				}
			}
		case lv:
			if ok, why := w.constant(e.RHS); !ok {
				return false, why
			}
		case rv:
			if ok, why := w.constant(e.LHS); !ok {
				return false, why
			}
		}
		if ok, why := w.local(e.LHS); !ok {
			return false, why
		}
		return w.local(e.RHS)
	default:
		return false, fmt.Sprintf("%T is not pushed", n)
	}
}

// constant reports whether a scalar operand reads no series (so each group
// computes the same value).
func (w *walker) constant(n parser.Expr) (ok bool, why string) {
	if readsData(n) {
		return false, "a scalar operand reads series of every group: " + n.String()
	}
	bad := ""
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if c, ok := n.(*parser.Call); ok && c.Func.Name != "time" && c.Func.Name != "pi" && len(c.Args) == 0 {
			bad = c.Func.Name
		}
		return nil
	})
	if bad != "" {
		return false, bad + "() depends on the evaluation"
	}
	return true, ""
}

func keepsLabel(grouping []string, without bool, label string) bool {
	return slices.Contains(grouping, label) != without
}

// keeps lists the group label names that n's output series carry.
func (w *walker) keeps(n parser.Expr) []string {
	var out []string
	for _, l := range w.allLabels {
		if keepsName(n, l) {
			out = append(out, l)
		}
	}
	return out
}

// keepsName reports whether every output series of n carries label l of
// its input series (for the node types local accepts).
func keepsName(n parser.Expr, l string) bool { return keeps(n, l, false) }

// mayKeep reports whether some output series of n may carry label l of its
// input series: an `or` answers series of either side as they are.
func mayKeep(n parser.Expr, l string) bool { return keeps(n, l, true) }

// matchesOn reports whether a vector matching compares label l.
func matchesOn(m *parser.VectorMatching, l string) bool {
	if m == nil {
		return true
	}
	return slices.Contains(m.MatchingLabels, l) == m.On
}

// keeps is keepsName (some false) or mayKeep (some true).
func keeps(n parser.Expr, l string, some bool) bool {
	keepsName := func(n parser.Expr, l string) bool { return keeps(n, l, some) }
	if inner, ok := wrapped(n); ok {
		return keepsName(inner, l)
	}
	switch e := n.(type) {
	case *parser.VectorSelector, *parser.MatrixSelector:
		return true
	case *parser.Call:
		for _, a := range e.Args {
			if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
				return keepsName(a, l)
			}
		}
		return false
	case *parser.AggregateExpr:
		if selects[e.Op] {
			// Picks series among its input, labels and all.
			return keepsName(e.Expr, l)
		}
		return keepsLabel(e.Grouping, e.Without, l) && keepsName(e.Expr, l)
	case *parser.BinaryExpr:
		lv, rv := e.LHS.Type() == parser.ValueTypeVector, e.RHS.Type() == parser.ValueTypeVector
		if !lv {
			return keepsName(e.RHS, l)
		}
		if !rv {
			return keepsName(e.LHS, l)
		}
		m := e.VectorMatching
		switch {
		case e.Op.IsSetOperator():
			// or/unless/and answer series of either side as they are.
			if some {
				return keepsName(e.LHS, l) || keepsName(e.RHS, l)
			}
			return keepsName(e.LHS, l) && keepsName(e.RHS, l)
		case m == nil || m.Card == parser.CardOneToOne:
			return (m == nil || keepsLabel(m.MatchingLabels, !m.On, l)) && keepsName(e.LHS, l)
		case m.Card == parser.CardOneToMany:
			return keepsName(e.RHS, l) || slices.Contains(m.Include, l)
		default:
			return keepsName(e.LHS, l) || slices.Contains(m.Include, l)
		}
	}
	return false
}

// fragment makes the fragment for node (whose pushed form is pushed) and
// returns the selector standing for it; false (with the decision recorded)
// when some group cannot be asked exactly.
func (w *walker) fragment(node, pushed parser.Expr, combined bool) (parser.Expr, bool) {
	f := &Fragment{ID: strconv.Itoa(len(w.plan.Fragments) + 1), Expr: pushed, Combined: combined}
	for _, name := range w.allLabels {
		if slices.Contains(w.groupLabels, name) && mayKeep(pushed, name) && !keepsName(pushed, name) {
			// Some output series carry it, some not: the proxy cannot
			// add it back to exactly those.
			w.decide(node, false, fmt.Sprintf("some series of the answer keep group label %q and some do not", name))
			return nil, false
		}
	}
	for _, name := range w.keeps(pushed) {
		if name == w.label {
			f.Keep = append(f.Keep, name)
			continue
		}
		if !slices.Contains(w.groupLabels, name) {
			continue // stored on the series: the backend's answer has it
		}
		// Another label the proxy adds: where a series stores its own
		// value, that value wins, and the planner cannot see which do.
		w.decide(node, false, fmt.Sprintf("the answer keeps group label %q, whose stored values only the backends know", name))
		return nil, false
	}
	for _, g := range w.groups {
		q, skipped, err := w.pl.groupQuery(pushed, g, w.groupLabels, w.policy)
		if err != nil {
			w.decide(node, false, err.Error())
			return nil, false
		}
		gq := GroupQuery{Group: g, Query: q, Skipped: skipped}
		if skipped == "" {
			gq.Probe, gq.Mixed, err = w.pl.probe(q, g, w.label, sensitiveToStored(pushed, w.groupLabels))
			if err != nil {
				w.decide(node, false, err.Error())
				return nil, false
			}
		}
		f.Queries = append(f.Queries, gq)
	}
	f.Recheck = recheckable(pushed, w.policy)
	w.plan.Fragments = append(w.plan.Fragments, f)
	return &parser.VectorSelector{
		LabelMatchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, SelectorLabel, f.ID)},
		PosRange:      node.PositionRange(),
	}, true
}
