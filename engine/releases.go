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
// is never used). A query using any of that is evaluated in the proxy; a
// release outside the table gets nothing pushed.
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
func evaluatesAsProxy(v, query string) (bool, string) {
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
	why := ""
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
