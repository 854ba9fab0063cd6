// Package tenancy owns who may read what: MetricAccess objects, their
// compilation to label matchers, and the per-namespace policies built from them.
package tenancy

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
)

// Rule is one grant: a series is covered by the rule when every matcher
// matches it. Origin says where the rule came from (for debug output).
type Rule struct {
	Matchers []*labels.Matcher `json:"-"`
	Origin   string            `json:"origin"`
}

// Matches reports whether the label set satisfies every matcher of the rule.
func (r Rule) Matches(lset labels.Labels) bool {
	for _, m := range r.Matchers {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// String renders the rule as a PromQL selector, matchers in a canonical
// order (name, operator, value), so that equal rules print equally.
func (r Rule) String() string {
	ms := slices.Clone(r.Matchers)
	slices.SortFunc(ms, compareMatchers)
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		if m == nil {
			b.WriteString("<nil>")
			continue
		}
		b.WriteString(m.String())
	}
	b.WriteByte('}')
	return b.String()
}

func compareMatchers(a, b *labels.Matcher) int {
	switch {
	case a == nil || b == nil:
		// Only a broken rule holds nil; keep the order total anyway.
		return cmp.Compare(boolInt(a == nil), boolInt(b == nil))
	case a.Name != b.Name:
		return strings.Compare(a.Name, b.Name)
	case a.Type != b.Type:
		return cmp.Compare(a.Type, b.Type)
	default:
		return strings.Compare(a.Value, b.Value)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Policy is what one request may read. A nil *Policy or an admin policy
// reads everything; otherwise a series is visible iff some rule matches it.
type Policy struct {
	// Namespace names the tenant: one namespace, or for a union the
	// sorted namespaces joined by commas (also the key it is queued and
	// limited under).
	Namespace string
	// Namespaces are the namespaces of a union (sorted); nil for one.
	Namespaces []string
	Admin      bool
	Rules      []Rule
	// Fingerprint identifies the rule set (not the namespace): two requests
	// with equal fingerprints see exactly the same series.
	Fingerprint string
}

// Unrestricted reports whether the policy lets everything through.
func (p *Policy) Unrestricted() bool { return p == nil || p.Admin }

// Matches reports whether the series with these labels is visible.
func (p *Policy) Matches(lset labels.Labels) bool {
	if p.Unrestricted() {
		return true
	}
	for _, r := range p.Rules {
		if r.Matches(lset) {
			return true
		}
	}
	return false
}

type policyKey struct{}

// NewContext returns a context carrying the policy of the request.
func NewContext(ctx context.Context, p *Policy) context.Context {
	return context.WithValue(ctx, policyKey{}, p)
}

// FromContext returns the policy carried by ctx; nil means unrestricted.
func FromContext(ctx context.Context) *Policy {
	p, _ := ctx.Value(policyKey{}).(*Policy)
	return p
}
