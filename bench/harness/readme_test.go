package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readmeReport() *Report {
	rep := &Report{
		Dataset:  DatasetInfo{Series: 104160, Disjoint: true},
		Settings: Settings{Concurrency: []int{1, 4}, CachedTarget: TargetPushDown},
		Queries:  []QueryReport{{ID: "q01"}, {ID: "q02"}},
	}
	for _, c := range []int{1, 4} {
		rep.Phases = append(rep.Phases,
			PhaseReport{Phase: PhaseUncached, Target: TargetReference, Concurrency: c},
			PhaseReport{Phase: PhaseUncached, Target: TargetProxy, Concurrency: c, RatioGeomean: 1.37},
			PhaseReport{Phase: PhaseUncached, Target: TargetPushDown, Concurrency: c, RatioGeomean: 0.87},
			PhaseReport{Phase: PhaseCold, Target: TargetPushDown, Concurrency: c, RatioGeomean: 0.9},
		)
		rep.Summary.PerConcurrency = append(rep.Summary.PerConcurrency, ConcSummary{Concurrency: c,
			DashboardMs: map[string]float64{"reference": 6466, "uncached": 8052, "uncached push-down": 37.9},
			QPS:         map[string]float64{"reference": 5.49}})
	}
	rep.Summary.PushedPanels = []string{"q02"}
	rep.Summary.Targets = []Goal{{Goal: "a goal", Measured: "0.87×", Met: true}}
	return rep
}

// TestUpdateReadme: the section between the markers is the report's
// summary, push-down off and on side by side; the rest of the README is
// kept byte for byte, a second update changes nothing, and a quick
// report or a README without the markers is refused.
func TestUpdateReadme(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "README.md")
	before, after := "# Title\n\n## Benchmark\n\nProse.\n\n", "\n\nMore prose.\n"
	orig := before + readmeBegin + "\nold numbers\n" + readmeEnd + after
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := readmeReport()
	if err := UpdateReadme(path, rep); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	if !strings.HasPrefix(got, before+readmeBegin+"\n") || !strings.HasSuffix(got, readmeEnd+after) {
		t.Fatalf("text outside the markers changed:\n%s", got)
	}
	for _, s := range []string{"old numbers"} {
		if strings.Contains(got, s) {
			t.Errorf("%q is still there", s)
		}
	}
	for _, s := range []string{"proxy uncached, push-down off", "proxy uncached, push-down on", "| 1.37× | 0.87× | 0.90× |",
		"| one dashboard load, concurrency 1 | 6.5 s | 8.1 s | 37.9 ms |", "104,160 series", "Push-down pushed 1 of the 2 panels (q02)",
		"| a goal | 0.87× | yes |"} {
		if !strings.Contains(got, s) {
			t.Errorf("README lacks %q:\n%s", s, got)
		}
	}
	if err := UpdateReadme(path, rep); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(path); string(b2) != got {
		t.Error("a second update changed the README")
	}

	quick := readmeReport()
	quick.Settings.Quick = true
	if err := UpdateReadme(path, quick); err == nil {
		t.Error("a quick report replaced the README's numbers")
	}
	bare := filepath.Join(dir, "bare.md")
	_ = os.WriteFile(bare, []byte("# no markers\n"), 0o644)
	if err := UpdateReadme(bare, rep); err == nil {
		t.Error("no error for a README without markers")
	}
}
