package tenancy

import "github.com/prometheus/prometheus/model/labels"

// Contradicts reports whether no label set can satisfy all matchers, judged
// by the equality matchers among them: {__name__="a", __name__="b"} or
// {job="x", job!~"x|y"}. It never reports a satisfiable set as contradictory.
func Contradicts(ms []*labels.Matcher) bool {
	for _, eq := range ms {
		if eq.Type != labels.MatchEqual {
			continue
		}
		for _, m := range ms {
			if m.Name == eq.Name && !m.Matches(eq.Value) {
				return true
			}
		}
	}
	return false
}
