package httpapi

import (
	"slices"
	"strings"
	"sync"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
)

// requestGroups collects, for one request's log line, which backends its
// fan-outs called and which groups they left out and why (engine.Observer).
type requestGroups struct {
	mu      sync.Mutex
	targets []string // "group=backend", " (failed)" appended when it failed
	groups  []groupLog
}

// groupLog is what a request did with one group. A group can be called for
// one selector and skipped for another of the same query, so both show.
type groupLog struct {
	Name   string `json:"name"`
	Called bool   `json:"called"`
	// Failed: called, and no replica answered any call.
	Failed bool `json:"failed,omitempty"`
	// Skipped: "reason" or "reason: detail", each once.
	Skipped  []string `json:"skipped,omitempty"`
	answered bool
}

func (g groupLog) String() string {
	var b strings.Builder
	b.WriteString(g.Name)
	switch {
	case g.Failed:
		b.WriteString(" called (failed)")
	case g.Called:
		b.WriteString(" called")
	}
	if len(g.Skipped) > 0 {
		b.WriteString(" skipped (" + strings.Join(g.Skipped, "; ") + ")")
	}
	return b.String()
}

func (r *requestGroups) group(name string) *groupLog {
	for i := range r.groups {
		if r.groups[i].Name == name {
			return &r.groups[i]
		}
	}
	r.groups = append(r.groups, groupLog{Name: name})
	return &r.groups[len(r.groups)-1]
}

// Called implements engine.Observer.
func (r *requestGroups) Called(group, backend string, err error) {
	t := group + "=" + backend
	if err != nil {
		t += " (failed)"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.targets, t) {
		r.targets = append(r.targets, t)
	}
	g := r.group(group)
	g.Called = true
	g.answered = g.answered || err == nil
	g.Failed = !g.answered
}

// Skipped implements engine.Observer.
func (r *requestGroups) Skipped(group string, reason engine.SkipReason, detail string) {
	s := string(reason)
	if detail != "" {
		s += ": " + detail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.group(group)
	if !slices.Contains(g.Skipped, s) {
		g.Skipped = append(g.Skipped, s)
	}
}

// snapshot returns the targets and the groups, sorted by name.
func (r *requestGroups) snapshot() ([]string, []groupLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	groups := slices.Clone(r.groups)
	slices.SortFunc(groups, func(a, b groupLog) int { return strings.Compare(a.Name, b.Name) })
	return slices.Clone(r.targets), groups
}
