package harness

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"
)

// reassociateReport is a rendered-report fixture with all four uncached
// targets: push-down off, on, and on with re-associated sums.
func reassociateReport() *Report {
	rep := &Report{
		Dataset:  DatasetInfo{Series: 104160, Disjoint: true, Shards: 3},
		Settings: Settings{Concurrency: []int{1, 4}, CachedTarget: TargetPushDown, PhaseBudgetSeconds: 90},
	}
	one := 1.0
	zero := 0.0
	for i, id := range []string{"q01", "q02"} {
		kind := "range"
		if i == 1 {
			kind = "instant"
		}
		q := QueryReport{ID: id, Title: "panel " + id, Expr: "sum(x)", Kind: kind, Series: 1, Points: 1}
		for _, c := range []int{1, 4} {
			q.Results = append(q.Results,
				Result{Phase: PhaseUncached, Target: TargetReference, Concurrency: c, Samples: 3, P50: 100},
				Result{Phase: PhaseUncached, Target: TargetProxy, Concurrency: c, Samples: 3, P50: 140, Ratio: 1.4, AnswersSame: 3},
				Result{Phase: PhaseUncached, Target: TargetPushDown, Concurrency: c, Samples: 3, P50: 110, Ratio: 1.1, AnswersSame: 3,
					PushedDown: &one, FellBack: &zero},
				// Two of three answers off in the last bits, none beyond.
				Result{Phase: PhaseUncached, Target: TargetReassociate, Concurrency: c, Samples: 3, P50: 70 + float64(10*i), Ratio: 0.7 + 0.1*float64(i),
					AnswersSame: 1, AnswersClose: 2, PushedDown: &one, FellBack: &zero},
				Result{Phase: PhaseCold, Target: TargetPushDown, Concurrency: c, Samples: 1, P50: 120, Ratio: 1.2},
				Result{Phase: PhaseWarm, Target: TargetPushDown, Concurrency: c, Samples: 1, P50: 1, Ratio: 0.01},
			)
		}
		rep.Queries = append(rep.Queries, q)
	}
	for _, c := range []int{1, 4} {
		rep.Phases = append(rep.Phases,
			PhaseReport{Phase: PhaseUncached, Target: TargetReference, Concurrency: c},
			PhaseReport{Phase: PhaseUncached, Target: TargetProxy, Concurrency: c, RatioGeomean: 1.4},
			PhaseReport{Phase: PhaseUncached, Target: TargetPushDown, Concurrency: c, RatioGeomean: 1.1},
			PhaseReport{Phase: PhaseUncached, Target: TargetReassociate, Concurrency: c, RatioGeomean: 0.75},
			PhaseReport{Phase: PhaseCold, Target: TargetPushDown, Concurrency: c, RatioGeomean: 1.2},
			PhaseReport{Phase: PhaseWarm, Target: TargetPushDown, Concurrency: c, RatioGeomean: 0.01},
		)
		rep.Summary.PerConcurrency = append(rep.Summary.PerConcurrency, ConcSummary{Concurrency: c,
			UncachedRatio: 1.4, PushDownRatio: 1.1, ReassociateRatio: 0.75,
			UncachedInstantRatio: 1.4, PushDownInstantRatio: 1.1, ReassociateInstantRatio: 0.8,
			PushDownWorstPanel: "q01", PushDownWorstRatio: 1.1, ReassociateWorstPanel: "q02", ReassociateWorstRatio: 0.8,
			PeakRSSProxy: 900 << 20, PeakRSSPushDown: 500 << 20, PeakRSSReassociate: 200 << 20,
			DashboardMs: map[string]float64{"reference": 200, "uncached": 280, "uncached push-down": 220, "uncached reassociate": 150},
			QPS:         map[string]float64{"reference": 10}})
	}
	rep.Memory = []MemoryReport{{Name: "proxy-reassociate-c4", Role: "proxy", Target: TargetReassociate, Concurrency: 4, PeakRSSBytes: 200 << 20}}
	rep.Summary.PeakRSSBackendsSum = 450 << 20
	rep.Summary.PushedPanels = []string{"q01", "q02"}
	rep.Summary.ReassociatePushedPanels = []string{"q01", "q02"}
	rep.Summary.AnswersByTarget = []TargetAnswers{
		{Target: TargetProxy, Checked: 6}, {Target: TargetPushDown, Checked: 6}, {Target: TargetReassociate, Checked: 6, Close: 4}}
	return rep
}

// TestGoalsPerPushDownConfiguration: every uncached goal has a row for
// push-down on and one for reassociate, each met or not by its own
// numbers; the answers of the re-associating proxy are held to the
// tolerance, with bit-equal ones counted apart.
func TestGoalsPerPushDownConfiguration(t *testing.T) {
	r := &runner{opts: Options{Concurrency: []int{1, 4}}}
	summarized := reassociateReport()
	summarized.Summary = Summary{}
	r.summarize(summarized)
	c1 := summarized.Summary.PerConcurrency[0]
	if c1.ReassociateMedianRatio != 0.7 || c1.ReassociateOverOffPanel != "q02" || math.Abs(c1.ReassociateOverOff-80.0/140) > 1e-12 {
		t.Errorf("median %v, slowest against off %s %v; want 0.7 (the lower of two), q02 80/140", c1.ReassociateMedianRatio, c1.ReassociateOverOffPanel, c1.ReassociateOverOff)
	}
	rep := reassociateReport()
	rep.Summary.PerConcurrency[0].ReassociateMedianRatio = c1.ReassociateMedianRatio
	rep.Summary.PerConcurrency[0].ReassociateOverOff, rep.Summary.PerConcurrency[0].ReassociateOverOffPanel = c1.ReassociateOverOff, c1.ReassociateOverOffPanel
	goals := r.goals(rep)
	met := map[string]bool{}
	measured := map[string]string{}
	for _, g := range goals {
		met[g.Name], measured[g.Name] = g.Met, g.Measured
	}
	for name, want := range map[string]bool{
		"uncached": false, "uncached-reassociate": true, // 1.1× against 0.75×
		"instant": true, "instant-reassociate": true,
		"worst": true, "worst-reassociate": true,
		"memory": false, "memory-reassociate": true, // 500 MiB and 200.0 MiB against 450 MiB
		"answers": true, "answers-reassociate": true,
		"median-reassociate": true, "not-slower-reassociate": true, // computed below by summarize
	} {
		if got, ok := met[name]; !ok || got != want {
			t.Errorf("goal %q: met %v (present %v), want %v; measured %q", name, got, ok, want, measured[name])
		}
	}
	if m := measured["answers-reassociate"]; m != "6 of 6 within 1e-12, 2 of them bit-equal; 0 beyond" {
		t.Errorf("answers-reassociate measured %q", m)
	}
	if m := measured["uncached-reassociate"]; !strings.Contains(m, "0.75× at concurrency 4 (push-down on 1.10×, push-down off 1.40×)") {
		t.Errorf("uncached-reassociate measured %q", m)
	}

	// A panel slower on than off beyond the noise, or a median above 1.3×,
	// fails its goal.
	rep.Summary.PerConcurrency[0].ReassociateOverOff, rep.Summary.PerConcurrency[0].ReassociateMedianRatio = 1.2, 1.31
	for _, g := range r.goals(rep) {
		if (g.Name == "not-slower-reassociate" || g.Name == "median-reassociate") && g.Met {
			t.Errorf("goal met: %+v", g)
		}
	}
	// One answer beyond the tolerance fails the goal.
	rep.Summary.AnswersByTarget[2].Differ = 1
	for _, g := range (&runner{}).goals(rep) {
		if g.Name == "answers-reassociate" && g.Met {
			t.Errorf("goal met with an answer beyond the tolerance: %+v", g)
		}
	}
	// A report without the fourth target has no rows for it.
	old := readmeReport()
	for _, g := range (&runner{}).goals(old) {
		if strings.HasSuffix(g.Name, "-reassociate") {
			t.Errorf("goal %q without a reassociate target", g.Name)
		}
	}
}

// TestRenderReassociate: the Markdown, the SVG and the README section show
// the fourth target beside the others, with its answer counts.
func TestRenderReassociate(t *testing.T) {
	rep := reassociateReport()
	rep.Summary.Targets = (&runner{}).goals(rep)
	md := rep.Markdown()
	for _, s := range []string{
		"| proxy uncached, push-down off | proxy uncached, push-down on | proxy uncached, push-down on, reassociate |",
		"| dashboard load, concurrency 1 (ms per pass) | 200 | 280 | 220 | 150 |",
		"| p50 / reference, concurrency 4 (geomean) | 1× | 1.40× | 1.10× | 0.75× |",
		"pushed (reassociate) |", "reassociate: within 1e-12 / bit-equal |",
		"| 120× | 6/6 | 3/3 / 1/3 |",
		"uncached push-down on, `float_sums: reassociate`: 6 of 6 within 1e-12, 2 of them bit-equal; 0 beyond",
		"Push-down with `float_sums: reassociate` (same counter): 2 of 2 panels pushed (q01, q02)",
		"on with reassociate 200.0 MiB",
		"| proxy-reassociate-c4 | proxy (uncached, push-down on, `float_sums: reassociate`, concurrency 4) | 200.0 MiB |",
		"| uncached, push-down on, `float_sums: reassociate`: p50 ≤ 1.0× the reference",
		"a phase stops early after 90 s (the uncached phase, with 4 targets where the budget counts three, after 120 s per concurrency level)",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("Markdown lacks %q:\n%s", s, md)
		}
	}
	// Per-query rows: q01 with the four uncached columns and both pushed columns.
	if !strings.Contains(md, "| 140 (1.40×) | 110 (1.10×) | 70.0 (0.70×) |") || !strings.Contains(md, "| yes | yes |") {
		t.Errorf("per-query row of q01 lacks the fourth target:\n%s", md)
	}

	svg := rep.SVG()
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Fatalf("SVG is not XML: %v", err)
	}
	for _, s := range []string{"q01 proxy push-down on, reassociate: 70.0 ms", "q02 proxy push-down on, reassociate: 80.0 ms", "q01 proxy push-down on: 110 ms"} {
		if !strings.Contains(svg, s) {
			t.Errorf("SVG lacks bar %q", s)
		}
	}

	readme := rep.ReadmeSection()
	for _, s := range []string{"proxy uncached, push-down on, reassociate |", "| 0.75× |",
		"With `float_sums: reassociate` it pushed 2 (q01, q02)", "with reassociate instant panels 0.80×, worst panel q02 0.80×, peak RSS 200.0 MiB",
		"with reassociate 6 of 6 within 1e-12, 2 of them bit-equal; 0 beyond"} {
		if !strings.Contains(readme, s) {
			t.Errorf("README section lacks %q:\n%s", s, readme)
		}
	}
}

// TestUncachedBudget: each uncached target beyond three adds a third of
// the budget; fewer never shrink it.
func TestUncachedBudget(t *testing.T) {
	for _, c := range []struct {
		targets int
		want    time.Duration
	}{{2, 90 * time.Second}, {3, 90 * time.Second}, {4, 120 * time.Second}, {5, 150 * time.Second}} {
		if got := uncachedBudget(90*time.Second, c.targets); got != c.want {
			t.Errorf("uncachedBudget(90s, %d) = %v, want %v", c.targets, got, c.want)
		}
	}
}

// TestRenderCPU: the summary and the README show each column's CPU time
// per pass and its multiple of the reference's; a column without servers
// of its own shows a dash.
func TestRenderCPU(t *testing.T) {
	rep := reassociateReport()
	for i := range rep.Summary.PerConcurrency {
		rep.Summary.PerConcurrency[i].CPUSeconds = map[string]float64{"reference": 2, "uncached": 5, "uncached push-down": 3}
		rep.Summary.PerConcurrency[i].ProxyCPUSeconds = map[string]float64{"uncached": 1.5}
	}
	md := rep.Markdown()
	if want := "| CPU per pass, concurrency 4 (s; the reference, or the proxy and its backends) | 2.00 | 5.00 (2.50×; proxy 1.50) | 3.00 (1.50×) | – |"; !strings.Contains(md, want) {
		t.Errorf("Markdown lacks %q:\n%s", want, md)
	}
	if want := "| CPU seconds per load, concurrency 4 (reference, or proxy + backends) | 2.00 | 5.00 (2.50×; proxy 1.50) | 3.00 (1.50×) | – |"; !strings.Contains(rep.ReadmeSection(), want) {
		t.Errorf("README section lacks %q:\n%s", want, rep.ReadmeSection())
	}
	if strings.Contains(readmeReport().ReadmeSection(), "CPU seconds") {
		t.Error("a report without CPU times has a CPU row")
	}
	for i := range rep.Summary.PerConcurrency {
		rep.Summary.PerConcurrency[i].CriticalPathSeconds = map[string]float64{"reference": 2, "uncached": 2.5}
	}
	if want := "| modelled load, each backend on its own machine, concurrency 4 (CPU s: proxy + busiest backend; a model) | 2.00 | 2.50 (1.25×) | – | – |"; !strings.Contains(rep.ReadmeSection(), want) {
		t.Errorf("README section lacks %q:\n%s", want, rep.ReadmeSection())
	}
}

// The critical path of a pass is the proxy's CPU and the busiest
// backend's, as if each ran on a machine of its own.
func TestCriticalPath(t *testing.T) {
	before := cpuReading{total: 10 * time.Second, proxy: time.Second, backends: []time.Duration{3 * time.Second, 2 * time.Second, 4 * time.Second}}
	after := cpuReading{total: 18 * time.Second, proxy: 2 * time.Second, backends: []time.Duration{5 * time.Second, 6 * time.Second, 5 * time.Second}}
	d := after.sub(before)
	if got := d.criticalPath(); got != 5*time.Second {
		t.Errorf("critical path %v, want 1s proxy + 4s busiest backend", got)
	}
	if got := (cpuReading{total: 3 * time.Second}).criticalPath(); got != 3*time.Second {
		t.Errorf("reference critical path %v, want its CPU", got)
	}
	if got := d.add(d).backends; len(got) != 3 || got[1] != 8*time.Second {
		t.Errorf("add: %v", got)
	}
}

// TestRenderReleasesApart: answers that differ because the reference runs
// another release than the proxy's engine say so; the same release does
// not.
func TestRenderReleasesApart(t *testing.T) {
	rep := reassociateReport()
	rep.Summary.AnswersChecked, rep.Summary.AnswersDiffer = 10, 4
	rep.Machine.Proxy = "prometheus-multi-tenant-proxy abc (PromQL engine of Prometheus 3.16.0)"
	const note = "The reference is Prometheus 2.x and the proxy's engine 3.x"
	rep.Machine.Prometheus = "prometheus, version 2.42.0 (branch: debian/sid)"
	if md := rep.Markdown(); !strings.Contains(md, note) {
		t.Errorf("2.42 reference, answers differing: no word on the releases:\n%s", md)
	}
	rep.Machine.Prometheus = "prometheus, version 3.16.0 (branch: , revision: v0.316.0)"
	if md := rep.Markdown(); strings.Contains(md, "The reference is Prometheus") {
		t.Errorf("same release: the releases named as the reason:\n%s", md)
	}
}

// TestFloors: the backends alone and the proxy over the reference,
// measured at concurrency 1, give their medians beside the default
// configuration's, columns of the full report, and no columns of the
// README's table.
func TestFloors(t *testing.T) {
	if strings.Contains(reassociateReport().Markdown(), floorNote) {
		t.Error("a report without the floor phase says how it was taken")
	}
	rep := reassociateReport()
	for i := range rep.Queries {
		// The floor phase's reference is 10 % faster than the uncached
		// phase's: each phase's ratios are to its own.
		rep.Queries[i].Results = append(rep.Queries[i].Results,
			Result{Phase: PhaseFloor, Target: TargetReference, Concurrency: 1, Samples: 3, P50: 90},
			Result{Phase: PhaseFloor, Target: TargetReassociate, Concurrency: 1, Samples: 3, P50: []float64{117, 108}[i], Ratio: []float64{1.3, 1.2}[i]},
			Result{Phase: PhaseFloor, Target: TargetBackendsAlone, Concurrency: 1, Samples: 3, P50: []float64{99, 90}[i], Ratio: []float64{1.1, 1}[i]},
			Result{Phase: PhaseFloor, Target: TargetOverReference, Concurrency: 1, Samples: 3, P50: []float64{144, 126}[i], Ratio: []float64{1.6, 1.4}[i],
				AnswersSame: 3})
	}
	for _, target := range []string{TargetReference, TargetReassociate, TargetBackendsAlone, TargetOverReference} {
		rep.Phases = append(rep.Phases, PhaseReport{Phase: PhaseFloor, Target: target, Concurrency: 1, RatioGeomean: 1.2})
	}
	r := &runner{opts: Options{Concurrency: []int{1, 4}}}
	rep.Summary = Summary{}
	r.summarize(rep)
	c1, c4 := rep.Summary.PerConcurrency[0], rep.Summary.PerConcurrency[1]
	if c1.FloorDefaultMedianRatio != 1.2 || c1.BackendsAloneMedianRatio != 1 || c1.OverReferenceMedianRatio != 1.4 || c1.ReassociateMedianRatio != 0.7 {
		t.Errorf("medians at concurrency 1: floor phase default %v, backends alone %v, over the reference %v, uncached default %v; want 1.2, 1, 1.4 (the lower of two), 0.7",
			c1.FloorDefaultMedianRatio, c1.BackendsAloneMedianRatio, c1.OverReferenceMedianRatio, c1.ReassociateMedianRatio)
	}
	if c4.FloorDefaultMedianRatio != 0 || c4.BackendsAloneMedianRatio != 0 || c4.OverReferenceMedianRatio != 0 {
		t.Errorf("floor medians at concurrency 4: %+v", c4)
	}
	var median Goal
	for _, g := range r.goals(rep) {
		if g.Name == "median-reassociate" {
			median = g
		}
	}
	if median.Measured != "0.70× at concurrency 1 (floor phase: 1.20×; the backends alone, no proxy 1.00×; push-down off over the reference alone 1.40×)" || !median.Met {
		t.Errorf("median goal %+v", median)
	}
	md := rep.Markdown()
	for _, s := range []string{"| floor phase: reference | floor phase: proxy, push-down on, reassociate | floor phase: backends alone, no proxy | floor phase: proxy, push-down off, over the reference alone |",
		"| q02 | panel q02 (instant) |  | 1 | 100 | 140 (1.40×) | 110 (1.10×) | 80.0 (0.80×) | 90.0 | 108 (1.20×) | 90.0 (1.00×) | 126 (1.40×) |",
		"the floor phase as many rounds as the uncached one", floorNote} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q", s)
		}
	}
	// Named in the median's goal, not a column.
	if readme := rep.ReadmeSection(); strings.Contains(readme, "| floor phase:") || !strings.Contains(readme, "(floor phase: 1.20×; the backends alone, no proxy 1.00×; ") {
		t.Errorf("README table has a floor as a column, or its goal does not name them:\n%s", readme)
	}
}
