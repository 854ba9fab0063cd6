package harness

import (
	"fmt"
	"strconv"
	"strings"
)

func itoa(n int) string { return strconv.Itoa(n) }

func ratioString(x float64) string {
	switch {
	case x <= 0:
		return "–"
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64) + "×"
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64) + "×"
	case x >= 0.1:
		return strconv.FormatFloat(x, 'f', 2, 64) + "×"
	}
	return strconv.FormatFloat(x, 'g', 2, 64) + "×" // two significant digits: 0.0004×

}

func percentString(x float64) string {
	if x <= 0 {
		return "–"
	}
	if x < 0.1 {
		return strconv.FormatFloat(100*x, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(100*x, 'f', 0, 64) + "%"
}

func msOrDash(ms float64) string {
	if ms <= 0 {
		return "–"
	}
	return formatMillis(ms)
}

func qpsString(q float64) string {
	switch {
	case q <= 0:
		return "–"
	case q >= 100:
		return strconv.FormatFloat(q, 'f', 0, 64)
	case q >= 10:
		return strconv.FormatFloat(q, 'f', 1, 64)
	}
	return strconv.FormatFloat(q, 'f', 2, 64)
}

func durString(seconds float64) string {
	if seconds <= 0 {
		return ""
	}
	return promDuration(secondsDuration(seconds))
}

// result finds one result of a query.
func (q QueryReport) result(phase, target string, conc int) (Result, bool) {
	for _, r := range q.Results {
		if r.Phase == phase && r.Target == target && r.Concurrency == conc && r.Samples > 0 {
			return r, true
		}
	}
	return Result{}, false
}

func (rep *Report) phase(phase, target string, conc int) (PhaseReport, bool) {
	for _, p := range rep.Phases {
		if p.Phase == phase && p.Target == target && p.Concurrency == conc {
			return p, true
		}
	}
	return PhaseReport{}, false
}

func columnTitle(name string) string {
	switch name {
	case "reference", "compare":
		return name
	case "uncached":
		return "proxy uncached, push-down off"
	case "uncached push-down":
		return "proxy uncached, push-down on"
	case "uncached reassociate":
		return "proxy uncached, push-down on, reassociate"
	case "floor: reference":
		return "floor phase: reference"
	case "floor: default":
		return "floor phase: proxy, push-down on, reassociate"
	case "floor: backends alone":
		return "floor phase: backends alone, no proxy"
	case "floor: over reference":
		return "floor phase: proxy, push-down off, over the reference alone"
	}
	return "proxy " + name
}

// Markdown renders the report for humans: headline numbers first, then
// per-query and per-phase detail.
func (rep *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	d, m, set := rep.Dataset, rep.Machine, rep.Settings
	cols := rep.columns()

	title := "Benchmark: the proxy against one Prometheus holding all the data"
	if set.Quick {
		title += " (quick)"
	}
	w("# %s\n\n", title)
	w("Run %s on %d CPUs (%s/%s, %s), load average %s at the start and %s at the end; took %.0f s.  \n",
		rep.Started.Format("2006-01-02 15:04 MST"), m.CPUs, m.OS, m.Arch, m.GoVersion, m.LoadAvgStart, m.LoadAvgEnd, rep.Seconds)
	w("Backends and reference: %s. Proxy: %s.  \n", orUnknown(m.Prometheus), orUnknown(m.Proxy))
	w("Data: %d series × %d samples (%s, one every %s) in %d shards, one Prometheus each, and a reference Prometheus holding the union; %s of blocks (dataset %s).  \n",
		d.Series, d.SamplesPerSeries, durString(d.Hours*3600), durString(d.IntervalSeconds), d.Shards,
		formatBytes(float64(d.BlockBytes)), d.Hash)
	if d.Disjoint {
		w("Every series of shard i carries `cluster=<cluster i>`, and each proxy's static group i is configured with `labels: {cluster: <cluster i>}`: the groups are disjoint, so push-down can apply.  \n")
	} else {
		w("Some series are in every shard and some split in time between two: push-down's probe refuses every query (the groups still carry `labels: {cluster: …}`).  \n")
	}
	reassoc := ""
	if rep.hasTarget(TargetReassociate, PhaseUncached) {
		reassoc = ", and on with `float_sums: reassociate` (sum and avg combined across groups too; its answers are checked within " +
			toleranceString + " relative per point, the others bit for bit)"
	}
	w("The uncached phase measures the proxy with push-down off and on (`engine.push_down: {enabled: true, label: cluster}`)%s, interleaved with the reference; cold, warm and sliding run the caching proxy with push-down %s.\n\n",
		reassoc, map[bool]string{true: "on", false: "off"}[rep.cachedTarget() == TargetPushDown])

	rep.summarySection(&b)
	w("\n![latency per query](latest.svg)\n\n")

	for _, c := range set.Concurrency {
		rep.perQueryTable(&b, c, cols)
	}
	rep.percentileTable(&b, cols)
	rep.phaseTable(&b)
	rep.slidingTable(&b)

	w("## Queries\n\nAs sent at the dashboard's \"now\" (%s), the end of the data; POST to /api/v1/query_range or /api/v1/query.\n\n", d.End.Format("2006-01-02 15:04 MST"))
	w("| query | panel | range / step | PromQL |\n|---|---|---|---|\n")
	for _, q := range rep.Queries {
		shape := "instant"
		if q.Kind == "range" {
			shape = durString(q.RangeSeconds) + " / " + durString(q.StepSeconds)
		}
		w("| %s | %s | %s | `%s` |\n", q.ID, escapeCell(q.Title), shape, escapeCell(q.Expr))
	}
	w("\n")

	w("## Memory (peak RSS, VmHWM)\n\n| process | role | peak RSS |\n|---|---|---:|\n")
	for _, mm := range rep.Memory {
		role := mm.Role
		if mm.Target != "" {
			role += fmt.Sprintf(" (uncached, %s, concurrency %d)", targetTitle(mm.Target), mm.Concurrency)
		}
		w("| %s | %s | %s |\n", mm.Name, role, formatBytes(float64(mm.PeakRSSBytes)))
	}
	w("| all backends | sum | %s |\n", formatBytes(float64(rep.Summary.PeakRSSBackendsSum)))
	w("\n## Notes\n\n")
	notes := append([]string(nil), methodNotes...)
	if rep.hasTarget(TargetBackendsAlone, PhaseFloor) {
		notes = append(notes, floorNote)
	}
	for _, n := range append(notes, rep.Notes...) {
		w("- %s\n", n)
	}
	w("- Rounds: uncached %d, cold %d (warm %d passes each), sliding %d refreshes, %d per phase at concurrency > 1; a phase stops early after %.0f s",
		set.UncachedRounds, set.ColdRounds, set.WarmRounds, set.SlidingRounds, set.ConcRounds, set.PhaseBudgetSeconds)
	if rep.hasTarget(TargetReassociate, PhaseUncached) {
		targets := 4
		if set.Compare != "" {
			targets++
		}
		w(" (the uncached phase, with %d targets where the budget counts three, after %.0f s per concurrency level)",
			targets, uncachedBudget(secondsDuration(set.PhaseBudgetSeconds), targets).Seconds())
	}
	if rep.hasTarget(TargetBackendsAlone, PhaseFloor) {
		w("; the floor phase as many rounds as the uncached one, its 4 targets after %.0f s", uncachedBudget(secondsDuration(set.PhaseBudgetSeconds), 4).Seconds())
	}
	w(".\n")
	if len(rep.Warnings) > 0 {
		w("\n## Warnings\n\n")
		for _, x := range rep.Warnings {
			w("- %s\n", strings.ReplaceAll(x, "\n", " "))
		}
	}
	w("\n## Reproduce\n\n```sh\nmake tools         # Prometheus and promtool of the module version the proxy links (once)\nmake bench         # this report: go run ./bench\nmake bench-quick   # a smaller run into .cache/bench/results-quick: go run ./bench --quick\ngo run ./bench --help\n```\n")
	return b.String()
}

// Headline is what a run prints when it ends: the summary and the per-query
// table at concurrency 1.
func (rep *Report) Headline() string {
	var b strings.Builder
	rep.summarySection(&b)
	b.WriteString("\n")
	rep.perQueryTable(&b, 1, rep.columns())
	return b.String()
}

// headerCells end a table's header row after its first cell: one title
// per column, then the separator row (numbers right-aligned).
func headerCells(cols []column) string {
	var b strings.Builder
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", columnTitle(c.name))
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	return b.String()
}

// ratioCells are the table cells of each column's geometric-mean p50 ratio
// to the reference at concurrency conc.
func (rep *Report) ratioCells(cols []column, conc int) string {
	var b strings.Builder
	for _, c := range cols {
		if c.name == "reference" {
			b.WriteString(" 1× |")
			continue
		}
		p, _ := rep.phase(c.phase, c.target, conc)
		fmt.Fprintf(&b, " %s |", ratioString(p.RatioGeomean))
	}
	return b.String()
}

// qpsCells are the table cells of each column's queries per second.
func qpsCells(cols []column, cs ConcSummary) string {
	var b strings.Builder
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", qpsString(cs.QPS[c.name]))
	}
	return b.String()
}

// cpuRows are the table rows of CPU time at cs, those measured: per pass,
// and modelled with each backend on a machine of its own. cpuTitle and
// pathTitle are their titles, formatted with the concurrency.
func cpuRows(cols []column, cs ConcSummary, cpuTitle, pathTitle string) []string {
	var rows []string
	if len(cs.CPUSeconds) > 0 {
		rows = append(rows, "| "+fmt.Sprintf(cpuTitle, cs.Concurrency)+" |"+cpuCells(cols, cs))
	}
	if len(cs.CriticalPathSeconds) > 0 {
		rows = append(rows, "| "+fmt.Sprintf(pathTitle, cs.Concurrency)+" |"+criticalPathCells(cols, cs))
	}
	return rows
}

// cpuCells are the table cells of each column's CPU seconds per pass, its
// multiple of the reference's, and the proxy's own part.
func cpuCells(cols []column, cs ConcSummary) string {
	var b strings.Builder
	ref := cs.CPUSeconds["reference"]
	for _, c := range cols {
		sec, ok := cs.CPUSeconds[c.name]
		var parts []string
		if c.name != "reference" && ref > 0 {
			parts = append(parts, ratioString(sec/ref))
		}
		if own, ok := cs.ProxyCPUSeconds[c.name]; ok {
			parts = append(parts, fmt.Sprintf("proxy %.2f", own))
		}
		switch {
		case !ok:
			b.WriteString(" – |")
		case len(parts) == 0:
			fmt.Fprintf(&b, " %.2f |", sec)
		default:
			fmt.Fprintf(&b, " %.2f (%s) |", sec, strings.Join(parts, "; "))
		}
	}
	return b.String()
}

// criticalPathCells are the cells of each column's modelled critical path
// per pass and its multiple of the reference's CPU.
func criticalPathCells(cols []column, cs ConcSummary) string {
	var b strings.Builder
	ref := cs.CriticalPathSeconds["reference"]
	for _, c := range cols {
		sec, ok := cs.CriticalPathSeconds[c.name]
		switch {
		case !ok:
			b.WriteString(" – |")
		case c.name == "reference" || ref <= 0:
			fmt.Fprintf(&b, " %.2f |", sec)
		default:
			fmt.Fprintf(&b, " %.2f (%s) |", sec, ratioString(sec/ref))
		}
	}
	return b.String()
}

func (rep *Report) summarySection(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	cols := rep.columns()
	w("## Summary\n\n")
	w("|   |")
	w("%s", headerCells(cols))
	for _, cs := range rep.Summary.PerConcurrency {
		w("| dashboard load, concurrency %d (ms per pass) |", cs.Concurrency)
		for _, c := range cols {
			w(" %s |", msOrDash(cs.DashboardMs[c.name]))
		}
		w("\n| p50 / reference, concurrency %d (geomean) |", cs.Concurrency)
		w("%s", rep.ratioCells(cols, cs.Concurrency))
		w("\n| throughput, concurrency %d (queries/s) |", cs.Concurrency)
		w("%s", qpsCells(cols, cs))
		for _, row := range cpuRows(cols, cs,
			"CPU per pass, concurrency %d (s; the reference, or the proxy and its backends)",
			"modelled pass with each backend on its own machine, concurrency %d (s of CPU: proxy + busiest backend; a model)") {
			w("\n%s", row)
		}
		w("\n")
	}
	w("\n")
	s := rep.Summary
	for _, cs := range s.PerConcurrency {
		w("- Warm over cold, concurrency %d: %s faster (geomean of per-query p50 ratios).\n", cs.Concurrency, ratioString(cs.WarmSpeedup))
	}
	w("- Sliding window (range panels, each refresh one step later): a refresh asks the backends for %s of the first load's time span and reads %s of its bytes (%.0f backend requests per refresh, %.0f per load).\n",
		percentString(s.SlidingSpanFraction), percentString(s.SlidingBytesFraction), s.SlidingReadsPerRefr, s.SlidingReadsPerLoad)
	if rep.hasTarget(TargetPushDown, PhaseUncached) {
		w("- Push-down (uncached, concurrency 1, from `prometheus_proxy_pushdown_queries_total`): %d of %d panels pushed%s; %d fell back to the proxy's engine%s.\n",
			len(s.PushedPanels), len(rep.Queries), listOf(s.PushedPanels), len(s.FallbackPanels), listOf(s.FallbackPanels))
	}
	if rep.hasTarget(TargetReassociate, PhaseUncached) {
		w("- Push-down with `float_sums: reassociate` (same counter): %d of %d panels pushed%s; %d fell back%s.\n",
			len(s.ReassociatePushedPanels), len(rep.Queries), listOf(s.ReassociatePushedPanels),
			len(s.ReassociateFallbackPanels), listOf(s.ReassociateFallbackPanels))
	}
	for _, cs := range s.PerConcurrency {
		if cs.PeakRSSProxy > 0 || cs.PeakRSSPushDown > 0 {
			w("- Peak RSS of the uncached proxy, concurrency %d: push-down off %s, on %s", cs.Concurrency,
				formatBytes(float64(cs.PeakRSSProxy)), formatBytes(float64(cs.PeakRSSPushDown)))
			if cs.PeakRSSReassociate > 0 {
				w(", on with reassociate %s", formatBytes(float64(cs.PeakRSSReassociate)))
			}
			w(".\n")
		}
	}
	w("- Peak RSS: largest proxy instance %s, largest backend %s, all backends together %s, reference %s.\n",
		formatBytes(float64(s.PeakRSSProxy)), formatBytes(float64(s.PeakRSSBackend)), formatBytes(float64(s.PeakRSSBackendsSum)),
		formatBytes(float64(s.PeakRSSReference)))
	w("- Answers checked against the reference: %d, of which %d differed", s.AnswersChecked, s.AnswersDiffer)
	for _, ta := range s.AnswersByTarget {
		if ta.Target == TargetReassociate {
			w("; uncached %s: %s", targetTitle(ta.Target), ta.closeString())
			continue
		}
		w("; uncached %s: %d, %d differed", targetTitle(ta.Target), ta.Checked, ta.Differ)
	}
	w(".")
	if ref, eng := majorVersion(rep.Machine.Prometheus, "version "), majorVersion(rep.Machine.Proxy, "engine of Prometheus "); s.AnswersDiffer > 0 && ref != "" && eng != "" && ref != eng {
		w(" The reference is Prometheus %s.x and the proxy's engine %s.x: the releases evaluate range selectors differently (2.x includes a sample at the range's start, 3.x does not), so answers over ranges differ on the same data.", ref, eng)
	}
	w("\n\n")

	w("| target | measured | met |\n|---|---|---|\n")
	for _, g := range s.Targets {
		met := "no"
		if g.Met {
			met = "yes"
		}
		w("| %s | %s | %s |\n", g.Goal, g.Measured, met)
	}
}

// listOf renders panel IDs in parentheses, or nothing.
func listOf(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return " (" + strings.Join(ids, ", ") + ")"
}

func orUnknown(s string) string {
	if s == "" {
		return "(version unknown)"
	}
	return s
}

func (q QueryReport) shortTitle() string {
	if q.Kind == "instant" {
		return q.Title + " (instant)"
	}
	return q.Title + " (" + durString(q.RangeSeconds) + ")"
}

func (rep *Report) perQueryTable(b *strings.Builder, conc int, cols []column) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Per query, concurrency %d: p50 in ms (× reference)\n\n", conc)
	w("| query | panel | step | series |")
	for _, c := range cols {
		w(" %s |", columnTitle(c.name))
	}
	pushCol := rep.hasTarget(TargetPushDown, PhaseUncached)
	reCol := rep.hasTarget(TargetReassociate, PhaseUncached)
	if pushCol {
		w(" pushed |")
	}
	if reCol {
		w(" pushed (reassociate) |")
	}
	w(" cold / warm | same answer |")
	if reCol {
		w(" reassociate: within %s / bit-equal |", toleranceString)
	}
	w("\n|---|---|---:|---:|")
	for range cols {
		w("---:|")
	}
	if pushCol {
		w("---|")
	}
	if reCol {
		w("---|")
	}
	w("---:|---|")
	if reCol {
		w("---|")
	}
	w("\n")
	for _, q := range rep.Queries {
		w("| %s | %s | %s | %d |", q.ID, escapeCell(q.shortTitle()), durString(q.StepSeconds), q.Series)
		for _, c := range cols {
			r, ok := q.result(c.phase, c.target, conc)
			switch {
			case !ok:
				w(" – |")
			case r.Ratio > 0:
				w(" %s (%s) |", formatMillis(r.P50), ratioString(r.Ratio))
			default:
				w(" %s |", formatMillis(r.P50))
			}
		}
		// Counted per execution at concurrency 1 only.
		if pushCol {
			w(" %s |", q.pushedString(TargetPushDown))
		}
		if reCol {
			w(" %s |", q.pushedString(TargetReassociate))
		}
		cold, _ := q.result(PhaseCold, rep.cachedTarget(), conc)
		warm, _ := q.result(PhaseWarm, rep.cachedTarget(), conc)
		sp := "–"
		if cold.P50 > 0 && warm.P50 > 0 {
			sp = ratioString(cold.P50 / warm.P50)
		}
		// Bit for bit for every target but the re-associating one, which
		// has its own column.
		same, differ := 0, 0
		reWithin, reSame, reAll := 0, 0, 0
		for _, r := range q.Results {
			if r.Concurrency != conc {
				continue
			}
			if r.Target == TargetReassociate {
				reSame += r.AnswersSame
				reWithin += r.AnswersSame + r.AnswersClose
				reAll += r.AnswersSame + r.AnswersClose + r.AnswersDiffer
				continue
			}
			same += r.AnswersSame
			differ += r.AnswersDiffer + r.AnswersClose
		}
		answer := "–"
		if same+differ > 0 {
			answer = fmt.Sprintf("%d/%d", same, same+differ)
		}
		w(" %s | %s |", sp, answer)
		if reCol {
			re := "–"
			if reAll > 0 {
				re = fmt.Sprintf("%d/%d / %d/%d", reWithin, reAll, reSame, reAll)
			}
			w(" %s |", re)
		}
		w("\n")
	}
	w("\n")
}

// pushedString says whether target's uncached executions of q at
// concurrency 1 were pushed down, refused by a check, or neither.
func (q QueryReport) pushedString(target string) string {
	on, ok := q.result(PhaseUncached, target, 1)
	switch {
	case !ok || on.PushedDown == nil:
		return "–"
	case *on.PushedDown > 0:
		return "yes"
	case *on.FellBack > 0:
		return "refused"
	}
	return "no"
}

func (rep *Report) percentileTable(b *strings.Builder, cols []column) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	for _, conc := range rep.Settings.Concurrency {
		w("## Per query, concurrency %d: p50 / p90 / p99 in ms, queries/s\n\n| query |", conc)
		w("%s", headerCells(cols))
		for _, q := range rep.Queries {
			w("| %s |", q.ID)
			for _, c := range cols {
				if r, ok := q.result(c.phase, c.target, conc); ok {
					w(" %s / %s / %s, %s/s |", formatMillis(r.P50), formatMillis(r.P90), formatMillis(r.P99), qpsString(r.QPS))
				} else {
					w(" – |")
				}
			}
			w("\n")
		}
		w("\n")
	}
}

func (rep *Report) phaseTable(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Per phase\n\n")
	w("| phase | target | concurrency | passes | requests | p50 ms | p90 ms | p99 ms | queries/s | × reference | backend reads / pass | backend bytes / pass | cache hits / misses per pass |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range rep.Phases {
		reads, bytes, cache := "–", "–", "–"
		if p.BackendReadsPerPass != nil {
			reads = countString(*p.BackendReadsPerPass)
			bytes = formatBytes(*p.BackendBytesPerPass)
		}
		if p.CacheHitsPerPass != nil {
			cache = countString(*p.CacheHitsPerPass) + " / " + countString(*p.CacheMissesPerPass)
		}
		ratio := "–"
		if p.RatioGeomean > 0 {
			ratio = ratioString(p.RatioGeomean)
		}
		w("| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.Phase, p.Target, p.Concurrency, p.Passes, p.Requests,
			msOrDash(p.P50), msOrDash(p.P90), msOrDash(p.P99), qpsString(p.QPS), ratio, reads, bytes, cache)
	}
	w("\n`load` is the first load of the sliding-window dashboard, one step per refresh before `sliding`.\n\n")
}

func (rep *Report) slidingTable(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Sliding window: what the backends were asked for (concurrency 1)\n\n")
	w("| query | range / step | load: time span | load: bytes | load: reads (backends / proxy) | refresh: time span | refresh: bytes | refresh: reads (backends / proxy) |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, q := range rep.Queries {
		load, okL := q.result(phaseLoad, rep.cachedTarget(), 1)
		refr, okR := q.result(PhaseSliding, rep.cachedTarget(), 1)
		if !okL || !okR || load.BackendBytes == nil || refr.BackendBytes == nil {
			continue
		}
		shape := "instant"
		if q.Kind == "range" {
			shape = durString(q.RangeSeconds) + " / " + durString(q.StepSeconds)
		}
		ls, rs := "–", "–"
		if q.Spans != nil {
			ls = minutesString(q.Spans.LoadSpanMinutes)
			rs = minutesString(q.Spans.RefreshSpanMinute)
		}
		w("| %s | %s | %s | %s | %s / %s | %s | %s | %s / %s |\n", q.ID, shape, ls, formatBytes(*load.BackendBytes),
			countString(*load.BackendReads), countString(*load.ProxyBackendRequests),
			rs, formatBytes(*refr.BackendBytes), countString(*refr.BackendReads), countString(*refr.ProxyBackendRequests))
	}
	w("\nA time span is the sum over remote-read queries of end − start, and over pushed-down queries of the span of data they read (ranges and lookback included); remote-read bytes are whole chunks as the backends sent them, pushed-down bytes JSON answers. Reads are counted by the backends (remote-read, query and series requests served) and by the proxy (`prometheus_proxy_backend_requests_total`).\n\n")
}

// countString prints a mean count: whole when it is one.
func countString(x float64) string {
	if x == float64(int64(x)) {
		return strconv.FormatInt(int64(x), 10)
	}
	return strconv.FormatFloat(x, 'f', 1, 64)
}

func minutesString(m float64) string {
	if m >= 120 {
		return strconv.FormatFloat(m/60, 'f', 1, 64) + " h"
	}
	return strconv.FormatFloat(m, 'f', 0, 64) + " min"
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// majorVersion is the major version in a version string after marker
// ("prometheus, version 2.42.0 …" after "version "), or "".
func majorVersion(v, marker string) string {
	_, rest, ok := strings.Cut(v, marker)
	if !ok {
		return ""
	}
	major, _, ok := strings.Cut(rest, ".")
	if _, err := strconv.Atoi(major); !ok || err != nil {
		return ""
	}
	return major
}
