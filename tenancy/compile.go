package tenancy

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// DefaultNamespaceLabel is the label that names a series' namespace unless
// tenants.namespace_label says otherwise.
const DefaultNamespaceLabel = "namespace"

// Sentinel errors, for callers that branch on the kind of problem
// (errors.Is works on a Problem and on the errors the Registry returns).
var (
	// ErrInvalidObject: the object as a whole is unusable (no name, no
	// namespace, nothing listed); it grants nothing.
	ErrInvalidObject = errors.New("invalid MetricAccess")
	// ErrMissingSource: spec.source is empty; the object grants nothing.
	ErrMissingSource = errors.New("spec.source is empty")
	// ErrCrossNamespaceSource: spec.source names a namespace other than the
	// object's own and tenants.allow_cross_namespace_source is off.
	ErrCrossNamespaceSource = errors.New("spec.source is another namespace")
	// ErrInvalidLabelSelector: a spec.labelSelectors entry is unusable. The
	// whole object grants nothing: ignoring the entry would widen access.
	ErrInvalidLabelSelector = errors.New("invalid spec.labelSelectors entry")
	// ErrInvalidEntry: one spec.metrics entry is unusable; it grants
	// nothing, the object's other entries still apply.
	ErrInvalidEntry = errors.New("invalid spec.metrics entry")
)

// CompileOptions are the tenancy settings that shape compiled rules.
type CompileOptions struct {
	// NamespaceLabel is the series label holding the namespace; empty means
	// DefaultNamespaceLabel.
	NamespaceLabel string
	// AllowCrossNamespaceSource lets an object grant another namespace's series.
	AllowCrossNamespaceSource bool
}

func (o CompileOptions) namespaceLabel() string {
	if o.NamespaceLabel == "" {
		return DefaultNamespaceLabel
	}
	return o.NamespaceLabel
}

// Problem is a reason why (part of) a MetricAccess grants nothing.
type Problem struct {
	// Object is "namespace/name" (or a file for problems of a file source).
	Object string `json:"object"`
	// Entry is the spec.metrics entry concerned; empty for the whole object.
	Entry  string `json:"entry,omitempty"`
	Reason string `json:"reason"`
	// Err is the sentinel error, for errors.Is.
	Err error `json:"-"`
}

func (p Problem) Error() string {
	if p.Entry != "" {
		return fmt.Sprintf("%s: entry %q: %s", p.Object, p.Entry, p.Reason)
	}
	return p.Object + ": " + p.Reason
}

// Unwrap returns the sentinel error.
func (p Problem) Unwrap() error { return p.Err }

func newProblem(object, entry string, sentinel error, detail string) Problem {
	reason := sentinel.Error()
	if detail != "" {
		reason += ": " + detail
	}
	return Problem{Object: object, Entry: entry, Reason: reason, Err: sentinel}
}

// selectorParser is safe for concurrent use: every call builds its own state.
var selectorParser = parser.NewParser(parser.Options{})

// Compile turns a MetricAccess into rules, one per valid spec.metrics entry,
// each restricted to spec.source (and spec.labelSelectors). Whatever cannot be
// used is returned as problems: it grants nothing. Compile never panics and
// never returns a rule without the namespace matcher.
func Compile(obj *MetricAccess, opts CompileOptions) (rules []Rule, problems []Problem) {
	if obj == nil {
		return nil, []Problem{newProblem("<nil>", "", ErrInvalidObject, "no object")}
	}
	key := obj.Key()
	nsLabel := opts.namespaceLabel()

	// Object-level problems void every rule; entries are still checked so
	// that one look at the problems shows everything to fix.
	if obj.Namespace == "" {
		problems = append(problems, newProblem(key, "", ErrInvalidObject, "metadata.namespace is empty"))
	}
	if obj.Name == "" {
		problems = append(problems, newProblem(key, "", ErrInvalidObject, "metadata.name is empty"))
	}
	if len(obj.Spec.Metrics) == 0 {
		problems = append(problems, newProblem(key, "", ErrInvalidObject, "spec.metrics is empty"))
	}
	switch src := obj.Spec.Source; {
	case src == "":
		problems = append(problems, newProblem(key, "", ErrMissingSource, ""))
	case src != obj.Namespace && !opts.AllowCrossNamespaceSource:
		problems = append(problems, newProblem(key, "", ErrCrossNamespaceSource,
			fmt.Sprintf("source %q, object namespace %q (tenants.allow_cross_namespace_source is false)", src, obj.Namespace)))
	case !utf8.ValidString(src):
		problems = append(problems, newProblem(key, "", ErrInvalidObject, "spec.source is not valid UTF-8"))
	}
	if !model.UTF8Validation.IsValidLabelName(nsLabel) {
		problems = append(problems, newProblem(key, "", ErrInvalidObject, fmt.Sprintf("namespace label %q is not a valid label name", nsLabel)))
	}

	// Sorted so that the rules (and their fingerprint) do not depend on map order.
	var restrict []*labels.Matcher
	for _, k := range slices.Sorted(maps.Keys(obj.Spec.LabelSelectors)) {
		v := obj.Spec.LabelSelectors[k]
		switch {
		case !model.UTF8Validation.IsValidLabelName(k):
			problems = append(problems, newProblem(key, "", ErrInvalidLabelSelector, fmt.Sprintf("%q is not a valid label name", k)))
		case !utf8.ValidString(v):
			problems = append(problems, newProblem(key, "", ErrInvalidLabelSelector, fmt.Sprintf("value of %q is not valid UTF-8", k)))
		default:
			restrict = append(restrict, &labels.Matcher{Type: labels.MatchEqual, Name: k, Value: v})
		}
	}
	objectValid := len(problems) == 0
	restrict = append(restrict, &labels.Matcher{Type: labels.MatchEqual, Name: nsLabel, Value: obj.Spec.Source})

	for _, entry := range obj.Spec.Metrics {
		ms, err := compileEntry(entry)
		if err != nil {
			problems = append(problems, newProblem(key, entry, ErrInvalidEntry, err.Error()))
			continue
		}
		if !objectValid {
			continue
		}
		rules = append(rules, Rule{
			Matchers: appendUnique(ms, restrict),
			Origin:   key + ": " + entry,
		})
	}
	if !objectValid {
		return nil, problems
	}
	return rules, problems
}

// compileEntry turns one spec.metrics entry into the matchers it grants,
// before the object's restrictions are added.
func compileEntry(entry string) ([]*labels.Matcher, error) {
	switch {
	case entry == "":
		return nil, errors.New("empty")

	case model.LegacyValidation.IsValidMetricName(entry):
		// A histogram or summary named in the object comes whole.
		q := regexp.QuoteMeta(entry)
		re := q + "|" + q + "_bucket|" + q + "_sum|" + q + "_count"
		m, err := labels.NewMatcher(labels.MatchRegexp, model.MetricNameLabel, re)
		if err != nil {
			return nil, fmt.Errorf("metric name: %w", err)
		}
		return []*labels.Matcher{m}, nil

	case strings.Contains(entry, "{"):
		ms, err := selectorParser.ParseMetricSelector(entry)
		if err != nil {
			// A partial result may come back with the error: never use it.
			return nil, fmt.Errorf("selector: %w", err)
		}
		if len(ms) == 0 || slices.Contains(ms, nil) {
			return nil, errors.New("selector: no usable matchers")
		}
		return ms, nil

	default:
		// labels.NewMatcher anchors the regex: "http_.*" never matches "xhttp_a".
		m, err := labels.NewMatcher(labels.MatchRegexp, model.MetricNameLabel, entry)
		if err != nil {
			return nil, fmt.Errorf("regex: %w", err)
		}
		return []*labels.Matcher{m}, nil
	}
}

// appendUnique appends the matchers of extra that ms does not already hold,
// so that a selector repeating a restriction does not carry it twice.
func appendUnique(ms, extra []*labels.Matcher) []*labels.Matcher {
	out := make([]*labels.Matcher, 0, len(ms)+len(extra))
	for _, m := range slices.Concat(ms, extra) {
		if !slices.ContainsFunc(out, func(o *labels.Matcher) bool {
			return o.Type == m.Type && o.Name == m.Name && o.Value == m.Value
		}) {
			out = append(out, m)
		}
	}
	return out
}
