package engine

import (
	"context"
	"strings"

	"github.com/prometheus/prometheus/util/annotations"
)

// callKind is what a fan-out asks backends for: the "kind" label of the
// backend metrics and the word errors and logs use for the call.
type callKind string

const (
	callRead        callKind = "read"         // remote read of samples
	callSeries      callKind = "series"       // /api/v1/series
	callLabels      callKind = "labels"       // label names
	callLabelValues callKind = "label_values" // values of one label
	callExemplars   callKind = "exemplars"
	callMetadata    callKind = "metadata"
	callRules       callKind = "rules"
	callAlerts      callKind = "alerts"
	callVersion     callKind = "version" // which Prometheus a group runs (push-down)
	callQuery       callKind = "query"   // a pushed-down subquery
)

// SkipReason says why a fan-out did not ask a group: the "reason" label of
// prometheus_proxy_backend_groups_skipped_total and of request logs.
type SkipReason string

const (
	// SkipGroupLabels: the group's external or configured labels contradict
	// every matcher set of the call (the group is pruned).
	SkipGroupLabels SkipReason = "group_labels"
	// SkipTenantRules: the tenant's rules leave nothing the selector may
	// match (then no group is asked), or nothing in this group's labels
	// (a pushed-down fragment).
	SkipTenantRules SkipReason = "tenant_rules"
)

// Observer hears, for one request, of every backend call its fan-outs make
// and of every group they leave out. Its methods may be called from several
// goroutines at once.
type Observer interface {
	// Called: one call to a replica of group (its URL, redacted) and its
	// outcome (nil: answered).
	Called(group, backend string, err error)
	// Skipped: the group was not asked, for reason; detail says which
	// label or rule decided, when one did.
	Skipped(group string, reason SkipReason, detail string)
}

type observerKey struct{}

// WithObserver makes the fan-out report to o the backend calls and skipped
// groups of requests run with the returned context (for request logs).
func WithObserver(ctx context.Context, o Observer) context.Context {
	return context.WithValue(ctx, observerKey{}, o)
}

func observerFrom(ctx context.Context) Observer {
	o, _ := ctx.Value(observerKey{}).(Observer)
	return o
}

// skipAll counts and reports every group as skipped for reason: the
// tenant's rules emptied the call before any group could be chosen. It
// returns the warning the answer carries.
func (f *Fanout) skipAll(ctx context.Context, kind callKind, reason SkipReason) annotations.Annotations {
	f.metrics.skipped.WithLabelValues(string(reason)).Inc()
	groups := f.backends.Groups()
	w := &SkippedWarning{Kind: string(kind)}
	o := observerFrom(ctx)
	for _, g := range groups {
		if o != nil {
			o.Skipped(g.Name, reason, "")
		}
		w.Groups = append(w.Groups, g.Name+" ("+string(reason)+")")
	}
	var warns annotations.Annotations
	if len(groups) > 0 {
		warns.Add(w)
	}
	return warns
}

// skipGroup counts and reports one group left out of a fan-out.
func (f *Fanout) skipGroup(ctx context.Context, group string, reason SkipReason, detail string) {
	f.metrics.skipped.WithLabelValues(string(reason)).Inc()
	f.opts.Logger.Debug("group skipped", "group", group, "reason", reason, "detail", detail)
	if o := observerFrom(ctx); o != nil {
		o.Skipped(group, reason, detail)
	}
}

// SkippedWarning is the warning of an answer for which no group was asked:
// without it an empty success reads as "no such series" when the groups'
// labels or the tenant's rules ruled every group out. It names groups and
// reasons only, never what decided (another group's labels), so a tenant
// may read it.
type SkippedWarning struct {
	Kind   string
	Groups []string // "group (reason)"
}

func (w *SkippedWarning) Error() string {
	return "every backend group was skipped for this " + w.Kind + " call, none was asked: " + strings.Join(w.Groups, ", ")
}
