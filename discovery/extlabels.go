package discovery

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
)

// This file owns the external labels of a group in both directions, as
// Prometheus' remote-read handler does for one server:
//   - matchers on external-label names are decided against the group's
//     value and rewritten into what the backend can evaluate
//     (RewriteMatchers);
//   - answers get the external labels added, a label stored on the series
//     winning over the external one, and replica labels dropped
//     (ApplyExternalLabels).
//
// A group's external labels are those its replicas report in
// global.external_labels (all but the replica labels, on which replicas of
// one group differ), merged with the labels configured for the group (the
// backend's own value winning). Labels whose names start with "__" (such as
// Kubernetes discovery's __meta_ labels) describe where a group came from;
// they only prune groups, they never appear in answers.

// DefaultReplicaLabels are the labels on which the replicas of an HA pair
// differ (prometheus-operator's and the usual hand-written one), as Thanos'
// --query.replica-label.
var DefaultReplicaLabels = []string{"prometheus_replica", "replica"}

// anyName matches every series: a backend refuses a selector whose matchers
// all match the empty string, which a rewrite can leave.
var anyName = labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")

// groupView is what a group looks like to queries, recomputed when its
// replicas report new external labels.
type groupView struct {
	// labels are the external and configured labels shown on answers.
	labels labels.Labels
	// external is what the replicas reported (replica labels removed).
	external labels.Labels
	// conflict says how the replicas disagree, or "".
	conflict string
}

// ExternalLabels returns the labels every series of the group carries in
// answers: the replicas' external labels without the replica labels, merged
// with the group's configured labels (the backend's value wins), without
// "__"-prefixed discovery labels. Other consumers of answers (alerts, rules,
// exemplars) use it, or ApplyExternalLabels, to show the same labels.
func (g *Group) ExternalLabels() labels.Labels { return g.view().labels }

// ExternalLabel returns the group's value of one external or configured
// label. Two groups with different values for the same name are disjoint:
// no series of one can be a series of the other (see DisjointOn).
func (g *Group) ExternalLabel(name string) (string, bool) {
	v := g.view().labels.Get(name)
	return v, v != ""
}

// ExternalLabelsConflict says how the group's replicas disagree on their
// external labels (apart from replica labels), or "".
func (g *Group) ExternalLabelsConflict() string { return g.view().conflict }

// DisjointOn reports whether no two of the groups can hold the same series
// because each has its own value of the external or configured label name,
// and if not, why.
func DisjointOn(groups []*Group, name string) (bool, string) {
	seen := map[string]string{}
	for _, g := range groups {
		v, ok := g.ExternalLabel(name)
		if !ok {
			return false, fmt.Sprintf("group %s has no label %s", g.Name, name)
		}
		if other, dup := seen[v]; dup {
			return false, fmt.Sprintf("groups %s and %s share %s=%q", other, g.Name, name, v)
		}
		seen[v] = g.Name
	}
	return true, ""
}

// IsReplicaLabel reports whether name is one of the group's replica labels.
func (g *Group) IsReplicaLabel(name string) bool { return slices.Contains(g.replicaLabels, name) }

// ReplicaLabels are the labels dropped from every answer of the group.
func (g *Group) ReplicaLabels() []string { return slices.Clone(g.replicaLabels) }

// ApplyExternalLabels returns lset as the group's answers show it: the
// group's external labels added where lset has no such label (a stored value
// wins, as in Prometheus' remote-read answers, which merge external labels
// under the series' own), and every replica label removed, so both replicas
// of an HA pair give the same series. It returns lset itself when nothing
// changes.
func (g *Group) ApplyExternalLabels(lset labels.Labels) labels.Labels {
	return g.ExternalLabelsApplier()(lset)
}

// ExternalLabelsApplier returns ApplyExternalLabels for many label sets in
// a row (one answer): it reuses one builder, so it is not safe for
// concurrent use.
func (g *Group) ExternalLabelsApplier() func(labels.Labels) labels.Labels {
	ext := g.view().labels
	var b *labels.Builder
	return func(lset labels.Labels) labels.Labels {
		change := false
		lset.Range(func(l labels.Label) {
			if !change && g.IsReplicaLabel(l.Name) {
				change = true
			}
		})
		ext.Range(func(l labels.Label) {
			if !change && !lset.Has(l.Name) {
				change = true
			}
		})
		if !change {
			return lset
		}
		if b == nil {
			b = labels.NewBuilder(lset)
		} else {
			b.Reset(lset)
		}
		ext.Range(func(l labels.Label) {
			if !lset.Has(l.Name) {
				b.Set(l.Name, l.Value)
			}
		})
		b.Del(g.replicaLabels...)
		return b.Labels()
	}
}

// RewriteMatchers turns the matcher sets a query asks (OR of ANDs) into
// what this group's backends are asked, deciding every matcher on an
// external-label name against the group's value, with every matcher type:
//   - a matcher the group's value fails removes the set (the group is not
//     asked for it; a backend storing that label with another value is
//     trusted to follow its own external labels);
//   - otherwise the backend must return the series that either lack the
//     label (they get the group's value) or store a value the matcher
//     accepts, which is m itself when m accepts "", else m or "" as a regex
//     (an = matcher is never sent: the backend's remote read would turn it
//     into label="" and hide series storing that value);
//   - replica labels appear on no answer, so they are decided against "".
//
// ok is false, with the reason, when no set is left: the group cannot hold
// any series asked for. nil sets (no matchers at all) stay nil.
func (g *Group) RewriteMatchers(sets [][]*labels.Matcher) (out [][]*labels.Matcher, ok bool, reason string) {
	if sets == nil {
		return nil, true, ""
	}
	ext := g.view().labels
	var reasons []string
	for _, set := range sets {
		rewritten, why := g.rewriteSet(ext, set)
		if why != "" {
			reasons = append(reasons, why)
			continue
		}
		out = append(out, rewritten...)
	}
	if len(out) == 0 {
		if len(reasons) == 0 {
			reasons = []string{"no matcher set to ask"}
		}
		return nil, false, strings.Join(slices.Compact(reasons), "; ")
	}
	return out, true, ""
}

// rewriteSet rewrites one AND of matchers; it may yield several sets (a
// !~ matcher whose regex accepts "" but not the group's value needs two).
func (g *Group) rewriteSet(ext labels.Labels, set []*labels.Matcher) ([][]*labels.Matcher, string) {
	out := [][]*labels.Matcher{make([]*labels.Matcher, 0, len(set)+1)}
	appendAll := func(ms ...*labels.Matcher) {
		for i := range out {
			out[i] = append(out[i], ms...)
		}
	}
	for _, m := range set {
		if g.IsReplicaLabel(m.Name) {
			if !m.Matches("") {
				return nil, fmt.Sprintf("replica label %s is dropped from every answer, so %s matches nothing", m.Name, m)
			}
			continue
		}
		v := ext.Get(m.Name)
		if v == "" {
			if g.Labels.Has(m.Name) && strings.HasPrefix(m.Name, "__") {
				// A discovery label: it prunes, and no series stores it.
				if dv := g.Labels.Get(m.Name); !m.Matches(dv) {
					return nil, fmt.Sprintf("group label %s=%q contradicts matcher %s", m.Name, dv, m)
				}
				continue
			}
			appendAll(m)
			continue
		}
		if !m.Matches(v) {
			return nil, fmt.Sprintf("group label %s=%q contradicts matcher %s", m.Name, v, m)
		}
		stored, one := OnStoredData(m, v)
		switch {
		case !one:
			// Series lacking the label, or storing a value m accepts.
			absent := labels.MustNewMatcher(labels.MatchEqual, m.Name, "")
			n := len(out)
			for i := range n {
				dup := append(slices.Clone(out[i]), m)
				out[i] = append(out[i], absent)
				out = append(out, dup)
			}
		case stored != nil:
			appendAll(stored)
		}
	}
	for i, ms := range out {
		if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches("") }) {
			out[i] = append(ms, anyName)
		}
	}
	return out, ""
}

// OnStoredData rewrites a matcher m on a label the proxy adds to the
// group's series, whose value in the group is v (non-empty, accepted by m),
// into what a backend evaluates on the series as it stores them: a series
// lacking the label shows v and passes, one storing its own value passes
// iff m accepts that value. It is the one rewrite used for remote read
// (RewriteMatchers) and for pushed PromQL (the plan package):
//   - m accepting "" stays m;
//   - name="v" becomes name=~"v|", name=~"re" becomes name=~"(?:re)|"
//     (an = matcher is never sent as is: remote read would turn it into
//     name="" and hide the series storing the value);
//   - name!="" needs no matcher (nil): every series of the group shows the
//     label;
//   - name!~"re" with re accepting "" is "absent, or a value re refuses",
//     which no single matcher says: one is false.
func OnStoredData(m *labels.Matcher, v string) (stored *labels.Matcher, one bool) {
	if m.Matches("") {
		return m, true
	}
	switch m.Type {
	case labels.MatchEqual:
		return labels.MustNewMatcher(labels.MatchRegexp, m.Name, regexp.QuoteMeta(m.Value)+"|"), true
	case labels.MatchRegexp:
		return labels.MustNewMatcher(labels.MatchRegexp, m.Name, "(?:"+m.Value+")|"), true
	case labels.MatchNotEqual:
		return nil, true
	default:
		return nil, false
	}
}

// view returns the group's current view; a group no Manager has seen yet
// shows only its configured labels.
func (g *Group) view() *groupView {
	if v := g.ext.Load(); v != nil {
		return v
	}
	v := g.computeView()
	g.ext.CompareAndSwap(nil, v)
	return g.ext.Load()
}

// refreshView recomputes the view from the replicas' reports; it returns
// true when the labels shown changed.
func (g *Group) refreshView() (changed bool, conflict string) {
	v := g.computeView()
	old := g.ext.Swap(v)
	return old == nil || !labels.Equal(old.labels, v.labels), v.conflict
}

func (g *Group) computeView() *groupView {
	var (
		external labels.Labels
		from     string
		known    bool
		conflict []string
	)
	for _, r := range g.Replicas {
		lset, ok := r.reportedLabels()
		if !ok {
			continue
		}
		lset = labels.NewBuilder(lset).Del(g.replicaLabels...).Labels()
		if !known {
			external, from, known = lset, r.URL, true
			continue
		}
		if !labels.Equal(lset, external) {
			conflict = append(conflict, fmt.Sprintf("replica %s reports external labels %s, replica %s reports %s", redact.URL(r.URL), lset, redact.URL(from), external))
		}
	}
	b := labels.NewBuilder(labels.EmptyLabels())
	g.Labels.Range(func(l labels.Label) {
		if !strings.HasPrefix(l.Name, "__") {
			b.Set(l.Name, l.Value)
		}
	})
	external.Range(func(l labels.Label) {
		if c := g.Labels.Get(l.Name); c != "" && c != l.Value {
			conflict = append(conflict, fmt.Sprintf("configured label %s=%q differs from the backends' external label %s=%q (the backends' value is used)", l.Name, c, l.Name, l.Value))
		}
		b.Set(l.Name, l.Value)
	})
	b.Del(g.replicaLabels...)
	return &groupView{labels: b.Labels(), external: external, conflict: strings.Join(conflict, "; ")}
}

// BackendsAddLabels reports whether every label shown on the group's answers
// is one its backends report as an external label: their remote read then
// puts it on every series already, so showing the answers changes no series
// but those that store a replica label themselves.
func (g *Group) BackendsAddLabels() bool {
	v := g.view()
	ok := true
	v.labels.Range(func(l labels.Label) {
		if v.external.Get(l.Name) != l.Value {
			ok = false
		}
	})
	return ok
}
