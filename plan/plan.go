// Package plan decides which parts of a PromQL query the backends may
// evaluate themselves (push-down) and rewrites the query so that Prometheus'
// own engine, in the proxy, evaluates the rest over their answers.
//
// A subtree is pushed only where the answer is provably the one the proxy
// would compute: the groups hold disjoint series (a label every series of a
// group carries, with a distinct value per group), every pushed selector
// carries the tenant's rule, and the operations combining groups are exact
// (table below; topk and bottomk where no tie decides). Only under
// Config.FloatSums reassociate are sum and avg combined too, equal to one
// evaluation within float rounding. Everything else is evaluated as
// before; every decision carries its reason (Plan.Explain).
package plan

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Config is the `engine.push_down` section.
type Config struct {
	// Enabled turns push-down on (the default). Off, every query is
	// evaluated in the proxy.
	Enabled bool `yaml:"enabled"`
	// Label, when set, is the only group label accepted as proof that the
	// groups are disjoint; empty accepts any label every group has with
	// distinct values.
	Label string `yaml:"label"`
	// FloatSums says whether sum and avg may be combined across groups:
	// FloatSumsReassociate (default) pushes them, equal to one evaluation
	// within float rounding only; FloatSumsExact keeps them in the proxy.
	FloatSums FloatSums `yaml:"float_sums"`
}

// FloatSums is how the planner treats sums of floats across groups.
type FloatSums string

const (
	// FloatSumsExact: sum and avg are not combined across groups, so every
	// pushed answer is bit for bit the one of a single evaluation.
	FloatSumsExact FloatSums = "exact"
	// FloatSumsReassociate: sum is combined as the sum of the groups'
	// partial sums, avg as the mean of the groups' means weighted by their
	// counts. Float addition is not associative, so the answer may differ
	// from a single evaluation in the last bits.
	FloatSumsReassociate FloatSums = "reassociate"
)

// DefaultConfig is what no `engine.push_down` section means: push-down on,
// sums and means combined across groups within float rounding. Groups that
// are not provably disjoint, releases outside the compatibility table and
// everything else the planner cannot prove are still evaluated in the proxy.
func DefaultConfig() Config {
	return Config{Enabled: true, FloatSums: FloatSumsReassociate}
}

// Validate refuses unknown values. A Config built in code without
// FloatSums means FloatSumsExact.
func (c *Config) Validate() error {
	switch c.FloatSums {
	case "":
		c.FloatSums = FloatSumsExact
	case FloatSumsExact, FloatSumsReassociate:
	default:
		return fmt.Errorf("engine.push_down.float_sums: %q is neither %q nor %q", c.FloatSums, FloatSumsExact, FloatSumsReassociate)
	}
	return nil
}

// Group is what the planner needs to know of a backend group: its name and
// the labels the proxy puts on every series it returns from it (external
// labels, configured group labels). The backends do not store them, so a
// pushed query must not mention them.
type Group struct {
	Name   string
	Labels labels.Labels
	// LabelsAdded: the backends do not store Labels; the proxy adds them
	// to series that lack them (external labels). Otherwise the series
	// store them and a pushed query may name them.
	LabelsAdded bool
	// IsReplicaLabel (may be nil) tells the labels dropped from every
	// answer of the group: a query naming one is not pushed.
	IsReplicaLabel func(name string) bool
}

// Groups is the consumer-side view of discovery the planner reads.
type Groups interface {
	PlanGroups() []Group
}

// SelectorLabel is the label of the synthetic selector that stands for a
// pushed fragment in the rewritten query; its value is the fragment's ID.
const SelectorLabel = "__pushdown__"

// GroupLabel tells apart the partial answers of different groups to a
// combined aggregation, so Prometheus' merge does not take them for one
// series; the outer aggregation drops it.
const GroupLabel = "__pushdown_group__"

// PartLabel tells apart the parts of one fragment's answer (an avg's mean
// and count), selected by {__pushdown__="<id>",__pushdown_part__="<part>"}.
const PartLabel = "__pushdown_part__"

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

// Fragment is a subtree the backends evaluate.
type Fragment struct {
	ID string
	// Expr is the subtree as written (tenant rules not yet added).
	Expr parser.Expr
	// Combined: the outer aggregation combines the groups' answers, told
	// apart by GroupLabel.
	Combined bool
	// Keep are the group label names the fragment's answer keeps: the
	// proxy adds the group's values, as it would on a series read from it.
	Keep []string
	// Queries holds, per group asked, the query sent to it.
	Queries []GroupQuery
	// Parts, when set, names the parts of the answer (by PartLabel) and
	// what each stands for, for explain output.
	Parts map[string]parser.Expr
	// Ranked, when set, makes the answer usable only where it passes
	// Ranked.Check: a topk or bottomk combined across groups.
	Ranked *Ranked
	// Recheck: the answer's series carry, unchanged from their inputs,
	// every label the tenant's rules name, so each must pass the policy
	// (the group's labels added where a series lacks them, as the proxy
	// shows it) or the answer is not used. Where an aggregation or
	// function removes such a label, the rules in every pushed selector
	// (checkEnforced) are what keeps the inputs filtered.
	Recheck bool
}

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
		b.Del(append(slices.Clone(r.Grouping), labels.MetricName)...)
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

// GroupQuery is the query one group evaluates, or why it is not asked.
type GroupQuery struct {
	Group   Group
	Query   string
	Skipped string // non-empty: the group holds nothing the tenant may see
	// Refused, set by the executor (which reads the backends' release and
	// flags), says why the group's backends would not evaluate Query as
	// the proxy's engine does: then the query is evaluated in the proxy.
	Refused string
	// Probe must find no series on the group before its answer is used:
	// each set is a pushed selector with the disjointness label required
	// to differ from the group's value. Disjointness is read from the
	// group's labels; the probe proves it for the series the query reads.
	Probe [][]*labels.Matcher
	// Mixed are the further probes for the group labels the fragment's
	// matching or grouping compares (sensitiveToStored): its answer is
	// used only where each finds series on one side at most.
	Mixed []MixedProbe
}

// MixedProbe asks whether the series a fragment reads on a group both
// store the group's own value of a group label (Stored) and lack it
// (Lacking). The proxy shows the value on both; the backend's matching and
// grouping see it on the first only, so two such series that are one
// group or one match in the proxy are two on the backend. A stored value
// other than the group's is apart in both views, and all or none storing
// it makes the two views alike.
type MixedProbe struct {
	Label           string
	Stored, Lacking [][]*labels.Matcher
}

// Decision is one node's fate, for explain output.
type Decision struct {
	Node   string
	Pushed bool
	Reason string
}

// Plan is the rewritten query and how it came about.
type Plan struct {
	// Expr is the query to evaluate in the proxy: pushed fragments replaced
	// by {__pushdown__="<id>"} selectors. It is the input unchanged when
	// nothing is pushed.
	Expr      parser.Expr
	Fragments []*Fragment
	Decisions []Decision
	// Label is the label that made the groups disjoint ("" if none).
	Label string
}

// Pushed reports whether any fragment is evaluated by the backends.
func (p *Plan) Pushed() bool { return len(p.Fragments) > 0 }

// Fragment returns the fragment with the given ID.
func (p *Plan) Fragment(id string) *Fragment {
	for _, f := range p.Fragments {
		if f.ID == id {
			return f
		}
	}
	return nil
}

// String renders the plan as one line, remote(…) standing for a fragment:
// max by (job) (remote(max by (job) (rate(x[5m])))).
func (p *Plan) String() string {
	s := p.Expr.String()
	for _, f := range p.Fragments {
		for name, e := range f.Parts {
			s = strings.ReplaceAll(s, fmt.Sprintf("{%s=%q,%s=%q}", SelectorLabel, f.ID, PartLabel, name), "remote("+e.String()+")")
		}
		s = strings.ReplaceAll(s, fmt.Sprintf("{%s=%q}", SelectorLabel, f.ID), "remote("+f.Expr.String()+")")
	}
	return s
}

// Explain renders the plan for people: what runs where, and why.
func (p *Plan) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan: %s\n", p)
	if p.Label != "" {
		fmt.Fprintf(&b, "groups disjoint by label %q\n", p.Label)
	}
	for _, f := range p.Fragments {
		fmt.Fprintf(&b, "fragment %s (combined=%v, keeps %v, answer re-checked against the tenant's rules=%v):\n", f.ID, f.Combined, f.Keep, f.Recheck)
		for _, q := range f.Queries {
			if q.Skipped != "" {
				fmt.Fprintf(&b, "  %s: not asked: %s\n", q.Group.Name, q.Skipped)
				continue
			}
			fmt.Fprintf(&b, "  %s: %s\n", q.Group.Name, q.Query)
			if q.Refused != "" {
				fmt.Fprintf(&b, "  %s: refused, so the whole query is evaluated in the proxy: %s\n", q.Group.Name, q.Refused)
			}
		}
	}
	for _, d := range p.Decisions {
		verb := "kept in proxy"
		if d.Pushed {
			verb = "pushed"
		}
		fmt.Fprintf(&b, "%s: %s: %s\n", verb, d.Node, d.Reason)
	}
	return b.String()
}

// Planner makes plans. It is safe for concurrent use.
type Planner struct {
	cfg    Config
	parser parser.Parser
}

// New returns a planner. p must be the parser the proxy evaluates with, so a
// pushed query parses the same on the way back.
func New(cfg Config, p parser.Parser) *Planner {
	return &Planner{cfg: cfg, parser: p}
}

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

// Plan decides for expr under policy over groups. It never fails: what it
// cannot prove is evaluated in the proxy, with the reason in Decisions.
func (pl *Planner) Plan(expr parser.Expr, groups []Group, policy *tenancy.Policy) *Plan {
	p := &Plan{Expr: expr}
	if !pl.cfg.Enabled {
		p.Decisions = append(p.Decisions, Decision{Node: expr.String(), Reason: "push-down is off (engine.push_down.enabled)"})
		return p
	}
	label, why := Disjoint(groups, pl.cfg.Label)
	if label == "" {
		p.Decisions = append(p.Decisions, Decision{Node: expr.String(), Reason: why})
		return p
	}
	p.Label = label
	replica := func(name string) bool {
		for _, g := range groups {
			if g.IsReplicaLabel != nil && g.IsReplicaLabel(name) {
				return true
			}
		}
		return false
	}
	if why := reserved(expr, replica); why != "" {
		p.Decisions = append(p.Decisions, Decision{Node: expr.String(), Reason: why})
		return p
	}
	w := &walker{pl: pl, plan: p, groups: groups, policy: policy, label: label}
	for _, g := range groups {
		if !g.LabelsAdded {
			continue // stored labels: the backends evaluate matchers on them
		}
		g.Labels.Range(func(l labels.Label) {
			if !slices.Contains(w.groupLabels, l.Name) {
				w.groupLabels = append(w.groupLabels, l.Name)
			}
		})
	}
	sort.Strings(w.groupLabels)
	for _, g := range groups {
		g.Labels.Range(func(l labels.Label) {
			if !slices.Contains(w.allLabels, l.Name) {
				w.allLabels = append(w.allLabels, l.Name)
			}
		})
	}
	sort.Strings(w.allLabels)
	p.Expr = w.rewrite(expr)
	return p
}

// reserved refuses queries that name the planner's own labels: the proxy
// would answer such a selector from a fragment.
// Replica labels are refused too: answers drop them, backends store them.
func reserved(expr parser.Expr, replica func(string) bool) string {
	why := ""
	bad := func(name string) bool {
		return name == SelectorLabel || name == GroupLabel || name == PartLabel || replica(name)
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch e := n.(type) {
		case *parser.VectorSelector:
			for _, m := range e.LabelMatchers {
				if bad(m.Name) {
					why = "the query names label " + m.Name + ", reserved for push-down or a replica label"
				}
			}
		case *parser.AggregateExpr:
			if slices.ContainsFunc(e.Grouping, bad) {
				why = "the query groups by a label reserved for push-down or a replica label"
			}
		case *parser.Call:
			for _, a := range e.Args {
				if s, ok := a.(*parser.StringLiteral); ok && bad(s.Val) {
					why = "the query names label " + s.Val + ", reserved for push-down or a replica label"
				}
			}
		}
		return nil
	})
	return why
}

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
		e2 := *e
		e2.Expr = w.rewrite(e.Expr)
		if e.Param != nil {
			e2.Param = w.rewrite(e.Param)
		}
		return &e2
	case *parser.BinaryExpr:
		e2 := *e
		e2.LHS, e2.RHS = w.rewrite(e.LHS), w.rewrite(e.RHS)
		return &e2
	case *parser.Call:
		if _, bad := notLocal[e.Func.Name]; bad && strings.HasPrefix(e.Func.Name, "absent") {
			// absent reads its argument's selector matchers: a synthetic
			// selector there would change its labels.
			return n
		}
		e2 := *e
		e2.Args = make(parser.Expressions, len(e.Args))
		for i, a := range e.Args {
			e2.Args[i] = w.rewrite(a)
		}
		return &e2
	case *parser.ParenExpr:
		e2 := *e
		e2.Expr = w.rewrite(e.Expr)
		return &e2
	case *parser.UnaryExpr:
		e2 := *e
		e2.Expr = w.rewrite(e.Expr)
		return &e2
	case *parser.SubqueryExpr, *parser.MatrixSelector, *parser.VectorSelector,
		*parser.NumberLiteral, *parser.StringLiteral, *parser.StepInvariantExpr, *parser.DurationExpr:
		// A subquery's inside is evaluated at other instants than the
		// query's steps: only whole (above) is it pushed.
		return n
	default:
		panic(fmt.Sprintf("plan: unknown node %T", n))
	}
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
	if !agg.Without && slices.Contains(agg.Grouping, labels.MetricName) {
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
func (w *walker) local(n parser.Expr) (bool, string) {
	switch e := n.(type) {
	case *parser.VectorSelector, *parser.MatrixSelector:
		return true, ""
	case *parser.NumberLiteral, *parser.StringLiteral:
		return true, ""
	case *parser.ParenExpr:
		return w.local(e.Expr)
	case *parser.UnaryExpr:
		return w.local(e.Expr)
	case *parser.SubqueryExpr:
		return w.local(e.Expr)
	case *parser.StepInvariantExpr:
		return w.local(e.Expr)
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
func (w *walker) constant(n parser.Expr) (bool, string) {
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
	switch e := n.(type) {
	case *parser.VectorSelector, *parser.MatrixSelector:
		return true
	case *parser.ParenExpr:
		return keepsName(e.Expr, l)
	case *parser.UnaryExpr:
		return keepsName(e.Expr, l)
	case *parser.SubqueryExpr:
		return keepsName(e.Expr, l)
	case *parser.StepInvariantExpr:
		return keepsName(e.Expr, l)
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
			if m.Name == labels.MetricName || !keepsName(n, m.Name) || writesLabel(n, m.Name) {
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
			vs.LabelMatchers = append(own, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"), labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, ""))
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
		if m.Name == labels.MetricName {
			// x{__name__=~"x|y"} does not parse: all in braces.
			out.Name = ""
		}
	}
	return &out
}

func namesOneMetric(ms []*labels.Matcher) bool {
	return slices.ContainsFunc(ms, func(m *labels.Matcher) bool {
		return m.Name == labels.MetricName && m.Type == labels.MatchEqual && m.Value != ""
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
		c := *n
		c.Args = slices.Clone(n.Args)
		for i, a := range c.Args {
			var err error
			if c.Args[i], err = rec(a); err != nil {
				return nil, err
			}
		}
		return &c, nil
	case *parser.AggregateExpr:
		c := *n
		var err error
		if c.Expr, err = rec(n.Expr); err != nil {
			return nil, err
		}
		if n.Param != nil {
			if c.Param, err = rec(n.Param); err != nil {
				return nil, err
			}
		}
		return &c, nil
	case *parser.BinaryExpr:
		c := *n
		var err error
		if c.LHS, err = rec(n.LHS); err != nil {
			return nil, err
		}
		if c.RHS, err = rec(n.RHS); err != nil {
			return nil, err
		}
		return &c, nil
	case *parser.ParenExpr:
		c := *n
		var err error
		c.Expr, err = rec(n.Expr)
		return &c, err
	case *parser.UnaryExpr:
		c := *n
		var err error
		c.Expr, err = rec(n.Expr)
		return &c, err
	case *parser.SubqueryExpr:
		c := *n
		var err error
		c.Expr, err = rec(n.Expr)
		return &c, err
	case *parser.StepInvariantExpr:
		c := *n
		var err error
		c.Expr, err = rec(n.Expr)
		return &c, err
	case *parser.NumberLiteral, *parser.StringLiteral, *parser.DurationExpr:
		return n, nil
	default:
		panic(fmt.Sprintf("plan: unknown node %T", n))
	}
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
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual && m.Value == "" {
			return true
		}
	}
	return false
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
