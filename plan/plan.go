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
//
// Proof obligations of a fragment sent to group g, each checked by code
// (file) and by tests (in brackets); where one cannot be shown, the
// fragment is evaluated in the proxy with the reason:
//
//  1. Disjointness (disjoint.go): every series g can return carries the
//     disjointness label with g's value. The labels prove it for the
//     groups; the probe, sent beside the query, proves it for the series
//     the query reads (a stored value that differs refuses). Where a
//     matching or grouping compares a group label, the mixed probe refuses
//     series storing g's own value beside series lacking it, which match
//     and group apart on a backend that does not store the label; either
//     side may be folded into the query and the other asked only when it
//     finds series (the executor learns which side is empty).
//     [TestNotDisjointRefused, TestStoredLabelsProbe, TestFuzzFoundRefusals,
//     TestPushDown/NotDisjoint, the fuzzer]
//  2. Tenancy (tenantrules.go): every pushed selector carries each tenant
//     rule in the form g evaluates on its stored series: a matcher on a
//     label the proxy adds is rewritten as remote read rewrites it
//     (discovery.OnStoredData), never dropped, or the group is refused;
//     checkEnforced re-parses the text to be sent. The answer is re-checked
//     against the policy where it keeps every label the rules name
//     (recheckable); where an aggregation removed one, the rules in every
//     selector are what filtered its inputs. [TestTenantRulesInEverySelector,
//     TestRuleOnGroupLabelKeptForStoredValues, TestCheckEnforcedCatchesMissingRule,
//     TestRecheckable, TestPushDownStoredGroupLabels, the fuzzer's tenants]
//  3. Semantics (pushable.go; the release table is the executor's,
//     engine/releases.go): g's engine evaluates every node of the fragment
//     as the proxy's would over the same series; nodes that read labels
//     the backends do not store (label_replace of a group label, matching
//     on a group label one side lost), or pick by input order or a hash of
//     all labels (limitk, limit_ratio, topk inside a part), are not pushed.
//     Where g's release or flags would evaluate the fragment differently,
//     the executor evaluates it with the proxy's engine over g's series as
//     g stores them (engine/groupeval.go): the same text over the same
//     input, so obligations 1, 2, 4 and 5 hold as for g's backend.
//     [TestPlans, TestKeeps, TestFuzzFoundRefusals, TestEvaluatesAsProxy,
//     TestPushDown/OtherEngineRelease, TestPushDown/OnlyOtherEngineRelease,
//     TestPushDown/LTS, TestPromQLScriptsThroughFanout/as_group_data]
//  4. Combination (pushable.go, ranked.go): the operation combining the
//     groups' answers is distributive (the table below), ranked with a tie
//     check, or re-associative under FloatSumsReassociate.
//     [TestPlans, TestPlansReassociate, TestRankedDecided,
//     TestReassociatedSumsWithinRounding]
//  5. Cost (the executor, engine/pushdown.go and pushanswers.go): the answer is charged to the
//     query's budgets as it is decoded, each selector's span is checked
//     before the query is sent, answers stay sparse, and a fallback reads
//     through the same budget. [TestPushedAnswersStaySparse,
//     TestSelectorSpans, TestQueryAnswerChargedAsItArrives,
//     TestPushDownQueryLength, TestPushedAnswerMemory]
//  6. Worth (pushable.go): a part without an aggregation is not pushed
//     (its answer is as large as what it reads). The executor
//     (engine/plancache.go) also keeps what each push of a plan cost, by
//     the backends' own statistics: a query whose last push read fewer
//     than Config.MinSamplesPerPoint samples per point answered is
//     evaluated in the proxy for a while, with the reason; so is one whose
//     every part the proxy evaluated over the groups' data, reading too
//     little for the split to pay. This decides cost only; the proof is
//     the same either way. [TestPlans, TestPushDown/Disjoint/CostChoice,
//     TestNotWorthSplitInProxy]
package plan

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/enum"
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
	// MinSamplesPerPoint: a query whose last pushed evaluation (within 5
	// minutes) read fewer samples on the backends than this many per
	// point of their answers is evaluated in the proxy instead, where
	// reading the series costs less than their answers. 0 pushes whatever
	// the planner proves.
	MinSamplesPerPoint float64 `yaml:"min_samples_per_point"`
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
// are not provably disjoint and everything else the planner cannot prove
// are still evaluated in the proxy; a group whose backend's release or
// flags evaluate a part differently has that part evaluated by the proxy
// over the group's data.
func DefaultConfig() Config {
	return Config{Enabled: true, FloatSums: FloatSumsReassociate, MinSamplesPerPoint: DefaultMinSamplesPerPoint}
}

// DefaultMinSamplesPerPoint is engine.push_down.min_samples_per_point's
// default. On the small dashboard set (4,464 series in three shards, 15 s
// steps) the two panels that were slower pushed than not read 12 samples
// per point answered (a histogram's buckets by job for one namespace, an
// avg of 12 series per group); a topk read 4.4; every panel reading 46 or
// more per point was faster pushed.
const DefaultMinSamplesPerPoint = 16

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate refuses unknown values, naming the key within the section; it
// changes nothing. An empty FloatSums (a Config built in code, or
// `float_sums: ""`) means FloatSumsExact: only FloatSumsReassociate
// combines sums.
func (c Config) Validate() error {
	if c.MinSamplesPerPoint < 0 || math.IsNaN(c.MinSamplesPerPoint) || math.IsInf(c.MinSamplesPerPoint, 0) {
		return fmt.Errorf("min_samples_per_point: %v is not a finite number of at least 0", c.MinSamplesPerPoint)
	}
	if c.FloatSums == "" {
		return nil
	}
	if err := enum.OneOf(c.FloatSums, FloatSumsExact, FloatSumsReassociate); err != nil {
		return fmt.Errorf("float_sums: %w", err)
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

// GroupQuery is the query one group evaluates, or why it is not asked.
type GroupQuery struct {
	Group   Group
	Query   string
	Skipped string // non-empty: the group holds nothing the tenant may see
	// InProxy, set by the executor (which reads the backends' release and
	// flags), says why the group's backends would not evaluate Query as
	// the proxy's engine does: then the proxy's engine evaluates Query
	// over the group's data, read by remote read as the backend stores it.
	InProxy string
	// Refused, set by the executor, says why the group cannot be asked at
	// all (its release could not be read): the whole query is then
	// evaluated in the proxy.
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
			if q.InProxy != "" {
				fmt.Fprintf(&b, "  %s: evaluated by the proxy over this group's data, beside the other groups: %s\n", q.Group.Name, q.InProxy)
			}
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
