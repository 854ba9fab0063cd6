package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/harness"
)

// TestQuickReport runs the quick benchmark, with one round per phase, into
// a temporary directory and checks that the report is complete and
// consistent. It says nothing about speed: the machine may be busy.
func TestQuickReport(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"--quick", "--out", dir, "--concurrency=2",
		"--uncached-rounds=1", "--cold-rounds=1", "--warm-rounds=1", "--sliding-rounds=1", "--concurrent-rounds=1", "--floors"}, &stdout, &stderr)
	t.Logf("progress:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(stdout.String(), "## Summary") {
		t.Errorf("stdout has no summary:\n%s", stdout.String())
	}

	rep := readReport(t, filepath.Join(dir, harness.JSONFile))
	checkReport(t, rep)
	checkMarkdown(t, rep, filepath.Join(dir, harness.MarkdownFile))
	checkSVG(t, rep, filepath.Join(dir, harness.SVGFile))
}

func readReport(t *testing.T, path string) *harness.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var rep harness.Report
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return &rep
}

// want lists the (phase, target) pairs every query must have at every
// concurrency level: the uncached proxy with push-down off, on, and on with
// `float_sums: reassociate`, and the caching proxy with push-down on (the
// default).
var want = []struct{ phase, target string }{
	{harness.PhaseUncached, harness.TargetReference},
	{harness.PhaseUncached, harness.TargetProxy},
	{harness.PhaseUncached, harness.TargetPushDown},
	{harness.PhaseUncached, harness.TargetReassociate},
	{harness.PhaseCold, harness.TargetPushDown},
	{harness.PhaseWarm, harness.TargetPushDown},
	{harness.PhaseSliding, harness.TargetPushDown},
}

func checkReport(t *testing.T, rep *harness.Report) {
	t.Helper()
	if !rep.Dataset.Disjoint || rep.Settings.CachedTarget != harness.TargetPushDown {
		t.Errorf("dataset disjoint %v, cached phases ran %q; want the defaults (disjoint, push-down on)", rep.Dataset.Disjoint, rep.Settings.CachedTarget)
	}
	if rep.Dataset.Series < 1000 || rep.Dataset.SamplesPerSeries < 10 || rep.Dataset.Shards != 3 {
		t.Errorf("dataset: %+v", rep.Dataset)
	}
	if len(rep.Warnings) > 0 {
		t.Errorf("warnings: %q", rep.Warnings)
	}
	conc := []int{1, 2}
	if len(rep.Settings.Concurrency) != 2 {
		t.Fatalf("concurrency levels %v, want %v", rep.Settings.Concurrency, conc)
	}

	panels := harness.Dashboard()
	if len(rep.Queries) != len(panels) {
		t.Fatalf("%d queries in the report, want %d", len(rep.Queries), len(panels))
	}
	for i, q := range rep.Queries {
		if q.ID != panels[i].ID || q.Expr == "" || strings.Contains(q.Expr, "$__") {
			t.Errorf("query %d: id %q expr %q (panel %q)", i, q.ID, q.Expr, panels[i].ID)
		}
		if q.Series < 1 || q.Points < 1 {
			t.Errorf("%s: reference answer has %d series, %d points", q.ID, q.Series, q.Points)
		}
		if q.Kind == "range" && (q.RangeSeconds <= 0 || q.StepSeconds <= 0) {
			t.Errorf("%s: range %v step %v", q.ID, q.RangeSeconds, q.StepSeconds)
		}
		for _, c := range conc {
			for _, w := range want {
				r, ok := find(q, w.phase, w.target, c)
				if !ok {
					t.Errorf("%s: no %s/%s result at concurrency %d", q.ID, w.phase, w.target, c)
					continue
				}
				checkResult(t, q.ID, r)
			}
		}
		// The floor phase, at concurrency 1 only; the proxy over the
		// reference answers as the reference does.
		for _, target := range []string{harness.TargetReference, harness.TargetReassociate, harness.TargetBackendsAlone, harness.TargetOverReference} {
			if r, ok := find(q, harness.PhaseFloor, target, 1); !ok {
				t.Errorf("%s: no floor phase result of %s", q.ID, target)
			} else {
				checkResult(t, q.ID, r)
				if target == harness.TargetOverReference && (r.AnswersSame != 1 || r.AnswersDiffer+r.AnswersClose != 0) {
					t.Errorf("%s: the proxy over the reference answered %d times as it, %d not", q.ID, r.AnswersSame, r.AnswersDiffer+r.AnswersClose)
				}
			}
			if _, ok := find(q, harness.PhaseFloor, target, 2); ok {
				t.Errorf("%s: %s measured in the floor phase at concurrency 2", q.ID, target)
			}
		}
		same, differ := 0, 0
		for _, r := range q.Results {
			same += r.AnswersSame
			differ += r.AnswersDiffer
		}
		if same == 0 || differ != 0 {
			t.Errorf("%s: %d answers equal to the reference's, %d differ", q.ID, same, differ)
		}
		if q.Kind == "range" && (q.Spans == nil || q.Spans.LoadSpanMinutes <= 0 || q.Spans.LoadQueries < 1) {
			t.Errorf("%s: no time spans of the sliding window: %+v", q.ID, q.Spans)
		}
	}

	for _, c := range conc {
		for _, w := range want {
			p, ok := findPhase(rep, w.phase, w.target, c)
			if !ok {
				t.Errorf("no phase %s/%s at concurrency %d", w.phase, w.target, c)
				continue
			}
			if p.Requests < len(panels) || p.QPS <= 0 || p.P50 <= 0 || p.P99 < p.P50 || p.DashboardMillis <= 0 || p.Errors != 0 {
				t.Errorf("phase %s/%s c=%d: %+v", w.phase, w.target, c, p)
			}
			if w.target != harness.TargetReference && (p.RatioGeomean <= 0 || p.BackendReadsPerPass == nil) {
				t.Errorf("phase %s/%s c=%d: ratio %v, backend reads %v", w.phase, w.target, c, p.RatioGeomean, p.BackendReadsPerPass)
			}
		}
	}

	for _, target := range []string{harness.TargetBackendsAlone, harness.TargetOverReference} {
		if p, ok := findPhase(rep, harness.PhaseFloor, target, 1); !ok || p.RatioGeomean <= 0 || p.Errors != 0 ||
			p.CPUSecondsPerPass == nil || *p.CPUSecondsPerPass <= 0 || p.ProxyCPUSecondsPerPass != nil {
			t.Errorf("floor phase of %s: %+v (present %v)", target, p, ok)
		}
	}

	roles := map[string]bool{}
	for _, m := range rep.Memory {
		if m.PeakRSSBytes <= 0 {
			t.Errorf("memory of %s: %d", m.Name, m.PeakRSSBytes)
		}
		roles[m.Role] = true
	}
	for _, role := range []string{"backend", "reference", "proxy"} {
		if !roles[role] {
			t.Errorf("no peak RSS of a %s", role)
		}
	}

	s := rep.Summary
	if len(s.PerConcurrency) != len(conc) {
		t.Fatalf("summary for %d concurrency levels", len(s.PerConcurrency))
	}
	for _, cs := range s.PerConcurrency {
		if cs.UncachedRatio <= 0 || cs.ColdRatio <= 0 || cs.WarmRatio <= 0 || cs.WarmSpeedup <= 0 {
			t.Errorf("summary at concurrency %d: %+v", cs.Concurrency, cs)
		}
		if cs.PushDownRatio <= 0 || cs.PushDownInstantRatio <= 0 || cs.PushDownWorstPanel == "" {
			t.Errorf("push-down summary at concurrency %d: %+v", cs.Concurrency, cs)
		}
		if cs.ReassociateRatio <= 0 || cs.ReassociateInstantRatio <= 0 || cs.ReassociateWorstPanel == "" {
			t.Errorf("reassociate summary at concurrency %d: %+v", cs.Concurrency, cs)
		}
		if (cs.FloorDefaultMedianRatio > 0) != (cs.Concurrency == 1) || (cs.BackendsAloneMedianRatio > 0) != (cs.Concurrency == 1) ||
			(cs.OverReferenceMedianRatio > 0) != (cs.Concurrency == 1) {
			t.Errorf("medians of the floor phase at concurrency %d: %v, %v, %v", cs.Concurrency, cs.FloorDefaultMedianRatio,
				cs.BackendsAloneMedianRatio, cs.OverReferenceMedianRatio)
		}
		if cs.PeakRSSProxy <= 0 || cs.PeakRSSPushDown <= 0 || cs.PeakRSSReassociate <= 0 {
			t.Errorf("peak RSS per configuration at concurrency %d: off %d, on %d, reassociate %d", cs.Concurrency,
				cs.PeakRSSProxy, cs.PeakRSSPushDown, cs.PeakRSSReassociate)
		}
		for _, col := range []string{"reference", "uncached", "uncached push-down", "uncached reassociate", "cold", "warm", "sliding"} {
			if cs.DashboardMs[col] <= 0 || cs.QPS[col] <= 0 {
				t.Errorf("summary at concurrency %d: %s dashboard %v ms, %v qps", cs.Concurrency, col, cs.DashboardMs[col], cs.QPS[col])
			}
		}
	}
	if s.SlidingSpanFraction <= 0 || s.SlidingBytesFraction <= 0 || s.SlidingReadsPerLoad <= 0 {
		t.Errorf("sliding summary: span %v bytes %v reads %v", s.SlidingSpanFraction, s.SlidingBytesFraction, s.SlidingReadsPerLoad)
	}
	// Four uncached targets, each for push-down on and for reassociate;
	// the default configuration's median panel and its slowest against
	// push-down off; answers exact and within the tolerance; warm; sliding.
	if len(s.Targets) != 14 {
		t.Errorf("targets: %+v", s.Targets)
	}
	// Over disjoint shards the planner's aggregations that keep or combine
	// across the cluster label must reach the backends, and no check may
	// have refused one.
	if len(s.PushedPanels) == 0 || len(s.FallbackPanels) != 0 {
		t.Errorf("pushed panels %v, fell back %v", s.PushedPanels, s.FallbackPanels)
	}
	// Re-association pushes at least what exact sums push.
	if len(s.ReassociatePushedPanels) < len(s.PushedPanels) || len(s.ReassociateFallbackPanels) != 0 {
		t.Errorf("reassociate: pushed panels %v (exact %v), fell back %v", s.ReassociatePushedPanels, s.PushedPanels, s.ReassociateFallbackPanels)
	}
	byTarget := map[string]harness.TargetAnswers{}
	for _, ta := range s.AnswersByTarget {
		byTarget[ta.Target] = ta
	}
	for _, target := range []string{harness.TargetProxy, harness.TargetPushDown, harness.TargetReassociate} {
		// Every timed answer at concurrency 1 plus the checking passes.
		if ta := byTarget[target]; ta.Checked < 2*len(panels) || ta.Differ != 0 {
			t.Errorf("answers of %s: %+v", target, ta)
		}
		// Only the re-associating proxy may be off in the last bits.
		if ta := byTarget[target]; target != harness.TargetReassociate && ta.Close != 0 {
			t.Errorf("answers of %s not bit for bit: %+v", target, ta)
		}
	}
	if s.PeakRSSBackendsSum <= s.PeakRSSBackend || s.PeakRSSBackendsSum > s.PeakRSSBackend*int64(rep.Dataset.Shards) {
		t.Errorf("sum of backend peaks %d, largest %d", s.PeakRSSBackendsSum, s.PeakRSSBackend)
	}
	if s.PeakRSSProxy <= 0 || s.PeakRSSBackend <= 0 || s.PeakRSSReference <= 0 {
		t.Errorf("peak RSS in summary: %+v", s)
	}
}

func checkResult(t *testing.T, id string, r harness.Result) {
	t.Helper()
	bad := r.Samples < 1 || r.Errors != 0 || r.P50 <= 0 || r.P90 < r.P50 || r.P99 < r.P90 || r.Max < r.P99 ||
		r.Mean <= 0 || r.QPS <= 0
	if r.Target != harness.TargetReference && r.Ratio <= 0 {
		bad = true
	}
	if r.Target == harness.TargetProxy && r.Concurrency == 1 &&
		(r.BackendReads == nil || r.BackendBytes == nil || r.ProxyBackendRequests == nil) {
		bad = true
	}
	// The push-down configurations' counter is read per execution.
	if (r.Target == harness.TargetPushDown || r.Target == harness.TargetReassociate) && r.Phase == harness.PhaseUncached &&
		r.Concurrency == 1 && (r.PushedDown == nil || r.FellBack == nil) {
		bad = true
	}
	if bad {
		t.Errorf("%s %s/%s c=%d: %+v", id, r.Phase, r.Target, r.Concurrency, r)
	}
}

func find(q harness.QueryReport, phase, target string, conc int) (harness.Result, bool) {
	for _, r := range q.Results {
		if r.Phase == phase && r.Target == target && r.Concurrency == conc {
			return r, true
		}
	}
	return harness.Result{}, false
}

func findPhase(rep *harness.Report, phase, target string, conc int) (harness.PhaseReport, bool) {
	for _, p := range rep.Phases {
		if p.Phase == phase && p.Target == target && p.Concurrency == conc {
			return p, true
		}
	}
	return harness.PhaseReport{}, false
}

func checkMarkdown(t *testing.T, rep *harness.Report, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, s := range []string{"## Summary", "## Per query, concurrency 1", "## Per query, concurrency 2", "## Per phase",
		"## Sliding window", "## Memory", "latest.svg", "proxy uncached, push-down off", "proxy uncached, push-down on",
		"| uncached, push-down on: p50 ≤ 1.0× the reference", "panels pushed",
		"proxy uncached, push-down on, reassociate", "reassociate: within 1e-12 / bit-equal",
		"| uncached, push-down on, `float_sums: reassociate`: p50 ≤ 1.0× the reference",
		"| peak RSS of the uncached proxy, push-down on, `float_sums: reassociate`, at concurrency 2",
		"floor phase: backends alone, no proxy", "over the reference alone", "at concurrency 1 (floor phase: "} {
		if !strings.Contains(md, s) {
			t.Errorf("%s lacks %q", path, s)
		}
	}
	for _, q := range rep.Queries {
		// One row per concurrency level in each of the two per-query tables.
		if n := strings.Count(md, "\n| "+q.ID+" |"); n < 4 {
			t.Errorf("%s: %d rows for %s, want at least 4", path, n, q.ID)
		}
	}
	for _, line := range strings.Split(md, "\n") {
		if strings.Contains(line, "NaN") || strings.Contains(line, "%!") {
			t.Errorf("%s: bad number in %q", path, line)
		}
	}
}

// checkSVG parses the chart as XML and looks for one bar per query and series.
func checkSVG(t *testing.T, rep *harness.Report, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	var titles []string
	inTitle := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			inTitle = tok.Name.Local == "title"
		case xml.CharData:
			if inTitle {
				titles = append(titles, string(tok))
			}
		case xml.EndElement:
			inTitle = false
		}
	}
	if root != "svg" {
		t.Errorf("%s: root element %q", path, root)
	}
	for _, q := range rep.Queries {
		for _, series := range []string{"reference", "proxy push-down off", "proxy push-down on", "proxy push-down on, reassociate", "proxy cold", "proxy warm"} {
			prefix := q.ID + " " + series + ": "
			found := false
			for _, title := range titles {
				found = found || strings.HasPrefix(title, prefix)
			}
			if !found {
				t.Errorf("%s: no bar %q", path, prefix)
			}
		}
	}
}
