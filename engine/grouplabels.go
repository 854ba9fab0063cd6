package engine

import (
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
)

// withGroupLabels is the one place where the labels a group stands for are
// put on what its backends answer outside remote read (exemplars, rules,
// alerts), so those carry them the way series do. A label the answer
// already has keeps its own value, as Prometheus' remote read does with
// external labels.
func withGroupLabels(g *discovery.Group, lset labels.Labels) labels.Labels {
	if g == nil || g.Labels.IsEmpty() {
		return lset
	}
	b := labels.NewBuilder(lset)
	g.Labels.Range(func(l labels.Label) {
		if !lset.Has(l.Name) {
			b.Set(l.Name, l.Value)
		}
	})
	return b.Labels()
}

// replicaGroups maps every replica URL to its group, so a fan-out callback
// (which is handed a client) knows whose answer it holds.
func replicaGroups(groups []*discovery.Group) map[string]*discovery.Group {
	m := map[string]*discovery.Group{}
	for _, g := range groups {
		for _, r := range g.Replicas {
			m[r.URL] = g
			m[strings.TrimRight(r.URL, "/")] = g
		}
	}
	return m
}
