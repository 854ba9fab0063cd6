package plan

// topk and bottomk combined across groups, used only where no tie decides.

import (
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Ranked is a topk(k) or bottomk(k) the proxy takes over the groups'
// topk(k+1) (bottomk(k+1)) answers. Which series one Prometheus picks among
// ties at the k-th value depends on the order its TSDB yields them, which
// the proxy cannot know; so the answer is used only where, at every step
// and in every output group, the k-th and (k+1)-th values of the groups'
// answers differ (or there are at most k). Then the k series picked are
// the same whatever the order: any series no group answered is at most
// (bottomk: at least) its group's (k+1)-th, so strictly beyond the k-th.
type Ranked struct {
	K        int
	Bottom   bool
	Grouping []string
	Without  bool
}

// Key is the output group a series competes in.
func (r *Ranked) Key(ls labels.Labels) string {
	b := labels.NewBuilder(ls)
	if r.Without {
		b.Del(append(slices.Clone(r.Grouping), model.MetricNameLabel)...)
	} else {
		b.Keep(r.Grouping...)
	}
	return b.Labels().String()
}

// Decided reports whether the values competing in one output group at one
// step make the same k series win in any order: at most k of them, or the
// k-th and (k+1)-th best differ. NaN (which Prometheus ranks apart) makes
// it undecided.
func (r *Ranked) Decided(vals []float64) bool {
	if len(vals) <= r.K {
		return true
	}
	if slices.ContainsFunc(vals, math.IsNaN) {
		return false
	}
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	if !r.Bottom {
		slices.Reverse(sorted)
	}
	return sorted[r.K-1] != sorted[r.K]
}

// maxRankedK bounds the k of a combined topk: each group answers k+1
// series per output group and step.
const maxRankedK = 10000

// pushRanked combines topk(k) as topk(k) of the groups' topk(k+1) (and
// bottomk alike), used only where Ranked.Check proves no tie decides.
func (w *walker) pushRanked(agg *parser.AggregateExpr) (parser.Expr, bool) {
	k, ok := constantK(agg.Param)
	if !ok {
		w.decide(agg, false, fmt.Sprintf("%s's k is not a whole number from 1 to %d written in the query", agg.Op, maxRankedK))
		return agg, false
	}
	inner := &parser.AggregateExpr{Op: agg.Op, Expr: agg.Expr, Param: &parser.NumberLiteral{Val: float64(k + 1)}, Grouping: agg.Grouping, Without: agg.Without}
	before := len(w.plan.Fragments)
	sel, ok := w.fragment(agg, inner, false)
	if !ok {
		return agg, false
	}
	if !slices.Contains(w.plan.Fragments[before].Keep, w.label) && slices.Contains(w.groupLabels, w.label) {
		// The groups' answers must stay told apart by the label.
		w.plan.Fragments = w.plan.Fragments[:before]
		w.decide(agg, false, fmt.Sprintf("%s's input drops %q", agg.Op, w.label))
		return agg, false
	}
	w.plan.Fragments[before].Ranked = &Ranked{K: k, Bottom: agg.Op == parser.BOTTOMK, Grouping: agg.Grouping, Without: agg.Without}
	w.decide(agg, true, fmt.Sprintf("%s combines: %s(%d) in each group, %s(%d) of their answers, used only where no tie at the %d-th value decides (checked at every step)", agg.Op, agg.Op, k+1, agg.Op, k, k))
	return &parser.AggregateExpr{Op: agg.Op, Expr: sel, Param: agg.Param, Grouping: agg.Grouping, Without: agg.Without, PosRange: agg.PosRange}, true
}

// constantK reads a topk's k written as a number.
func constantK(e parser.Expr) (int, bool) {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			break
		}
		e = p.Expr
	}
	n, ok := e.(*parser.NumberLiteral)
	if !ok || n.Val != float64(int(n.Val)) || n.Val < 1 || n.Val > maxRankedK {
		return 0, false
	}
	return int(n.Val), true
}
