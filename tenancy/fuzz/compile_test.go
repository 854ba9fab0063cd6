// Package fuzz fuzzes the MetricAccess compiler. It is a package of its
// own, importing tenancy alone, because a fuzzing build instruments every
// package the test binary links: tenancy's own tests link a kube-apiserver
// harness and client-go's typed clients, which made that build several
// times longer than the compiler's dependencies need.
package fuzz

import (
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

var selectorParser = parser.NewParser(parser.Options{})

func newMA(ns, name, source string, sel map[string]string, metrics ...string) *tenancy.MetricAccess {
	return &tenancy.MetricAccess{
		TypeMeta:   metav1.TypeMeta{APIVersion: tenancy.APIVersion(), Kind: tenancy.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       tenancy.MetricAccessSpec{Metrics: metrics, Source: source, LabelSelectors: sel},
	}
}

// s builds a series: s("up", "namespace", "team-a") is up{namespace="team-a"}.
func s(name string, kv ...string) labels.Labels {
	return labels.FromStrings(append([]string{"__name__", name}, kv...)...)
}

func hasMatcher(r tenancy.Rule, typ labels.MatchType, name, value string) bool {
	return slices.ContainsFunc(r.Matchers, func(m *labels.Matcher) bool {
		return m != nil && m.Type == typ && m.Name == name && m.Value == value
	})
}

func FuzzCompile(f *testing.F) {
	seeds := []string{
		"up", "http_request_duration_seconds", "http_.*", ".*", "", "(", "a{2}",
		`{job="team-c-api"}`, `up{job=~"team-c.*"}`, `{job=~".*"}`, `{"my.metric"}`,
		`{"my.metric", env="prod"}`, `up{job="a"`, `{}`, `{__name__=~".+"}`, "x|y", `\`,
		"up offset 5m", "up[5m]", "sum(up)", `{namespace!="team-a"}`, "\xff", `{a="\xff"}`,
		"(?i)UP", "a{1000000}", `up{job="a"} or {job="b"}`, "{", "}", `{"a"="b"}`,
	}
	for _, e := range seeds {
		f.Add(e, "up", "cluster", "cluster-a", "team-a", false)
	}
	f.Add("up", "", "", "", "", true)
	f.Add(".*", "{x=\"y\"}", "bad key", "v", "team-b", true)
	f.Add(".*", "up", "k", "\xff", "team-a", false)

	f.Fuzz(func(t *testing.T, e1, e2, selKey, selVal, source string, cross bool) {
		var sel map[string]string
		if selKey != "" || selVal != "" {
			sel = map[string]string{selKey: selVal}
		}
		obj := newMA("team-a", "fuzz", source, sel, e1, e2)
		opts := tenancy.CompileOptions{AllowCrossNamespaceSource: cross}
		rules, problems := tenancy.Compile(obj, opts)

		objectLevel := slices.ContainsFunc(problems, func(p tenancy.Problem) bool { return !errors.Is(p, tenancy.ErrInvalidEntry) })
		if objectLevel && len(rules) > 0 {
			t.Fatalf("object-level problem %v but rules %v", problems, rules)
		}
		for _, p := range problems {
			if p.Err == nil || !errors.Is(p, p.Err) || p.Error() == "" {
				t.Fatalf("malformed problem %#v", p)
			}
		}
		for _, r := range rules {
			if len(r.Matchers) == 0 || slices.Contains(r.Matchers, nil) {
				t.Fatalf("rule with nil or no matchers: %#v", r)
			}
			if !hasMatcher(r, labels.MatchEqual, tenancy.DefaultNamespaceLabel, source) || source == "" {
				t.Fatalf("rule %v lacks namespace=%q", r, source)
			}
			if r.Matches(s(e1, tenancy.DefaultNamespaceLabel, source+"-other")) {
				t.Fatalf("rule %v reaches beyond source %q", r, source)
			}
			// The debug form of a rule must be PromQL selecting the same.
			back, err := selectorParser.ParseMetricSelector(r.String())
			if err != nil {
				t.Fatalf("rule %s does not parse back: %v", r, err)
			}
			if got := (tenancy.Rule{Matchers: back}).String(); got != r.String() {
				t.Fatalf("rule %s parses back as %s", r, got)
			}
		}
		for _, e := range []string{e1, e2} {
			hasRule := slices.ContainsFunc(rules, func(r tenancy.Rule) bool { return r.Origin == "team-a/fuzz: "+e })
			reported := slices.ContainsFunc(problems, func(p tenancy.Problem) bool { return p.Entry == e && errors.Is(p, tenancy.ErrInvalidEntry) })
			if !hasRule && !reported && !objectLevel {
				t.Fatalf("entry %q neither compiled nor reported: rules %v problems %v", e, rules, problems)
			}
			if hasRule && reported {
				t.Fatalf("entry %q both compiled and reported", e)
			}
		}
	})
}
