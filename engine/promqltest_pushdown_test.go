package engine

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
)

// Push-down needs a label on every series that tells the groups apart (it
// is what proves them disjoint), and the scripts' series and expected
// answers have none: an answer that keeps it differs from the script's.
// So the scripts' data and queries are run differentially instead: every
// series of a script goes whole to one of three groups and carries
// shardLabel=gN, the reference is one engine over the union, and each
// query the planner pushes is evaluated as the proxy would (each fragment
// on its group's data, served through fragmentSeries) and compared with
// the reference: bit for bit with float_sums exact, within
// reassocTolerance with reassociate.

const shardLabel = "zz_shard"

// notReassociable lists evals (file:line of the eval line, and its text)
// whose answer float_sums: reassociate cannot give within reassocTolerance,
// with the reason. Each must be found and must differ beyond it, so the
// list cannot hide anything else.
var notReassociable = map[string]struct{ eval, why string }{
	"aggregators.test:722": {`eval instant at 1m sum(data{test="ten"})`, cancellation},
	"aggregators.test:730": {`eval instant at 1m avg(data{test="ten"})`, cancellation},
}

// cancellation: the inputs are 2, 8, 1e100 and -1e100. One Prometheus'
// compensated sum keeps 2 and 8 beside 1e100 and answers 10; a group's
// partial sum is one float64, 1e100 with its compensation rounded away, and
// the proxy adds ±1e100: 0. The difference is within the bound the README
// states (7·2⁻⁵³·Σ|x| ≈ 1.6e85), which relative to an answer of 10 is
// none.
const cancellation = "cancellation of ±1e100: a group's partial sum rounds the compensation of the small terms away"

var (
	patScriptLoad    = regexp.MustCompile(`^load(?:_with_nhcb)?\s+(.+?)$`)
	patScriptInstant = regexp.MustCompile(`^eval(?:_(?:fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$`)
	patScriptRange   = regexp.MustCompile(`^eval(?:_(?:fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$`)
)

// scriptSegment is the data loaded between two clears, as load text for
// each group (without the shard label) and for the union (with it).
type scriptSegment struct {
	groups [3]strings.Builder
	union  strings.Builder
	stores [3]storage.Storage
	ref    storage.Storage
}

func (s *scriptSegment) load(t *testing.T) {
	if s.ref != nil {
		return
	}
	for i := range s.stores {
		if s.groups[i].Len() == 0 {
			s.stores[i] = teststorage.New(t)
			continue
		}
		s.stores[i] = promqltest.LoadedStorage(t, s.groups[i].String())
	}
	s.ref = promqltest.LoadedStorage(t, s.union.String())
}

// addLoad adds a load command (its header line and series lines).
// Series that cannot be rendered (native histograms, start timestamps,
// names the proxy's parser does not read) are left out of the groups and
// the reference alike, so the comparison stays one of equals.
func (s *scriptSegment) addLoad(header string, series []string, st *scriptStats) {
	for i := range s.groups {
		fmt.Fprintln(&s.groups[i], header)
	}
	fmt.Fprintln(&s.union, header)
	defer func() {
		// A load command ends at a blank line.
		for i := range s.groups {
			fmt.Fprintln(&s.groups[i])
		}
		fmt.Fprintln(&s.union)
	}()
	p := Parser()
next:
	for _, line := range series {
		if strings.Contains(line, "@st") {
			st.droppedSeries["start timestamps (@st lines)"]++
			continue
		}
		ls, vals, err := p.ParseSeriesDesc(line)
		if err != nil {
			st.droppedSeries["the proxy's parser does not read the series"]++
			continue
		}
		var out []string
		for _, v := range vals {
			switch {
			case v.Histogram != nil:
				// A backend's answer holding them is never used: the JSON
				// API renders them lossily.
				st.droppedSeries["native histograms"]++
				continue next
			case v.Omitted:
				out = append(out, "_")
			case value.IsStaleNaN(v.Value):
				out = append(out, "stale")
			case math.IsInf(v.Value, 1):
				out = append(out, "Inf")
			default:
				out = append(out, strconv.FormatFloat(v.Value, 'g', -1, 64))
			}
		}
		g := int(ls.Hash() % 3)
		body := strings.Join(out, " ")

		fmt.Fprintf(&s.groups[g], "  %s %s\n", ls, body)
		withShard := labels.NewBuilder(ls).Set(shardLabel, "g"+strconv.Itoa(g)).Labels()
		fmt.Fprintf(&s.union, "  %s %s\n", withShard, body)
	}
}

type scriptEval struct {
	expr string
	r    evalRange
}

// scriptStats counts what happened to the scripts' evals.
type scriptStats struct {
	comparisonStats
	evals, pushed, ranked  int
	skipped, droppedSeries map[string]int
}

// comparisonStats counts pushed answers compared with the reference.
type comparisonStats struct {
	compared, bitEqual, within int
	maxRel                     float64
}

func TestPromQLScriptsThroughPushDown(t *testing.T) {
	groups := make([]plan.Group, 3)
	for i := range groups {
		groups[i] = plan.Group{Name: "g" + strconv.Itoa(i), Labels: labels.FromStrings(shardLabel, "g"+strconv.Itoa(i)), LabelsAdded: true}
	}
	ng := proxyEngine(t)
	for _, mode := range []plan.FloatSums{plan.FloatSumsExact, plan.FloatSumsReassociate} {
		t.Run(string(mode), func(t *testing.T) {
			planner := plan.New(plan.Config{Enabled: true, FloatSums: mode}, Parser())
			st := scriptStats{skipped: map[string]int{}, droppedSeries: map[string]int{}}
			for _, file := range scriptFiles(t) {
				t.Run(filepath.Base(file), func(t *testing.T) {
					runScriptPushDown(t, file, readScript(t, file), ng, planner, groups, mode, &st)
				})
			}
			t.Logf("float_sums %s: %d evals; %d pushed, %d compared (%d values bit-equal, %d within %g, largest relative difference %.3g), %d with a combined topk/bottomk", mode, st.evals, st.pushed, st.compared, st.bitEqual, st.within, reassocTolerance, st.maxRel, st.ranked)
			for why, n := range st.skipped {
				t.Logf("  not compared (%d): %s", n, why)
			}
			for why, n := range st.droppedSeries {
				t.Logf("  series left out of the data (%d): %s", n, why)
			}
			if min := map[plan.FloatSums]int{plan.FloatSumsExact: 50, plan.FloatSumsReassociate: 150}[mode]; st.compared < min {
				t.Errorf("only %d evals pushed and compared: the scripts do not exercise push-down", st.compared)
			}
			if mode == plan.FloatSumsExact && st.within > 0 {
				t.Errorf("%d values differ with float_sums exact", st.within)
			}
		})
	}
}

func runScriptPushDown(t *testing.T, file, script string, ng *PromQL, planner *plan.Planner, groups []plan.Group, mode plan.FloatSums, st *scriptStats) {
	lines := strings.Split(script, "\n")
	seg := &scriptSegment{}
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "clear":
			seg = &scriptSegment{}
		case patScriptLoad.MatchString(l):
			var series []string
			for i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" {
				i++
				series = append(series, strings.TrimSpace(lines[i]))
			}
			seg.addLoad(l, series, st)
		case strings.HasPrefix(l, "eval"):
			ev, err := parseScriptEval(l)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			st.evals++
			if strings.HasPrefix(l, "eval_fail") {
				st.skipped["eval_fail: an error, not an answer"]++
				continue
			}
			key := fmt.Sprintf("%s:%d", filepath.Base(file), i+1)
			if ex, listed := notReassociable[key]; listed && mode == plan.FloatSumsReassociate {
				if ex.eval != l {
					t.Fatalf("%s is %q, not the listed %q", key, l, ex.eval)
				}
				// It must still differ beyond the tolerance, or the
				// entry is stale.
				if compareScriptEval(t, ev, seg, ng, planner, groups, mode, &scriptStats{skipped: map[string]int{}}) == "" {
					t.Errorf("%s %s: listed as not reassociable, yet within the tolerance", key, l)
				}
				st.skipped[ex.why]++
				continue
			}
			if problem := compareScriptEval(t, ev, seg, ng, planner, groups, mode, st); problem != "" {
				t.Errorf("%s %s: %s", key, l, problem)
			}
		}
	}
}

func parseScriptEval(l string) (scriptEval, error) {
	dur := func(s string) (time.Time, error) {
		d, err := model.ParseDuration(s)
		return time.Unix(0, 0).UTC().Add(time.Duration(d)), err
	}
	if m := patScriptInstant.FindStringSubmatch(l); m != nil {
		at := m[1]
		if at == "" {
			at = "0s"
		}
		ts, err := dur(at)
		return scriptEval{expr: m[2], r: evalRange{start: ts, end: ts}}, err
	}
	if m := patScriptRange.FindStringSubmatch(l); m != nil {
		from, err1 := dur(m[1])
		to, err2 := dur(m[2])
		step, err3 := model.ParseDuration(m[3])
		return scriptEval{expr: m[4], r: evalRange{start: from, end: to, step: time.Duration(step)}}, errorsJoin(err1, err2, err3)
	}
	return scriptEval{}, fmt.Errorf("unknown eval")
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// planScriptEval plans one eval; where it is pushed, it loads the
// segment's data and evaluates the reference. ok is false where there is
// nothing to compare (counted in skipped, or not pushed).
func planScriptEval(t *testing.T, ev scriptEval, seg *scriptSegment, ng *PromQL, planner *plan.Planner, groups []plan.Group, pushed *int, skipped map[string]int) (pl *plan.Plan, want promql.Matrix, wantAnnos int, ok bool) {
	expr, err := Parser().ParseExpr(ev.expr)
	if err != nil {
		skipped["the proxy's parser refuses the expression (the scripts enable more syntax)"]++
		return nil, nil, 0, false
	}
	pl = planner.Plan(expr, groups, nil)
	if !pl.Pushed() {
		return nil, nil, 0, false
	}
	*pushed++
	seg.load(t)
	want, wantAnnos, err = evalScript(ng, seg.ref, ev.expr, ev.r)
	if err != nil {
		skipped["the reference fails (the proxy falls back, as it would for the original)"]++
		return nil, nil, 0, false
	}
	return pl, want, wantAnnos, true
}

// compareScriptEval plans one eval and, where it is pushed, compares the
// proxy's way of answering it with the reference's: it says how they
// differ, or "".
func compareScriptEval(t *testing.T, ev scriptEval, seg *scriptSegment, ng *PromQL, planner *plan.Planner, groups []plan.Group, mode plan.FloatSums, st *scriptStats) string {
	pl, want, wantAnnos, ok := planScriptEval(t, ev, seg, ng, planner, groups, &st.pushed, st.skipped)
	if !ok {
		return ""
	}
	answers := map[string][]storage.Series{}
	for _, f := range pl.Fragments {
		for i, gq := range f.Queries {
			m, annos, err := evalScript(ng, seg.stores[i], gq.Query, ev.r)
			switch {
			case err != nil:
				st.skipped["a group's query fails (the proxy falls back)"]++
				return ""
			case annos > 0:
				st.skipped["a group answers with annotations (the proxy falls back)"]++
				return ""
			}
			ans := matrixAnswer(m)
			if ans.Histograms {
				st.skipped["a group answers native histograms (the proxy falls back)"]++
				return ""
			}
			ss, err := fragmentSeries(f, gq.Group, ans, ev.r)
			if err != nil {
				t.Fatalf("%s: fragment %s on %s: %v", ev.expr, f.ID, gq.Group.Name, err)
			}
			answers[f.ID] = append(answers[f.ID], ss...)
		}
	}
	if err := sortDisjoint(answers); err != nil {
		return err.Error() + ", yet the groups are disjoint"
	}
	for _, f := range pl.Fragments {
		if f.Ranked != nil {
			st.ranked++
			if rankedDecided(f, answers[f.ID]) != nil {
				st.skipped["a tie decides a combined topk/bottomk (the proxy falls back)"]++
				return ""
			}
		}
	}
	return st.compareCombined(ng, seg, answers, pl, ev, mode, want, wantAnnos)
}

// compareCombined evaluates the rewritten query over the groups' answers
// and compares it with the reference's answer: bit for bit with exact,
// within reassocTolerance with reassociate. It returns what differs.
func (st *comparisonStats) compareCombined(ng *PromQL, seg *scriptSegment, answers map[string][]storage.Series, pl *plan.Plan, ev scriptEval, mode plan.FloatSums, want promql.Matrix, wantAnnos int) string {
	got, gotAnnos, err := evalScript(ng, &pushedQueryable{Queryable: seg.ref, answers: answers}, pl.Expr.String(), ev.r)
	if err != nil {
		return fmt.Sprintf("the rewritten query fails: %v\nplan %s", err, pl)
	}
	if gotAnnos != wantAnnos {
		// (The groups answered none: what the proxy's part says must be
		// what the reference says.)
		return fmt.Sprintf("%d annotations, reference %d\nplan %s", gotAnnos, wantAnnos, pl)
	}
	e, w, rel, diff := compareWithin(want, got, reassocTolerance)
	if diff != "" {
		return fmt.Sprintf("%s\nplan %s", diff, pl)
	}
	if mode == plan.FloatSumsExact && w > 0 {
		return fmt.Sprintf("%d values differ with float_sums exact (largest relative difference %g)\nplan %s", w, rel, pl)
	}
	st.compared++
	st.bitEqual += e
	st.within += w
	st.maxRel = max(st.maxRel, rel)
	return ""
}

// evalScript is evalOn returning errors and the number of annotations.
func evalScript(ng *PromQL, q storage.Queryable, qs string, r evalRange) (promql.Matrix, int, error) {
	var (
		qry promql.Query
		err error
	)
	ctx := context.Background()
	if r.step == 0 {
		qry, err = ng.NewInstantQuery(ctx, q, nil, qs, r.start)
	} else {
		qry, err = ng.NewRangeQuery(ctx, q, nil, qs, r.start, r.end, r.step)
	}
	if err != nil {
		return nil, 0, err
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return nil, 0, res.Err
	}
	switch v := res.Value.(type) {
	case promql.Matrix:
		m := make(promql.Matrix, len(v))
		for i, s := range v {
			m[i] = promql.Series{Metric: s.Metric, Floats: slices.Clone(s.Floats), Histograms: slices.Clone(s.Histograms)}
		}
		return m, len(res.Warnings), nil
	case promql.Vector:
		m := promql.Matrix{}
		for _, s := range v {
			ser := promql.Series{Metric: s.Metric}
			if s.H != nil {
				ser.Histograms = []promql.HPoint{{T: s.T, H: s.H}}
			} else {
				ser.Floats = []promql.FPoint{{T: s.T, F: s.F}}
			}
			m = append(m, ser)
		}
		return m, len(res.Warnings), nil
	case promql.Scalar:
		return promql.Matrix{{Floats: []promql.FPoint{{T: v.T, F: v.V}}}}, len(res.Warnings), nil
	default:
		return nil, 0, fmt.Errorf("%T answer", res.Value)
	}
}

// proxyEngine is the engine as the proxy configures it (the backends are
// Prometheus servers with default flags, evaluating the same way); the
// scripts' own engine enables delayed name removal, which neither does.
func proxyEngine(t *testing.T) *PromQL {
	cfg := DefaultConfig()
	cfg.PushDown.Enabled = false
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ng := NewPromQL(cfg, nil, nil)
	t.Cleanup(func() { _ = ng.Close() })
	return ng
}
