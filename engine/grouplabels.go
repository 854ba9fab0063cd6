package engine

import (
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
)

// withGroupLabels is the one place where what a group's backends answer
// outside remote read (exemplars, rules, alerts) is given the group's
// external labels and loses its replica labels, exactly as its series are
// (discovery.Group.ApplyExternalLabels).
func withGroupLabels(g *discovery.Group, lset labels.Labels) labels.Labels {
	if g == nil {
		return lset
	}
	return g.ApplyExternalLabels(lset)
}
