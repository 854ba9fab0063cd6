package engine

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

type recordingObserver struct {
	mu      sync.Mutex
	called  []string
	skipped []string // "group reason"
}

func (o *recordingObserver) Called(group, _ string, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.called = append(o.called, group)
}

func (o *recordingObserver) Skipped(group string, reason SkipReason, _ string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.skipped = append(o.skipped, group+" "+string(reason))
}

// Groups left out, for their labels or for the tenant's rules, reach the
// request's observer with the reason, and an answer no group was asked
// for says so in a warning. No backend listens: a call would fail.
func TestSkippedGroupsObservedAndWarned(t *testing.T) {
	f, _ := newTestFanout(t, discovery.PartialWarn,
		discovery.StaticGroup{Name: "eu", URLs: []string{"http://127.0.0.1:1"}, Labels: map[string]string{"cluster": "eu"}},
		discovery.StaticGroup{Name: "us", URLs: []string{"http://127.0.0.1:1"}, Labels: map[string]string{"cluster": "us"}},
	)
	policy := &tenancy.Policy{Namespace: "a", Rules: []tenancy.Rule{{Matchers: []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"),
	}}}}
	for _, tc := range []struct {
		name   string
		policy *tenancy.Policy
		ms     []*labels.Matcher
		reason SkipReason
	}{
		{"group labels", nil, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "cluster", "asia")}, SkipGroupLabels},
		{"tenant rules", policy, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "other")}, SkipTenantRules},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &recordingObserver{}
			ctx := WithObserver(tenancy.NewContext(context.Background(), tc.policy), o)
			q, err := f.Querier(0, 1<<40)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = q.Close() }()
			names, warns, err := q.LabelNames(ctx, nil, tc.ms...)
			if err != nil || len(names) != 0 {
				t.Fatalf("LabelNames = %v, %v; want nothing, no error", names, err)
			}
			if len(o.called) != 0 {
				t.Errorf("called %v; want no backend asked", o.called)
			}
			want := "eu " + string(tc.reason) + ",us " + string(tc.reason)
			if got := strings.Join(o.skipped, ","); got != want {
				t.Errorf("observer heard skipped %q, want %q", got, want)
			}
			if msgs, _ := warns.AsStrings("", 0, 0); len(msgs) != 1 || !strings.Contains(msgs[0], "every backend group was skipped") ||
				!strings.Contains(msgs[0], "eu ("+string(tc.reason)+")") {
				t.Errorf("warnings %q; want one naming the skipped groups and why", msgs)
			}
		})
	}
}
