// Package discovery finds the Prometheus backends: groups of replicas that
// hold the same data, from a static list or from Kubernetes, with their health.
package discovery

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/enum"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
)

// BalanceMode is how a group's replica is chosen (discovery.load_balancing).
type BalanceMode string

// Load-balancing modes.
const (
	RoundRobin BalanceMode = "round-robin"
	Random     BalanceMode = "random"
)

// Validate tells whether m is one of the modes.
func (m BalanceMode) Validate() error { return enum.OneOf(m, RoundRobin, Random) }

// PartialMode is what a fan-out does when a group fails
// (discovery.partial_response).
type PartialMode string

// Partial-response modes.
const (
	PartialWarn  PartialMode = "warn"
	PartialAbort PartialMode = "abort"
)

// Validate tells whether m is one of the modes.
func (m PartialMode) Validate() error { return enum.OneOf(m, PartialWarn, PartialAbort) }

// Config is the `discovery` section of the proxy's configuration.
type Config struct {
	RefreshInterval model.Duration `yaml:"refresh_interval"`
	Static          []StaticGroup  `yaml:"static"`
	// Kubernetes is one cluster entry, or a list of them (several clusters).
	Kubernetes          KubernetesClusters `yaml:"kubernetes"`
	LoadBalancing       BalanceMode        `yaml:"load_balancing"`
	PartialResponse     PartialMode        `yaml:"partial_response"`
	HealthCheckInterval model.Duration     `yaml:"health_check_interval"`
	// Replicas are marked unhealthy after this many failed probes or calls in
	// a row, and healthy again after as many good probes (hysteresis).
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	HealthyThreshold   int `yaml:"healthy_threshold"`
	// ReplicaLabels are removed from every answer, so the replicas of an HA
	// pair (which differ only in them) give one set of series. An empty
	// list removes nothing.
	ReplicaLabels []string `yaml:"replica_labels"`
}

// StaticGroup is a group given by hand: replicas holding the same data.
type StaticGroup struct {
	Name string   `yaml:"name"`
	URLs []string `yaml:"urls"`
	// Labels are added to every answer of the group, like external labels.
	Labels map[string]string `yaml:"labels"`
	// PathPrefix is appended to every URL (a Prometheus behind
	// https://host/prometheus, or a Cortex/Mimir tenant's /prometheus).
	PathPrefix string `yaml:"path_prefix"`
	// HTTPClient replaces backend.http_client for this group's replicas.
	HTTPClient *config_util.HTTPClientConfig `yaml:"http_client"`
}

// KubernetesConfig is the seed's `discovery.kubernetes` section, or one
// entry of its list form.
type KubernetesConfig struct {
	// Name tells the cluster entries apart (required with more than one);
	// it prefixes the names of the entry's groups.
	Name string `yaml:"name"`
	// Labels are added to every group of the entry and to its answers,
	// like external labels (e.g. cluster: prod-eu).
	Labels map[string]string `yaml:"labels"`
	// Access is how backends are reached: direct (default), loadbalancer
	// or apiserver.
	Access string `yaml:"access"`
	// HTTPClient replaces backend.http_client for the entry's backends.
	HTTPClient *config_util.HTTPClientConfig `yaml:"http_client"`

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

// DefaultConfig is what no `discovery` section means: no groups yet, and
// the settings every group then gets.
func DefaultConfig() Config {
	return Config{
		RefreshInterval:     model.Duration(30 * time.Second),
		LoadBalancing:       RoundRobin,
		PartialResponse:     PartialWarn,
		HealthCheckInterval: model.Duration(10 * time.Second),
		UnhealthyThreshold:  2,
		HealthyThreshold:    2,
		ReplicaLabels:       slices.Clone(DefaultReplicaLabels),
	}
}

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults (each kubernetes entry starts from DefaultKubernetesConfig).
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing.
func (c Config) Validate() error {
	if c.RefreshInterval <= 0 {
		return fmt.Errorf("refresh_interval: %s is not positive", c.RefreshInterval)
	}
	if c.HealthCheckInterval <= 0 {
		return fmt.Errorf("health_check_interval: %s is not positive", c.HealthCheckInterval)
	}
	if c.UnhealthyThreshold <= 0 {
		return fmt.Errorf("unhealthy_threshold: %d is not positive", c.UnhealthyThreshold)
	}
	if c.HealthyThreshold <= 0 {
		return fmt.Errorf("healthy_threshold: %d is not positive", c.HealthyThreshold)
	}
	for _, l := range c.ReplicaLabels {
		if !model.LegacyValidation.IsValidLabelName(l) {
			return fmt.Errorf("replica_labels: bad label name %q", l)
		}
	}
	if err := c.LoadBalancing.Validate(); err != nil {
		return fmt.Errorf("load_balancing: %w", err)
	}
	if err := c.PartialResponse.Validate(); err != nil {
		return fmt.Errorf("partial_response: %w", err)
	}
	names := map[string]bool{}
	for i, k := range c.Kubernetes {
		if err := k.Validate(); err != nil {
			return err
		}
		if len(c.Kubernetes) > 1 && k.Name == "" {
			return fmt.Errorf("kubernetes[%d]: name is required when several clusters are listed", i)
		}
		if names[k.Name] {
			return fmt.Errorf("kubernetes[%d]: duplicate name %q", i, k.Name)
		}
		names[k.Name] = true
	}
	seen := map[string]bool{}
	for i, g := range c.Static {
		if g.Name == "" {
			return fmt.Errorf("static[%d]: name is required", i)
		}
		if seen[g.Name] {
			return fmt.Errorf("static[%d]: duplicate group name %q", i, g.Name)
		}
		seen[g.Name] = true
		if len(g.URLs) == 0 {
			return fmt.Errorf("static[%d] (%s): at least one url is required", i, g.Name)
		}
		for _, u := range g.URLs {
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return fmt.Errorf("static[%d] (%s): bad url %q", i, g.Name, u)
			}
		}
		for k := range g.Labels {
			if !model.LegacyValidation.IsValidLabelName(k) {
				return fmt.Errorf("static[%d] (%s): bad label name %q", i, g.Name, k)
			}
		}
		if g.PathPrefix != "" && !strings.HasPrefix(g.PathPrefix, "/") {
			return fmt.Errorf("static[%d] (%s): path_prefix %q must start with /", i, g.Name, g.PathPrefix)
		}
		if g.HTTPClient != nil {
			if err := g.HTTPClient.Validate(); err != nil {
				return fmt.Errorf("static[%d] (%s): http_client: %w", i, g.Name, err)
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
	// HTTPClient, when set, replaces backend.http_client for the replicas.
	HTTPClient *config_util.HTTPClientConfig
	// Transport, when set, carries every call to the replicas (a Kubernetes
	// API server's service proxy with the kubeconfig's credentials).
	Transport http.RoundTripper

	next          atomic.Uint64 // round-robin position
	replicaLabels []string      // set by the Manager
	ext           atomic.Pointer[groupView]
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
	// External labels the backend reported (known: it answered at all).
	extLabels labels.Labels
	extKnown  bool
}

func (r *Replica) reportedLabels() (labels.Labels, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.extLabels, r.extKnown
}

// setReportedLabels records the external labels a probe read; it reports
// whether they changed.
func (r *Replica) setReportedLabels(lset labels.Labels) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := !r.extKnown || !labels.Equal(r.extLabels, lset)
	r.extLabels, r.extKnown = lset, true
	return changed
}

func newReplica(u string) *Replica { return &Replica{URL: u, healthy: true} }

// ReplicaStatus is a snapshot of a replica for /debug/targets.
type ReplicaStatus struct {
	URL     string `json:"url"`
	Healthy bool   `json:"healthy"`
	// ExternalLabels are the backend's global.external_labels (nil: not read yet).
	ExternalLabels map[string]string `json:"external_labels,omitempty"`
	LastError      string            `json:"last_error,omitempty"`
	LastCheck      time.Time         `json:"last_check"`
	Latency        time.Duration     `json:"latency_ns"`
}

// Status returns a snapshot.
func (r *Replica) Status() ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := ReplicaStatus{URL: r.URL, Healthy: r.healthy, LastError: r.lastError, LastCheck: r.lastCheck, Latency: r.lastLatency}
	if r.extKnown {
		st.ExternalLabels = r.extLabels.Map()
	}
	return st
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
func (g *Group) Order(mode BalanceMode) []*Replica {
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
// group, and if not, why: a group labelled cluster="a" (configured or
// external) cannot answer {cluster="b"}. See RewriteMatchers.
func (g *Group) Matches(ms []*labels.Matcher) (bool, string) {
	_, ok, reason := g.RewriteMatchers([][]*labels.Matcher{ms})
	return ok, reason
}

// Probe checks one replica of a group: nil when it can answer, with the
// external labels it reports (empty when it does not say).
type Probe func(ctx context.Context, g *Group, r *Replica) (labels.Labels, error)

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

	mu       sync.Mutex
	bySource map[string][]*Group
	groups   atomic.Pointer[[]*Group]
	topology atomic.Pointer[string]
	synced   map[string]bool
	// changed asks the health checks for a round now: new replicas' external
	// labels are needed before queries can decide matchers on them.
	changed  chan struct{}
	onUpdate []func([]*Group)
}

// OnUpdate registers fn to be called with the merged groups after every
// change (in order, never concurrently), e.g. to drop what belonged to
// replicas that left. Register before the providers run.
func (m *Manager) OnUpdate(fn func([]*Group)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onUpdate = append(m.onUpdate, fn)
	fn(*m.groups.Load())
}

// NewManager takes a cfg that passed Validate. The replicas are probed by
// RunHealthChecks, given the probe once what it calls exists.
func NewManager(cfg Config, logger *slog.Logger) (*Manager, error) {
	m := &Manager{cfg: cfg, logger: logger, bySource: map[string][]*Group{}, synced: map[string]bool{}, changed: make(chan struct{}, 1)}
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
		g := &Group{Name: sg.Name, Labels: labels.FromMap(sg.Labels), Source: "static", HTTPClient: sg.HTTPClient}
		for _, u := range sg.URLs {
			g.Replicas = append(g.Replicas, newReplica(strings.TrimRight(u, "/")+strings.TrimRight(sg.PathPrefix, "/")))
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
	for _, g := range gs {
		g.replicaLabels = m.cfg.ReplicaLabels
		g.refreshView()
	}
	m.bySource[source] = gs
	m.synced[source] = true
	all := []*Group{}
	for _, list := range m.bySource {
		all = append(all, list...)
	}
	slices.SortFunc(all, func(a, b *Group) int { return cmp.Compare(a.Name, b.Name) })
	m.groups.Store(&all)
	m.storeTopology(all)
	select {
	case m.changed <- struct{}{}:
	default: // a round is already due
	}
}

// storeTopology hashes the groups with the labels answers show, which
// change when a backend reports new external labels.
func (m *Manager) storeTopology(all []*Group) {
	h := sha256.New()
	for _, g := range all {
		_, _ = fmt.Fprintf(h, "%q %s %s\n", g.Name, g.Labels, g.ExternalLabels())
	}
	topo := hex.EncodeToString(h.Sum(nil))
	m.topology.Store(&topo)
	for _, fn := range m.onUpdate {
		fn(all)
	}
}

// RunHealthChecks probes every replica each health_check_interval until
// ctx ends (e.g. GET /-/ready, then the external labels).
func (m *Manager) RunHealthChecks(ctx context.Context, probe Probe) {
	t := time.NewTicker(time.Duration(m.cfg.HealthCheckInterval))
	defer t.Stop()
	for {
		m.CheckNow(ctx, probe)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.changed:
		}
	}
}

// CheckNow probes every replica once, in parallel, and waits for the probes.
// A probe gets at most one interval: a replica that slow counts as failed,
// and one hung replica cannot hold up the next round for all the others.
func (m *Manager) CheckNow(ctx context.Context, probe Probe) {
	interval := time.Duration(m.cfg.HealthCheckInterval)
	var wg sync.WaitGroup
	for _, g := range m.Groups() {
		for _, r := range g.Replicas {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, interval)
				defer cancel()
				start := time.Now()
				ext, err := probe(pctx, g, r)
				if ctx.Err() != nil {
					return
				}
				if err == nil && r.setReportedLabels(ext) {
					m.logger.Info("replica external labels", "group", g.Name, "replica", redact.URL(r.URL), "external_labels", ext.String())
				}
				if err != nil && pctx.Err() != nil {
					err = fmt.Errorf("%w (no answer within health_check_interval %s)", err, interval)
				}
				was := r.Healthy()
				m.ObserveCall(r, err, time.Since(start))
				if now := r.Healthy(); now != was {
					m.logger.Info("replica health changed", "group", g.Name, "replica", redact.URL(r.URL), "healthy", now, "err", err)
				}
			})
		}
	}
	wg.Wait()
	changed := false
	for _, g := range m.Groups() {
		c, conflict := g.refreshView()
		changed = changed || c
		if conflict != "" && c {
			// Queries decide matchers on one value per group; replicas that
			// disagree answer the same query differently.
			m.logger.Error("replicas of a group disagree on their external labels", "group", g.Name, "conflict", conflict)
		}
	}
	if changed {
		m.mu.Lock()
		m.storeTopology(m.Groups())
		m.mu.Unlock()
	}
}

// ObserveCall records the outcome of a probe or a query call on a replica.
func (m *Manager) ObserveCall(r *Replica, err error, latency time.Duration) {
	r.Observe(err, latency, m.cfg.UnhealthyThreshold, m.cfg.HealthyThreshold)
}

// GroupStatus is a group in /debug/targets.
type GroupStatus struct {
	Group  string            `json:"group"`
	Source string            `json:"source"`
	Labels map[string]string `json:"labels"`
	// ExternalLabels are the labels every answer of the group carries.
	ExternalLabels map[string]string `json:"external_labels,omitempty"`
	// ExternalLabelsConflict says how the replicas disagree, if they do.
	ExternalLabelsConflict string          `json:"external_labels_conflict,omitempty"`
	Replicas               []ReplicaStatus `json:"replicas"`
}

// Status returns a snapshot of every group for /debug/targets.
func (m *Manager) Status() []GroupStatus {
	gs := m.Groups()
	out := make([]GroupStatus, 0, len(gs))
	for _, g := range gs {
		st := GroupStatus{Group: g.Name, Source: g.Source, Labels: g.Labels.Map(),
			ExternalLabels: g.ExternalLabels().Map(), ExternalLabelsConflict: g.ExternalLabelsConflict()}
		for _, r := range g.Replicas {
			st.Replicas = append(st.Replicas, r.Status())
		}
		out = append(out, st)
	}
	return out
}

// KubernetesClusters is discovery.kubernetes: one entry written as a
// mapping (the original form), or a list of entries.
type KubernetesClusters []KubernetesConfig

// UnmarshalYAML accepts both forms, rejecting unknown keys like the rest of
// the configuration.
func (k *KubernetesClusters) UnmarshalYAML(node *yaml.Node) error {
	strict := func(n *yaml.Node, into any) error {
		b, err := yaml.Marshal(n)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		return dec.Decode(into)
	}
	switch node.Kind {
	case yaml.MappingNode:
		var one KubernetesConfig
		if err := strict(node, &one); err != nil {
			return fmt.Errorf("discovery.kubernetes: %w", err)
		}
		*k = KubernetesClusters{one}
	case yaml.SequenceNode:
		var list []KubernetesConfig
		if err := strict(node, &list); err != nil {
			return fmt.Errorf("discovery.kubernetes: %w", err)
		}
		*k = list
	case yaml.ScalarNode:
		if node.Tag == "!!null" {
			*k = nil
			return nil
		}
		return fmt.Errorf("discovery.kubernetes: line %d: want a mapping or a list of mappings", node.Line)
	default:
		return fmt.Errorf("discovery.kubernetes: line %d: want a mapping or a list of mappings", node.Line)
	}
	return nil
}

// ProviderName is the name under which an entry's groups are kept.
func (c KubernetesConfig) ProviderName() string {
	if c.Name == "" {
		return "kubernetes"
	}
	return "kubernetes/" + c.Name
}
