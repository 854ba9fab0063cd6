package engine

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// A backend evaluates a pushed query with its own release's engine. The
// table below lists the release lines push-down is sent to — the proxy's
// own and the LTS line — with what each lacks or evaluates differently from
// the proxy's engine (PromQL of floats: an answer holding native histograms
// is never used, but functions of native histograms answer floats). A query
// using any of that is evaluated in the proxy; a release outside the table
// gets nothing pushed. Each line is tested with real backends of that
// release (TestPushDown/LTS, and Prometheus' PromQL test scripts with a
// real 3.5 group: TestPromQLScriptsThroughLTS); the 3.5 entries come from
// the CHANGELOG of 3.6.0–3.16.0, a comparison of ~130 queries on both
// releases, and those scripts.
type releaseLine struct {
	// missing are functions the release does not have, with the release
	// that added them.
	missing map[string]string
	// differs are functions the release evaluates differently, and how.
	differs map[string]string
	// syntax reports a construct of the query the release does not
	// evaluate as the proxy's engine does ("" when there is none).
	syntax func(parser.Node) string
}

// releaseLines are the release lines push-down is sent to, by major.minor.
var releaseLines = map[string]releaseLine{
	engineRelease: {},
	"3.5":         lts35,
}

// releaseOf is the major.minor of a Prometheus version ("3.5.1" → "3.5",
// "2.42.0+ds" → "2.42"), "" when v is not one.
func releaseOf(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	if _, err := strconv.Atoi(parts[0]); err != nil || minor == "" {
		return ""
	}
	return parts[0] + "." + minor
}

// sameEngine reports whether a backend of version v evaluates PromQL with
// the proxy's engine release.
func sameEngine(v string) bool { return releaseOf(v) == engineRelease }

// evaluatesAsProxy reports whether a backend of version v evaluates query
// (PromQL text the planner wrote) as the proxy's engine would, and if not,
// why.
func evaluatesAsProxy(v, query string) (same bool, why string) {
	line, ok := releaseLines[releaseOf(v)]
	if !ok {
		known := make([]string, 0, len(releaseLines))
		for r := range releaseLines {
			known = append(known, r)
		}
		slices.Sort(known)
		return false, fmt.Sprintf("runs Prometheus %q, a release outside push-down's compatibility table (%s): releases evaluate differently", v, strings.Join(known, ", "))
	}
	e, err := Parser().ParseExpr(query)
	if err != nil {
		return false, fmt.Sprintf("pushed query does not parse: %v", err)
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if why != "" {
			return nil
		}
		if c, ok := n.(*parser.Call); ok {
			if since, ok := line.missing[c.Func.Name]; ok {
				why = fmt.Sprintf("runs Prometheus %s, which has no %s() (added in %s)", v, c.Func.Name, since)
				return nil
			}
			if how, ok := line.differs[c.Func.Name]; ok {
				why = fmt.Sprintf("runs Prometheus %s, whose %s() differs: %s", v, c.Func.Name, how)
				return nil
			}
		}
		if line.syntax != nil {
			if s := line.syntax(n); s != "" {
				why = fmt.Sprintf("runs Prometheus %s, which %s", v, s)
			}
		}
		return nil
	})
	return why == "", why
}

// lts35 is the 3.5 LTS line against the proxy's 3.16 engine. Checked the
// same on floats: rate, increase, irate, delta, idelta, deriv,
// predict_linear, double_exponential_smoothing, resets, changes, sum, avg,
// stddev, count_values, topk, limitk, limit_ratio, classic
// histogram_quantile.
var lts35 = releaseLine{
	missing: map[string]string{
		"first_over_time":       "3.7.0",
		"ts_of_first_over_time": "3.7.0",
		"histogram_quantiles":   "3.11.0",
		"start":                 "3.12.0",
		"end":                   "3.12.0",
		"range":                 "3.12.0",
		"step":                  "3.12.0",
		"min_of":                "3.13.0",
		"max_of":                "3.13.0",
		"start_timestamp":       "3.14.0",
		"integral":              "3.16.0",
	},
	differs: map[string]string{
		"quantile_over_time":   "NaN for ±Inf at an exact quantile rank (fixed in 3.16.0)",
		"deg":                  "rounds v·180/π twice: last-bit differences, overflow near the largest float (fixed in 3.16.0)",
		"rad":                  "rounds v·π/180 twice: last-bit differences, overflow near the largest float (fixed in 3.16.0)",
		"mad_over_time":        "ignores a NaN sample instead of answering NaN (fixed in 3.14.0)",
		"ts_of_last_over_time": "wrong for samples before 1970 (fixed in 3.16.0)",
		"histogram_fraction":   "NaN when the lower bound lies in the first bucket (fixed in 3.8.0) and for a NaN le bucket (3.16.0)",
		"histogram_quantile":   "NaN for a NaN le bucket (fixed in 3.16.0), and native-histogram fixes of 3.6.0–3.16.0",
		"histogram_count":      "native-histogram fixes of 3.6.0–3.16.0",
		"histogram_sum":        "native-histogram fixes of 3.6.0–3.16.0",
		"histogram_avg":        "native-histogram fixes of 3.6.0–3.16.0",
		"histogram_stddev":     "skips buckets (fixed in 3.15.0)",
		"histogram_stdvar":     "skips buckets (fixed in 3.15.0)",
		"info":                 "info() fixes of 3.7.0–3.16.0 (churning series, identifying labels, @ and offset)",
		"absent":               "keeps the __type__ and __unit__ its matchers name (dropped since 3.16.0)",
		"absent_over_time":     "keeps the __type__ and __unit__ its matchers name (dropped since 3.16.0)",
	},
	syntax: syntaxNotIn35,
}

// metadataLabels: series may store __type__ and __unit__ (written by a
// sender with type-and-unit labels, whatever the backend's own flags);
// 3.16.0 ignores them as it ignores __name__, 3.5 groups and matches on
// them like any label. Operands aggregated by named labels hold none.
const metadataLabels = "groups and matches on stored __type__ and __unit__ labels, which the proxy's engine ignores (since 3.16.0),"

// mayCarryMetadata reports whether e's series may hold stored __type__ or
// __unit__ labels; false only where an aggregation by labels that names
// neither has dropped them.
func mayCarryMetadata(e parser.Expr) bool {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			break
		}
		e = p.Expr
	}
	switch e := e.(type) {
	case *parser.AggregateExpr:
		return e.Without || slices.ContainsFunc(e.Grouping, func(l string) bool { return l == "__type__" || l == "__unit__" })
	case *parser.BinaryExpr:
		return e.LHS.Type() == parser.ValueTypeVector && mayCarryMetadata(e.LHS) ||
			e.RHS.Type() == parser.ValueTypeVector && mayCarryMetadata(e.RHS)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return false
	}
	return true
}

// syntaxNotIn35 reports a construct 3.5 does not parse or evaluates
// differently, "" when n has none.
func syntaxNotIn35(n parser.Node) string {
	const durations = "parses duration expressions only behind --enable-feature=promql-duration-expr (on by default since 3.14.0)"
	switch n := n.(type) {
	case *parser.VectorSelector:
		if n.Anchored || n.Smoothed {
			return "has no anchored or smoothed selectors (3.7.0 behind a flag, 3.16.0 stable)"
		}
		if n.OriginalOffsetExpr != nil {
			return durations
		}
	case *parser.MatrixSelector:
		if n.RangeExpr != nil {
			return durations
		}
	case *parser.SubqueryExpr:
		if n.RangeExpr != nil || n.StepExpr != nil || n.OriginalOffsetExpr != nil {
			return durations
		}
	case *parser.AggregateExpr:
		if n.Op == parser.QUANTILE {
			return "answers NaN for ±Inf at an exact rank in quantile() (fixed in 3.16.0)"
		}
		if n.Without && mayCarryMetadata(n.Expr) {
			return metadataLabels + " in a without aggregation"
		}
	case *parser.BinaryExpr:
		switch {
		case n.Op == parser.TRIM_UPPER || n.Op == parser.TRIM_LOWER:
			return "has no " + n.Op.String() + " operator (added in 3.11.0)"
		case n.VectorMatching != nil && (n.VectorMatching.FillValues.LHS != nil || n.VectorMatching.FillValues.RHS != nil):
			return "has no fill modifiers (added in 3.10.0)"
		case n.Op.IsComparisonOperator() && !n.ReturnBool &&
			n.LHS.Type() == parser.ValueTypeVector && n.RHS.Type() == parser.ValueTypeVector &&
			n.VectorMatching != nil && n.VectorMatching.Card != parser.CardManyToMany:
			return "checks a comparison's vector matching only on the samples that pass it, answering where the proxy's engine fails (fixed in 3.9.0)"
		case n.LHS.Type() == parser.ValueTypeVector && n.RHS.Type() == parser.ValueTypeVector &&
			(n.VectorMatching == nil || !n.VectorMatching.On) &&
			(mayCarryMetadata(n.LHS) || mayCarryMetadata(n.RHS)):
			return metadataLabels + " when matching vectors without on()"
		}
	}
	return ""
}
