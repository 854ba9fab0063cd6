package harness

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The README's benchmark numbers live between these lines and are written
// from a report (`go run ./bench --readme`), never by hand.
const (
	readmeBegin = "<!-- bench results: begin (written by `go run ./bench --readme` from bench/results/latest.json) -->"
	readmeEnd   = "<!-- bench results: end -->"
)

// ReadmeSection is the README's summary of a run: the headline table with
// push-down off and on side by side, the targets and where the
// full report is.
func (rep *Report) ReadmeSection() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	d, s := rep.Dataset, rep.Summary
	layout := "some series in every shard"
	if d.Disjoint {
		layout = "shards disjoint by cluster"
	}
	w("Latest run (`make bench`, %s, %d CPUs shared with other work, load average %s at the start; %s series, %s):\n\n",
		rep.Started.Format("2006-01-02"), rep.Machine.CPUs, rep.Machine.LoadAvgStart, thousands(d.Series), layout)
	// The README's table is the product's numbers; the machine's floor
	// stays in the full report.
	cols := slices.DeleteFunc(rep.columns(), func(c column) bool { return c.phase == PhaseFloor })
	w("|   |")
	w("%s", headerCells(cols))
	for _, cs := range s.PerConcurrency {
		w("| one dashboard load, concurrency %d |", cs.Concurrency)
		for _, c := range cols {
			w(" %s |", secondsOrMillis(cs.DashboardMs[c.name]))
		}
		w("\n| p50 ÷ reference (geometric mean), concurrency %d |", cs.Concurrency)
		w("%s", rep.ratioCells(cols, cs.Concurrency))
		w("\n")
	}
	if n := len(s.PerConcurrency); n > 0 {
		cs := s.PerConcurrency[n-1]
		w("| queries/s, concurrency %d |", cs.Concurrency)
		w("%s\n", qpsCells(cols, cs))
		for _, row := range cpuRows(cols, cs,
			"CPU seconds per load, concurrency %d (reference, or proxy + backends)",
			"modelled load, each backend on its own machine, concurrency %d (CPU s: proxy + busiest backend; a model)") {
			w("%s\n", row)
		}
	}
	w("\n")
	if rep.hasTarget(TargetPushDown, PhaseUncached) {
		w("Push-down pushed %d of the %d panels%s", len(s.PushedPanels), len(rep.Queries), listOf(s.PushedPanels))
		if len(s.FallbackPanels) > 0 {
			w("; %d fell back to the proxy's engine%s", len(s.FallbackPanels), listOf(s.FallbackPanels))
		}
		w(". ")
		reassoc := rep.hasTarget(TargetReassociate, PhaseUncached)
		if reassoc {
			w("With `float_sums: reassociate` it pushed %d%s", len(s.ReassociatePushedPanels), listOf(s.ReassociatePushedPanels))
			if len(s.ReassociateFallbackPanels) > 0 {
				w("; %d fell back%s", len(s.ReassociateFallbackPanels), listOf(s.ReassociateFallbackPanels))
			}
			w(". ")
		}
		for _, cs := range s.PerConcurrency {
			w("Concurrency %d: instant panels %s with push-down on (off %s), worst panel %s %s; peak RSS of the uncached proxy %s on, %s off",
				cs.Concurrency, ratioString(cs.PushDownInstantRatio), ratioString(cs.UncachedInstantRatio),
				cs.PushDownWorstPanel, ratioString(cs.PushDownWorstRatio),
				formatBytes(float64(cs.PeakRSSPushDown)), formatBytes(float64(cs.PeakRSSProxy)))
			if reassoc {
				w("; with reassociate instant panels %s, worst panel %s %s, peak RSS %s",
					ratioString(cs.ReassociateInstantRatio), cs.ReassociateWorstPanel, ratioString(cs.ReassociateWorstRatio),
					formatBytes(float64(cs.PeakRSSReassociate)))
			}
			w(". ")
		}
		w("The backends' peaks add up to %s (largest %s); the reference peaked at %s.\n",
			formatBytes(float64(s.PeakRSSBackendsSum)), formatBytes(float64(s.PeakRSSBackend)), formatBytes(float64(s.PeakRSSReference)))
	}
	if len(s.PerConcurrency) > 0 {
		w("Warm answers are %s faster than cold ones (caching proxy, push-down %s). ", ratioString(s.PerConcurrency[0].WarmSpeedup),
			map[bool]string{true: "on", false: "off"}[rep.cachedTarget() == TargetPushDown])
	}
	w("A sliding-window refresh asks the backends for %s of the time span a full load reads (%s of the bytes, since backends send whole chunks). ",
		percentString(s.SlidingSpanFraction), percentString(s.SlidingBytesFraction))
	w("%d answers were checked against the reference; %d differed", s.AnswersChecked, s.AnswersDiffer)
	for _, ta := range s.AnswersByTarget {
		if ta.Target == TargetReassociate {
			w(" (push-down off and on bit for bit; with reassociate %s)", ta.closeString())
		}
	}
	w(".\n\n")
	w("| target | measured | met |\n|---|---|---|\n")
	for _, g := range s.Targets {
		w("| %s | %s | %s |\n", g.Goal, g.Measured, map[bool]string{true: "yes", false: "no"}[g.Met])
	}
	return b.String()
}

// UpdateReadme replaces the benchmark section of the README at path with
// rep's. A quick run's numbers are not the README's.
func UpdateReadme(path string, rep *Report) error {
	if rep.Settings.Quick {
		return errors.New("--readme: a --quick run does not replace the README's numbers")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("readme: %w", err)
	}
	text := string(b)
	i, j := strings.Index(text, readmeBegin), strings.Index(text, readmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("readme: %s has no lines %q … %q to write between", path, readmeBegin, readmeEnd)
	}
	out := text[:i+len(readmeBegin)] + "\n" + rep.ReadmeSection() + text[j:]
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
		return fmt.Errorf("readme: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("readme: %w", err)
	}
	return nil
}

func secondsOrMillis(ms float64) string {
	switch {
	case ms <= 0:
		return "–"
	case ms >= 1000:
		return strconv.FormatFloat(ms/1000, 'f', 1, 64) + " s"
	}
	return formatMillis(ms) + " ms"
}

// thousands prints n with commas: 104,160.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
