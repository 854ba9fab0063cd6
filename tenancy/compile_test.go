package tenancy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func newMA(ns, name, source string, sel map[string]string, metrics ...string) *MetricAccess {
	return &MetricAccess{
		TypeMeta:   metav1.TypeMeta{APIVersion: APIVersion(), Kind: Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       MetricAccessSpec{Metrics: metrics, Source: source, LabelSelectors: sel},
	}
}

// s builds a series: s("up", "namespace", "team-a") is up{namespace="team-a"}.
func s(name string, kv ...string) labels.Labels {
	return labels.FromStrings(append([]string{"__name__", name}, kv...)...)
}

func TestCompile(t *testing.T) {
	const hist = "http_request_duration_seconds"
	tests := []struct {
		name      string
		obj       *MetricAccess
		opts      CompileOptions
		wantRules int // -1: do not check
		wantErrs  []error
		visible   []labels.Labels
		hidden    []labels.Labels
	}{
		{
			name:      "exact name covers the histogram family, nothing else",
			obj:       newMA("team-a", "a", "team-a", nil, hist),
			wantRules: 1,
			visible: []labels.Labels{
				s(hist, "namespace", "team-a"),
				s(hist+"_bucket", "namespace", "team-a", "le", "0.5"),
				s(hist+"_sum", "namespace", "team-a"),
				s(hist+"_count", "namespace", "team-a"),
			},
			hidden: []labels.Labels{
				s(hist+"_total", "namespace", "team-a"),
				s(hist+"_foo", "namespace", "team-a"),
				s("x"+hist, "namespace", "team-a"),
				s(hist, "namespace", "team-b"),
				s(hist),
			},
		},
		{
			name:      "exact name is not a regex",
			obj:       newMA("team-a", "a", "team-a", nil, "http_requests_total"),
			wantRules: 1,
			visible:   []labels.Labels{s("http_requests_total", "namespace", "team-a")},
			hidden: []labels.Labels{
				s("http_requests_total_x", "namespace", "team-a"),
				s("xhttp_requests_total", "namespace", "team-a"),
			},
		},
		{
			name:      "name with colons is exact",
			obj:       newMA("team-a", "a", "team-a", nil, "job:up:sum"),
			wantRules: 1,
			visible:   []labels.Labels{s("job:up:sum", "namespace", "team-a")},
			hidden:    []labels.Labels{s("job:up:sum2", "namespace", "team-a")},
		},
		{
			name:      "regex is anchored",
			obj:       newMA("team-a", "a", "team-a", nil, "http_.*"),
			wantRules: 1,
			visible: []labels.Labels{
				s("http_requests_total", "namespace", "team-a"),
				s("http_", "namespace", "team-a"),
			},
			hidden: []labels.Labels{
				s("xhttp_a", "namespace", "team-a"),
				s("http_requests_total", "namespace", "team-b"),
				s("up", "namespace", "team-a"),
			},
		},
		{
			name:      "regexes OR",
			obj:       newMA("team-b", "b", "team-b", nil, "memory_.*", "node_cpu_.*"),
			wantRules: 2,
			visible: []labels.Labels{
				s("memory_usage_bytes", "namespace", "team-b"),
				s("node_cpu_seconds_total", "namespace", "team-b"),
			},
			hidden: []labels.Labels{
				s("up", "namespace", "team-b"),
				s("memory_usage_bytes", "namespace", "team-a"),
				s("total_memory_usage", "namespace", "team-b"),
			},
		},
		{
			name:      "selector without name",
			obj:       newMA("team-c", "c", "team-c", nil, `{job="team-c-api"}`),
			wantRules: 1,
			visible: []labels.Labels{
				s("up", "namespace", "team-c", "job", "team-c-api"),
				s("temperature_celsius", "namespace", "team-c", "job", "team-c-api"),
			},
			hidden: []labels.Labels{
				s("up", "namespace", "team-c", "job", "team-c-worker"),
				s("up", "namespace", "team-b", "job", "team-c-api"),
			},
		},
		{
			name:      "selector with name and regex label (anchored)",
			obj:       newMA("team-c", "c", "team-c", nil, `up{job=~"team-c.*"}`),
			wantRules: 1,
			visible: []labels.Labels{
				s("up", "namespace", "team-c", "job", "team-c-worker"),
				s("up", "namespace", "team-c", "job", "team-c-api"),
			},
			hidden: []labels.Labels{
				s("temperature_celsius", "namespace", "team-c", "job", "team-c-api"),
				s("up", "namespace", "team-c", "job", "xteam-c"),
				s("up", "namespace", "team-b", "job", "team-c-api"),
			},
		},
		{
			name:      "selector naming another namespace reaches nothing",
			obj:       newMA("team-a", "a", "team-a", nil, `{namespace="team-b"}`),
			wantRules: 1,
			hidden: []labels.Labels{
				s("up", "namespace", "team-b"),
				s("up", "namespace", "team-a"),
			},
		},
		{
			name:      "labelSelectors AND every entry",
			obj:       newMA("team-c", "c", "team-c", map[string]string{"cluster": "cluster-a"}, `{job="team-c-api"}`, "up"),
			wantRules: 2,
			visible: []labels.Labels{
				s("up", "namespace", "team-c", "cluster", "cluster-a", "job", "team-c-worker"),
				s("memory_usage_bytes", "namespace", "team-c", "cluster", "cluster-a", "job", "team-c-api"),
			},
			hidden: []labels.Labels{
				s("up", "namespace", "team-c", "cluster", "cluster-b"),
				s("up", "namespace", "team-c"),
				s("memory_usage_bytes", "namespace", "team-c", "cluster", "cluster-b", "job", "team-c-api"),
			},
		},
		{
			name:     "source in another namespace grants nothing",
			obj:      newMA("team-a", "a", "team-b", nil, "up"),
			wantErrs: []error{ErrCrossNamespaceSource},
			hidden: []labels.Labels{
				s("up", "namespace", "team-a"),
				s("up", "namespace", "team-b"),
			},
		},
		{
			name:      "cross-namespace source when allowed",
			obj:       newMA("team-a", "a", "team-b", nil, "up"),
			opts:      CompileOptions{AllowCrossNamespaceSource: true},
			wantRules: 1,
			visible:   []labels.Labels{s("up", "namespace", "team-b")},
			hidden:    []labels.Labels{s("up", "namespace", "team-a")},
		},
		{
			name:     "empty source grants nothing",
			obj:      newMA("team-a", "a", "", nil, "up"),
			opts:     CompileOptions{AllowCrossNamespaceSource: true},
			wantErrs: []error{ErrMissingSource},
			hidden:   []labels.Labels{s("up"), s("up", "namespace", "")},
		},
		{
			name:      ".* stays inside the source",
			obj:       newMA("team-a", "a", "team-a", nil, ".*"),
			wantRules: 1,
			visible:   []labels.Labels{s("anything", "namespace", "team-a")},
			hidden: []labels.Labels{
				s("anything", "namespace", "team-b"),
				s("anything"),
				s("anything", "namespace", "team-a-x"),
			},
		},
		{
			name:      `{job=~".*"} stays inside the source`,
			obj:       newMA("team-a", "a", "team-a", nil, `{job=~".*"}`),
			wantRules: -1, // the parser refuses a selector matching the empty set
			hidden: []labels.Labels{
				s("up", "namespace", "team-b", "job", "team-a-api"),
				s("up", "job", "x"),
				s("up"),
			},
		},
		{
			name:      `{__name__=~".+"} is everything of the source`,
			obj:       newMA("team-a", "a", "team-a", nil, `{__name__=~".+"}`),
			wantRules: 1,
			visible:   []labels.Labels{s("up", "namespace", "team-a")},
			hidden:    []labels.Labels{s("up", "namespace", "team-b"), s("up")},
		},
		{
			name:      "invalid regex reported, rest works",
			obj:       newMA("team-a", "a", "team-a", nil, "http_(", "up"),
			wantRules: 1,
			wantErrs:  []error{ErrInvalidEntry},
			visible:   []labels.Labels{s("up", "namespace", "team-a")},
			hidden:    []labels.Labels{s("http_(", "namespace", "team-a"), s("http_x", "namespace", "team-a")},
		},
		{
			name:      "invalid selectors reported, rest works",
			obj:       newMA("team-a", "a", "team-a", nil, `up{job=}`, `up{job="a"`, `a{2}`, `{}`, "memory_.*"),
			wantRules: 1,
			wantErrs:  []error{ErrInvalidEntry, ErrInvalidEntry, ErrInvalidEntry, ErrInvalidEntry},
			visible:   []labels.Labels{s("memory_usage_bytes", "namespace", "team-a")},
			hidden:    []labels.Labels{s("up", "namespace", "team-a", "job", "a"), s("aa", "namespace", "team-a")},
		},
		{
			name:      "empty entry reported",
			obj:       newMA("team-a", "a", "team-a", nil, "", "up"),
			wantRules: 1,
			wantErrs:  []error{ErrInvalidEntry},
			visible:   []labels.Labels{s("up", "namespace", "team-a")},
			hidden:    []labels.Labels{s("", "namespace", "team-a")},
		},
		{
			name:      "quoted UTF-8 name in a selector",
			obj:       newMA("team-a", "a", "team-a", nil, `{"my.metric"}`),
			wantRules: 1,
			visible:   []labels.Labels{s("my.metric", "namespace", "team-a")},
			hidden:    []labels.Labels{s("myxmetric", "namespace", "team-a"), s("my.metric", "namespace", "team-b")},
		},
		{
			name:      "quoted UTF-8 selector with labels",
			obj:       newMA("team-a", "a", "team-a", nil, `{"my.metric", "my.label"="x"}`),
			wantRules: 1,
			visible:   []labels.Labels{s("my.metric", "namespace", "team-a", "my.label", "x")},
			hidden:    []labels.Labels{s("my.metric", "namespace", "team-a")},
		},
		{
			name:      "unquoted dotted name is a regex",
			obj:       newMA("team-a", "a", "team-a", nil, "my.metric"),
			wantRules: 1,
			visible:   []labels.Labels{s("my.metric", "namespace", "team-a"), s("myxmetric", "namespace", "team-a")},
		},
		{
			name:     "bad label selector name voids the whole object",
			obj:      newMA("team-a", "a", "team-a", map[string]string{"": "x", "cluster": "cluster-a"}, "up"),
			wantErrs: []error{ErrInvalidLabelSelector},
			hidden:   []labels.Labels{s("up", "namespace", "team-a", "cluster", "cluster-a"), s("up", "namespace", "team-a")},
		},
		{
			name:     "label selector with invalid UTF-8 voids the whole object",
			obj:      newMA("team-a", "a", "team-a", map[string]string{"a\xff": "x"}, "up"),
			wantErrs: []error{ErrInvalidLabelSelector},
			hidden:   []labels.Labels{s("up", "namespace", "team-a")},
		},
		{
			name:      "UTF-8 label selector name",
			obj:       newMA("team-a", "a", "team-a", map[string]string{"k8s.cluster": "a"}, "up"),
			wantRules: 1,
			visible:   []labels.Labels{s("up", "namespace", "team-a", "k8s.cluster", "a")},
			hidden:    []labels.Labels{s("up", "namespace", "team-a")},
		},
		{
			name:      "custom namespace label",
			obj:       newMA("team-a", "a", "team-a", nil, "up"),
			opts:      CompileOptions{NamespaceLabel: "kubernetes_namespace"},
			wantRules: 1,
			visible:   []labels.Labels{s("up", "kubernetes_namespace", "team-a")},
			hidden:    []labels.Labels{s("up", "namespace", "team-a")},
		},
		{
			name:     "no metrics",
			obj:      newMA("team-a", "a", "team-a", nil),
			wantErrs: []error{ErrInvalidObject},
		},
		{
			name:     "no name and no namespace",
			obj:      newMA("", "", "team-a", nil, "up"),
			opts:     CompileOptions{AllowCrossNamespaceSource: true},
			wantErrs: []error{ErrInvalidObject, ErrInvalidObject},
			hidden:   []labels.Labels{s("up", "namespace", "team-a")},
		},
		{
			name:     "entries of a void object are still checked",
			obj:      newMA("team-a", "a", "team-b", nil, "up", "x{"),
			wantErrs: []error{ErrCrossNamespaceSource, ErrInvalidEntry},
		},
		{
			name:     "nil object",
			obj:      nil,
			wantErrs: []error{ErrInvalidObject},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules, problems := Compile(tc.obj, tc.opts)
			if tc.wantRules >= 0 && len(rules) != tc.wantRules {
				t.Errorf("got %d rules %v, want %d", len(rules), rules, tc.wantRules)
			}
			if tc.wantRules >= 0 {
				var got []error
				for _, p := range problems {
					got = append(got, p.Err)
				}
				if !slices.Equal(got, tc.wantErrs) {
					t.Errorf("problems %v, want kinds %v", problems, tc.wantErrs)
				}
			}
			for i, p := range problems {
				if i < len(tc.wantErrs) && !errors.Is(p, tc.wantErrs[i]) {
					t.Errorf("problem %v does not unwrap to %v", p, tc.wantErrs[i])
				}
			}
			nsLabel := tc.opts.namespaceLabel()
			for _, r := range rules {
				if !hasMatcher(r, labels.MatchEqual, nsLabel, tc.obj.Spec.Source) {
					t.Errorf("rule %v lacks %s=%q", r, nsLabel, tc.obj.Spec.Source)
				}
			}
			pol := &Policy{Namespace: "x", Rules: rules}
			for _, ls := range tc.visible {
				if !pol.Matches(ls) {
					t.Errorf("%v should be visible through %v", ls, rules)
				}
			}
			for _, ls := range tc.hidden {
				if pol.Matches(ls) {
					t.Errorf("%v should be hidden from %v", ls, rules)
				}
			}
		})
	}
}

func hasMatcher(r Rule, typ labels.MatchType, name, value string) bool {
	return slices.ContainsFunc(r.Matchers, func(m *labels.Matcher) bool {
		return m != nil && m.Type == typ && m.Name == name && m.Value == value
	})
}

func TestCompileRuleShape(t *testing.T) {
	obj := newMA("team-c", "api", "team-c", map[string]string{"cluster": "cluster-a", "env": "prod"},
		"up", `up{job=~"team-c.*"}`, `{namespace="team-c", job="x"}`)
	rules, problems := Compile(obj, CompileOptions{})
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	want := []struct{ str, origin string }{
		{`{__name__=~"up|up_bucket|up_sum|up_count", cluster="cluster-a", env="prod", namespace="team-c"}`, "team-c/api: up"},
		{`{__name__="up", cluster="cluster-a", env="prod", job=~"team-c.*", namespace="team-c"}`, `team-c/api: up{job=~"team-c.*"}`},
		// The namespace matcher written in the selector is not repeated.
		{`{cluster="cluster-a", env="prod", job="x", namespace="team-c"}`, `team-c/api: {namespace="team-c", job="x"}`},
	}
	if len(rules) != len(want) {
		t.Fatalf("got %d rules, want %d", len(rules), len(want))
	}
	for i, w := range want {
		if got := rules[i].String(); got != w.str {
			t.Errorf("rule %d = %s, want %s", i, got, w.str)
		}
		if rules[i].Origin != w.origin {
			t.Errorf("rule %d origin = %q, want %q", i, rules[i].Origin, w.origin)
		}
	}
	if n := len(rules[2].Matchers); n != 4 {
		t.Errorf("rule 2 has %d matchers, want 4: %v", n, rules[2].Matchers)
	}
}

func TestProblemError(t *testing.T) {
	_, problems := Compile(newMA("team-a", "acc", "team-a", nil, "http_("), CompileOptions{})
	if len(problems) != 1 {
		t.Fatalf("problems: %v", problems)
	}
	var err error = problems[0]
	if !errors.Is(err, ErrInvalidEntry) || errors.Is(err, ErrInvalidObject) {
		t.Errorf("errors.Is wrong for %v", err)
	}
	msg := err.Error()
	for _, part := range []string{"team-a/acc", `"http_("`, ErrInvalidEntry.Error(), "regex"} {
		if !strings.Contains(msg, part) {
			t.Errorf("%q lacks %q", msg, part)
		}
	}
}

func TestPolicyMatches(t *testing.T) {
	ruleA := Rule{Matchers: []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "namespace", "team-a"),
		labels.MustNewMatcher(labels.MatchRegexp, "__name__", "http_.*"),
	}}
	ruleB := Rule{Matchers: []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "namespace", "team-a"),
		labels.MustNewMatcher(labels.MatchNotEqual, "job", "secret"),
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"),
	}}
	tests := []struct {
		name   string
		policy *Policy
		series labels.Labels
		want   bool
	}{
		{"nil policy sees everything", nil, s("up"), true},
		{"admin sees everything", &Policy{Admin: true}, s("up", "namespace", "x"), true},
		{"no rules sees nothing", &Policy{Namespace: "team-a"}, s("up", "namespace", "team-a"), false},
		{"first rule", &Policy{Rules: []Rule{ruleA, ruleB}}, s("http_x", "namespace", "team-a"), true},
		{"second rule", &Policy{Rules: []Rule{ruleA, ruleB}}, s("up", "namespace", "team-a", "job", "a"), true},
		{"negative matcher", &Policy{Rules: []Rule{ruleA, ruleB}}, s("up", "namespace", "team-a", "job", "secret"), false},
		{"absent label is empty", &Policy{Rules: []Rule{ruleB}}, s("up", "namespace", "team-a"), true},
		{"other namespace", &Policy{Rules: []Rule{ruleA, ruleB}}, s("up", "namespace", "team-b"), false},
		{"no namespace label", &Policy{Rules: []Rule{ruleA, ruleB}}, s("http_x"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.Matches(tc.series); got != tc.want {
				t.Errorf("Matches(%v) = %v, want %v", tc.series, got, tc.want)
			}
		})
	}
}
