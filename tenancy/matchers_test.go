package tenancy

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

func mt(t labels.MatchType, n, v string) *labels.Matcher { return labels.MustNewMatcher(t, n, v) }

func TestContradicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []*labels.Matcher
		want bool
	}{
		{"different names", []*labels.Matcher{mt(labels.MatchEqual, "__name__", "a"), mt(labels.MatchEqual, "__name__", "b")}, true},
		{"same name twice", []*labels.Matcher{mt(labels.MatchEqual, "__name__", "a"), mt(labels.MatchEqual, "__name__", "a")}, false},
		{"regex excludes value", []*labels.Matcher{mt(labels.MatchEqual, "job", "x"), mt(labels.MatchNotRegexp, "job", "x|y")}, true},
		{"regex admits value", []*labels.Matcher{mt(labels.MatchEqual, "job", "x"), mt(labels.MatchRegexp, "job", "x|y")}, false},
		{"not equal", []*labels.Matcher{mt(labels.MatchEqual, "job", "x"), mt(labels.MatchNotEqual, "job", "x")}, true},
		{"empty vs non-empty", []*labels.Matcher{mt(labels.MatchEqual, "ns", ""), mt(labels.MatchRegexp, "ns", ".+")}, true},
		{"two regexes: not judged", []*labels.Matcher{mt(labels.MatchRegexp, "a", "x"), mt(labels.MatchRegexp, "a", "y")}, false},
		{"different labels", []*labels.Matcher{mt(labels.MatchEqual, "a", "x"), mt(labels.MatchEqual, "b", "y")}, false},
	} {
		if got := Contradicts(tc.ms); got != tc.want {
			t.Errorf("%s: Contradicts = %v, want %v", tc.name, got, tc.want)
		}
	}
}
