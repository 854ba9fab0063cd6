// Package discovery finds the Prometheus backends: groups of replicas that
// hold the same data, from a static list or from Kubernetes, with their health.
package discovery

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Load-balancing and partial-response modes.
const (
	RoundRobin = "round-robin"
	Random     = "random"

	PartialWarn  = "warn"
	PartialAbort = "abort"
)

// Config is the `discovery` section of the proxy's configuration.
type Config struct {
	RefreshInterval     model.Duration    `yaml:"refresh_interval"`
	Static              []StaticGroup     `yaml:"static"`
	Kubernetes          *KubernetesConfig `yaml:"kubernetes"`
	LoadBalancing       string            `yaml:"load_balancing"`
	PartialResponse     string            `yaml:"partial_response"`
	HealthCheckInterval model.Duration    `yaml:"health_check_interval"`
	// Replicas are marked unhealthy after this many failed probes or calls in
	// a row, and healthy again after as many good probes (hysteresis).
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	HealthyThreshold   int `yaml:"healthy_threshold"`
}

// StaticGroup is a group given by hand: replicas holding the same data.
type StaticGroup struct {
	Name   string            `yaml:"name"`
	URLs   []string          `yaml:"urls"`
	Labels map[string]string `yaml:"labels"`
}

// KubernetesConfig is the seed's `discovery.kubernetes` section.
type KubernetesConfig struct {
	Kubeconfig          string            `yaml:"kubeconfig"`
	Namespaces          []string          `yaml:"namespaces"`
	LabelSelectors      map[string]string `yaml:"label_selectors"`
	AnnotationSelectors map[string]string `yaml:"annotation_selectors"`
	Port                string            `yaml:"port"`
	ResourceTypes       []string          `yaml:"resource_types"`
	Scheme              string            `yaml:"scheme"`
	PathPrefix          string            `yaml:"path_prefix"`
	PodGroupLabel       string            `yaml:"pod_group_label"`
}

// Validate fills defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = model.Duration(30 * time.Second)
	}
	if c.HealthCheckInterval <= 0 {
		c.HealthCheckInterval = model.Duration(10 * time.Second)
	}
	if c.UnhealthyThreshold <= 0 {
		c.UnhealthyThreshold = 2
	}
	if c.HealthyThreshold <= 0 {
		c.HealthyThreshold = 2
	}
	switch c.LoadBalancing {
	case "":
		c.LoadBalancing = RoundRobin
	case RoundRobin, Random:
	default:
		return fmt.Errorf("discovery.load_balancing: %q is neither %q nor %q", c.LoadBalancing, RoundRobin, Random)
	}
	switch c.PartialResponse {
	case "":
		c.PartialResponse = PartialWarn
	case PartialWarn, PartialAbort:
	default:
		return fmt.Errorf("discovery.partial_response: %q is neither %q nor %q", c.PartialResponse, PartialWarn, PartialAbort)
	}
	if c.Kubernetes != nil {
		if err := c.Kubernetes.Validate(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, g := range c.Static {
		if g.Name == "" {
			return fmt.Errorf("discovery.static[%d]: name is required", i)
		}
		if seen[g.Name] {
			return fmt.Errorf("discovery.static[%d]: duplicate group name %q", i, g.Name)
		}
		seen[g.Name] = true
		if len(g.URLs) == 0 {
			return fmt.Errorf("discovery.static[%d] (%s): at least one url is required", i, g.Name)
		}
		for _, u := range g.URLs {
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return fmt.Errorf("discovery.static[%d] (%s): bad url %q", i, g.Name, u)
			}
		}
		for k := range g.Labels {
			if !model.LegacyValidation.IsValidLabelName(k) {
				return fmt.Errorf("discovery.static[%d] (%s): bad label name %q", i, g.Name, k)
			}
		}
	}
	return nil
}

// Group is a set of replicas holding the same data. Queries go to one of them.
type Group struct {
	Name     string
	Labels   labels.Labels
	Source   string // "static" or the Kubernetes object it came from
	Replicas []*Replica

	next atomic.Uint64 // round-robin position
}

// Replica is one backend URL and what the proxy knows of its health.
type Replica struct {
	URL string

	mu          sync.Mutex
	healthy     bool
	failures    int // consecutive
	successes   int // consecutive
	lastError   string
	lastCheck   time.Time
	lastLatency time.Duration
}

func newReplica(u string) *Replica { return &Replica{URL: u, healthy: true} }

// ReplicaStatus is a snapshot of a replica for /debug/targets.
type ReplicaStatus struct {
	URL       string        `json:"url"`
	Healthy   bool          `json:"healthy"`
	LastError string        `json:"last_error,omitempty"`
	LastCheck time.Time     `json:"last_check"`
	Latency   time.Duration `json:"latency_ns"`
}

// Status returns a snapshot.
func (r *Replica) Status() ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReplicaStatus{URL: r.URL, Healthy: r.healthy, LastError: r.lastError, LastCheck: r.lastCheck, Latency: r.lastLatency}
}

// Healthy reports the replica's current state.
func (r *Replica) Healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.healthy
}

// Observe records the outcome of a probe or a call. It flips the state only
// after the configured number of equal outcomes in a row, so one lost packet
// does not take a replica out and one lucky answer does not bring it back.
func (r *Replica) Observe(err error, latency time.Duration, unhealthyAfter, healthyAfter int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastCheck = time.Now()
	r.lastLatency = latency
	if err != nil {
		r.lastError = err.Error()
		r.failures++
		r.successes = 0
		if r.failures >= unhealthyAfter {
			r.healthy = false
		}
		return
	}
	r.lastError = ""
	r.successes++
	r.failures = 0
	if r.successes >= healthyAfter {
		r.healthy = true
	}
}

// Order returns the replicas in the order a query should try them: healthy
// ones first, starting at the load balancer's choice, then the unhealthy ones
// as a last resort (a group whose probes all fail may still answer).
func (g *Group) Order(mode string) []*Replica {
	n := len(g.Replicas)
	if n == 0 {
		return nil
	}
	var start int
	if mode == Random {
		start = rand.IntN(n)
	} else {
		start = int(g.next.Add(1)-1) % n
	}
	healthy := make([]*Replica, 0, n)
	var sick []*Replica
	for i := range n {
		r := g.Replicas[(start+i)%n]
		if r.Healthy() {
			healthy = append(healthy, r)
		} else {
			sick = append(sick, r)
		}
	}
	return append(healthy, sick...)
}

// Matches reports whether a query with these matchers can find data in the
// group, and if not, why: a group labelled cluster="a" cannot answer
// {cluster="b"}.
func (g *Group) Matches(ms []*labels.Matcher) (bool, string) {
	for _, m := range ms {
		v, ok := g.labelValue(m.Name)
		if ok && !m.Matches(v) {
			return false, fmt.Sprintf("group label %s=%q contradicts matcher %s", m.Name, v, m)
		}
	}
	return true, ""
}

func (g *Group) labelValue(name string) (string, bool) {
	v := g.Labels.Get(name)
	if v == "" {
		return "", false
	}
	return v, true
}

// Provider yields groups; the static list and Kubernetes are providers.
type Provider interface {
	// Run sends the full current list of groups on every change until ctx ends.
	Run(ctx context.Context, update func([]*Group))
}

// Manager merges the providers' groups, keeps replica health across updates
// and probes replicas in the background.
type Manager struct {
	cfg    Config
	logger *slog.Logger
	probe  func(ctx context.Context, url string) error

	mu       sync.Mutex
	bySource map[string][]*Group
	groups   atomic.Pointer[[]*Group]
	topology atomic.Pointer[string]
	synced   map[string]bool
}

// NewManager validates cfg. probe is called for every replica each health
// check interval (e.g. GET /-/ready).
func NewManager(cfg Config, probe func(ctx context.Context, url string) error, logger *slog.Logger) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if probe == nil {
		return nil, errors.New("discovery: probe is required")
	}
	m := &Manager{cfg: cfg, logger: logger, probe: probe, bySource: map[string][]*Group{}, synced: map[string]bool{}}
	empty := []*Group{}
	m.groups.Store(&empty)
	if len(cfg.Static) > 0 {
		m.set("static", StaticGroups(cfg.Static))
	}
	return m, nil
}

// Config returns the validated configuration.
func (m *Manager) Config() Config { return m.cfg }

// StaticGroups turns the configured static list into groups.
func StaticGroups(static []StaticGroup) []*Group {
	out := make([]*Group, 0, len(static))
	for _, sg := range static {
		g := &Group{Name: sg.Name, Labels: labels.FromMap(sg.Labels), Source: "static"}
		for _, u := range sg.URLs {
			g.Replicas = append(g.Replicas, newReplica(u))
		}
		out = append(out, g)
	}
	return out
}

// Topology identifies the current set of groups and their labels (not
// their replicas, which hold the same data): answers computed under one
// topology may differ under another.
func (m *Manager) Topology() string {
	if t := m.topology.Load(); t != nil {
		return *t
	}
	return ""
}

// Groups returns the current groups, sorted by name. Callers must not modify them.
func (m *Manager) Groups() []*Group { return *m.groups.Load() }

// RunProvider feeds a provider's groups into the manager until ctx ends.
func (m *Manager) RunProvider(ctx context.Context, source string, p Provider) {
	p.Run(ctx, func(gs []*Group) { m.set(source, gs) })
}

// Synced reports whether every started provider delivered at least once.
func (m *Manager) Synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ok := range m.synced {
		if !ok {
			return false
		}
	}
	return true
}

// ExpectProvider marks a provider whose first delivery /ready waits for.
func (m *Manager) ExpectProvider(source string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.synced[source]; !ok {
		m.synced[source] = false
	}
}

func (m *Manager) set(source string, gs []*Group) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Keep the health state of replicas that survive the update.
	old := map[string]*Replica{}
	for _, g := range m.bySource[source] {
		for _, r := range g.Replicas {
			old[g.Name+"\x00"+r.URL] = r
		}
	}
	for _, g := range gs {
		for i, r := range g.Replicas {
			if prev, ok := old[g.Name+"\x00"+r.URL]; ok {
				g.Replicas[i] = prev
			}
		}
	}
	m.bySource[source] = gs
	m.synced[source] = true
	all := []*Group{}
	for _, list := range m.bySource {
		all = append(all, list...)
	}
	slices.SortFunc(all, func(a, b *Group) int { return cmp.Compare(a.Name, b.Name) })
	m.groups.Store(&all)
	h := sha256.New()
	for _, g := range all {
		fmt.Fprintf(h, "%q %s\n", g.Name, g.Labels)
	}
	topo := hex.EncodeToString(h.Sum(nil))
	m.topology.Store(&topo)
}

// RunHealthChecks probes every replica each health_check_interval until ctx ends.
func (m *Manager) RunHealthChecks(ctx context.Context) {
	t := time.NewTicker(time.Duration(m.cfg.HealthCheckInterval))
	defer t.Stop()
	for {
		m.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckNow probes every replica once, in parallel, and waits for the probes.
// A probe gets at most one interval: a replica that slow counts as failed,
// and one hung replica cannot hold up the next round for all the others.
func (m *Manager) CheckNow(ctx context.Context) {
	interval := time.Duration(m.cfg.HealthCheckInterval)
	var wg sync.WaitGroup
	for _, g := range m.Groups() {
		for _, r := range g.Replicas {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, interval)
				defer cancel()
				start := time.Now()
				err := m.probe(pctx, r.URL)
				if ctx.Err() != nil {
					return
				}
				if err != nil && pctx.Err() != nil {
					err = fmt.Errorf("%w (no answer within health_check_interval %s)", err, interval)
				}
				was := r.Healthy()
				m.ObserveCall(r, err, time.Since(start))
				if now := r.Healthy(); now != was {
					m.logger.Info("replica health changed", "group", g.Name, "replica", r.URL, "healthy", now, "err", err)
				}
			})
		}
	}
	wg.Wait()
}

// ObserveCall records the outcome of a probe or a query call on a replica.
func (m *Manager) ObserveCall(r *Replica, err error, latency time.Duration) {
	r.Observe(err, latency, m.cfg.UnhealthyThreshold, m.cfg.HealthyThreshold)
}

// GroupStatus is a group in /debug/targets.
type GroupStatus struct {
	Group    string            `json:"group"`
	Source   string            `json:"source"`
	Labels   map[string]string `json:"labels"`
	Replicas []ReplicaStatus   `json:"replicas"`
}

// Status returns a snapshot of every group for /debug/targets.
func (m *Manager) Status() []GroupStatus {
	gs := m.Groups()
	out := make([]GroupStatus, 0, len(gs))
	for _, g := range gs {
		st := GroupStatus{Group: g.Name, Source: g.Source, Labels: g.Labels.Map()}
		for _, r := range g.Replicas {
			st.Replicas = append(st.Replicas, r.Status())
		}
		out = append(out, st)
	}
	return out
}
