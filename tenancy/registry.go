package tenancy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
)

var (
	// ErrNoAccess: the namespace holds no valid rule (HTTP 403).
	ErrNoAccess = errors.New("no MetricAccess grants this namespace any series")
	// ErrNamespaceNotWatched: the object lives in a namespace outside
	// tenants.namespaces; it grants nothing.
	ErrNamespaceNotWatched = errors.New("namespace is not in tenants.namespaces")
)

// DefaultFileRefreshInterval is how often files are re-read when no file
// system event arrives.
const DefaultFileRefreshInterval = model.Duration(2 * time.Second)

// Config is the `tenants:` section of the proxy configuration.
type Config struct {
	// WatchAllNamespaces takes MetricAccess objects from every namespace.
	// When false, only Namespaces count (all namespaces if that is empty).
	WatchAllNamespaces bool     `yaml:"watch_all_namespaces"`
	Namespaces         []string `yaml:"namespaces,omitempty"`
	// Files are globs of YAML files holding MetricAccess objects.
	Files []string `yaml:"files,omitempty"`
	// Kubernetes watches MetricAccess objects through the API server.
	Kubernetes                bool           `yaml:"kubernetes"`
	NamespaceLabel            string         `yaml:"namespace_label"`
	AdminNamespaces           []string       `yaml:"admin_namespaces,omitempty"`
	AllowCrossNamespaceSource bool           `yaml:"allow_cross_namespace_source"`
	FileRefreshInterval       model.Duration `yaml:"file_refresh_interval"`
}

// DefaultConfig returns the configuration used for keys the file leaves out.
func DefaultConfig() Config {
	return Config{
		WatchAllNamespaces:  true,
		NamespaceLabel:      DefaultNamespaceLabel,
		FileRefreshInterval: DefaultFileRefreshInterval,
	}
}

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate reports every setting that cannot work, naming its key within
// the section; it changes nothing.
func (c Config) Validate() error {
	var errs []error
	if !model.UTF8Validation.IsValidLabelName(c.NamespaceLabel) {
		errs = append(errs, fmt.Errorf("namespace_label: %q is not a valid label name", c.NamespaceLabel))
	}
	if c.FileRefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("file_refresh_interval: %s is not positive", c.FileRefreshInterval))
	}
	for i, g := range c.Files {
		if _, err := filepath.Match(g, ""); err != nil || g == "" {
			errs = append(errs, fmt.Errorf("files[%d]: bad glob %q", i, g))
		}
	}
	for i, ns := range c.Namespaces {
		if ns == "" {
			errs = append(errs, fmt.Errorf("namespaces[%d]: empty", i))
		}
	}
	for i, ns := range c.AdminNamespaces {
		if ns == "" {
			errs = append(errs, fmt.Errorf("admin_namespaces[%d]: empty", i))
		}
	}
	return errors.Join(errs...)
}

// Enabled reports whether a tenant source is configured. Without one the
// proxy is a plain federation gateway and every request sees everything.
func (c Config) Enabled() bool { return len(c.Files) > 0 || c.Kubernetes }

// Watches reports whether MetricAccess objects of the namespace count.
func (c Config) Watches(namespace string) bool {
	return c.WatchAllNamespaces || len(c.Namespaces) == 0 || slices.Contains(c.Namespaces, namespace)
}

// CompileOptions returns the options Compile needs from this configuration.
func (c Config) CompileOptions() CompileOptions {
	return CompileOptions{NamespaceLabel: c.NamespaceLabel, AllowCrossNamespaceSource: c.AllowCrossNamespaceSource}
}

// Source delivers the complete current set of MetricAccess objects it knows,
// every time that set changes, until ctx ends. The first call comes as soon as
// the source has read its state, even if that state is empty.
type Source interface {
	Run(ctx context.Context, update func([]*MetricAccess))
}

// ProblemReporter is implemented by sources that find problems outside the
// objects themselves (an unreadable file); they show up in Debug.
type ProblemReporter interface {
	Problems() []Problem
}

// Registry holds the MetricAccess objects of every source and serves the
// policy of each namespace. Policies are computed when objects change, so
// Policy is a map lookup on the request path.
type Registry struct {
	cfg         Config
	opts        CompileOptions
	adminPolicy map[string]*Policy
	logger      *slog.Logger

	mu        sync.Mutex // serialises writers; readers use state only
	sources   map[string][]*MetricAccess
	pending   map[string]bool // sources started by Run without a first update yet
	reporters map[string]ProblemReporter
	subs      map[chan struct{}]struct{}

	state atomic.Pointer[snapshot]
	ready atomic.Bool
}

// snapshot is immutable once stored.
type snapshot struct {
	generation uint64
	policies   map[string]*Policy
	view       DebugView
	digest     [sha256.Size]byte
	problems   map[string]Problem // by Error(), to log each one once
}

// NewRegistry returns a registry holding no objects; cfg must have passed
// Validate.
func NewRegistry(cfg Config, logger *slog.Logger) (*Registry, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Registry{
		cfg:         cfg,
		opts:        cfg.CompileOptions(),
		adminPolicy: make(map[string]*Policy, len(cfg.AdminNamespaces)),
		logger:      logger,
		sources:     map[string][]*MetricAccess{},
		pending:     map[string]bool{},
		reporters:   map[string]ProblemReporter{},
		subs:        map[chan struct{}]struct{}{},
	}
	for _, ns := range cfg.AdminNamespaces {
		r.adminPolicy[ns] = &Policy{Namespace: ns, Admin: true, Fingerprint: "admin"}
	}
	r.state.Store(r.build(0))
	// With a source configured, nothing is known until a source has spoken.
	r.ready.Store(!cfg.Enabled())
	return r, nil
}

// Policy returns what the namespace may read. The policy is shared: callers
// must not modify it. A namespace without any valid rule gets an error
// wrapping ErrNoAccess.
func (r *Registry) Policy(namespace string) (*Policy, error) {
	if p := r.adminPolicy[namespace]; p != nil {
		return p, nil
	}
	if p := r.state.Load().policies[namespace]; p != nil {
		return p, nil
	}
	if namespace == "" {
		return nil, fmt.Errorf("no tenant namespace: %w", ErrNoAccess)
	}
	return nil, fmt.Errorf("tenant %q: %w", namespace, ErrNoAccess)
}

// Update replaces every object of the named source with objs (an empty
// list removes them all). The objects are copied; the caller may reuse them.
func (r *Registry) Update(source string, objs []*MetricAccess) {
	cp := make([]*MetricAccess, len(objs))
	for i, o := range objs {
		cp[i] = o.DeepCopy()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(cp) == 0 {
		delete(r.sources, source)
	} else {
		r.sources[source] = cp
	}
	if r.pending[source] {
		delete(r.pending, source)
		// Deferred so that Ready never runs ahead of the policies.
		defer r.ready.Store(len(r.pending) == 0)
	}

	old := r.state.Load()
	next := r.build(old.generation + 1)
	if next.digest == old.digest {
		return
	}
	r.state.Store(next)
	r.logChanges(old, next)
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending
		}
	}
}

// Run feeds the source's objects into the registry under name until ctx
// ends. It blocks; start it in its own goroutine.
func (r *Registry) Run(ctx context.Context, name string, s Source) {
	r.mu.Lock()
	r.pending[name] = true
	r.ready.Store(false)
	if pr, ok := s.(ProblemReporter); ok {
		r.reporters[name] = pr
	}
	r.mu.Unlock()
	s.Run(ctx, func(objs []*MetricAccess) { r.Update(name, objs) })
}

// Ready reports whether the registry knows the objects of its sources: every
// source given to Run has delivered its first set (and, when cfg.Enabled(),
// at least one source was started). Before that, requests would be refused
// for lack of rules.
func (r *Registry) Ready() bool { return r.ready.Load() }

// Generation counts policy changes; it moves whenever a policy, an object
// or a problem changes.
func (r *Registry) Generation() uint64 { return r.state.Load().generation }

// ActiveTenants is the number of namespaces holding at least one valid rule
// (admin namespaces not counted).
func (r *Registry) ActiveTenants() int { return len(r.state.Load().policies) }

// Subscribe returns a channel that receives a value after each change (changes
// in quick succession may be folded into one), and a function that ends the
// subscription.
func (r *Registry) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.subs, ch)
			r.mu.Unlock()
		})
	}
}

// DebugView is the JSON of /debug/tenants. It is shared: read it, do not modify it.
type DebugView struct {
	Generation                uint64                   `json:"generation"`
	NamespaceLabel            string                   `json:"namespace_label"`
	AllowCrossNamespaceSource bool                     `json:"allow_cross_namespace_source"`
	AdminNamespaces           []string                 `json:"admin_namespaces"`
	Namespaces                map[string]NamespaceView `json:"namespaces"`
	// SourceProblems are problems of the sources themselves (unreadable
	// files, documents that are not MetricAccess objects), by source.
	SourceProblems map[string][]Problem `json:"source_problems,omitempty"`
}

// NamespaceView is one namespace: its objects and the policy they make.
type NamespaceView struct {
	Admin       bool         `json:"admin,omitempty"`
	Fingerprint string       `json:"fingerprint,omitempty"`
	Rules       []string     `json:"rules"`
	Objects     []ObjectView `json:"objects"`
}

// ObjectView is one MetricAccess object as compiled.
type ObjectView struct {
	Source   string           `json:"source"`
	Name     string           `json:"name"`
	Spec     MetricAccessSpec `json:"spec"`
	Rules    []string         `json:"rules"`
	Problems []Problem        `json:"problems,omitempty"`
}

// Debug returns what the registry holds, for /debug/tenants.
func (r *Registry) Debug() DebugView {
	v := r.state.Load().view
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, pr := range r.reporters {
		if ps := pr.Problems(); len(ps) > 0 {
			if v.SourceProblems == nil {
				v.SourceProblems = map[string][]Problem{}
			}
			v.SourceProblems[name] = ps
		}
	}
	return v
}

// build compiles every object of every source. Called with r.mu held (or
// before the registry is shared).
func (r *Registry) build(generation uint64) *snapshot {
	s := &snapshot{
		generation: generation,
		policies:   map[string]*Policy{},
		problems:   map[string]Problem{},
		view: DebugView{
			NamespaceLabel:            r.opts.namespaceLabel(),
			AllowCrossNamespaceSource: r.opts.AllowCrossNamespaceSource,
			AdminNamespaces:           slices.Sorted(maps.Keys(r.adminPolicy)),
			Namespaces:                map[string]NamespaceView{},
		},
	}
	rulesByNS := map[string][]Rule{}
	for _, src := range slices.Sorted(maps.Keys(r.sources)) {
		objs := slices.Clone(r.sources[src])
		slices.SortStableFunc(objs, func(a, b *MetricAccess) int { return strings.Compare(a.Key(), b.Key()) })
		for _, obj := range objs {
			var ns, name string
			var spec MetricAccessSpec
			if obj != nil {
				ns, name, spec = obj.Namespace, obj.Name, *obj.Spec.DeepCopy()
			}
			var rules []Rule
			var problems []Problem
			if obj != nil && !r.cfg.Watches(ns) {
				problems = []Problem{newProblem(obj.Key(), "", ErrNamespaceNotWatched, "")}
			} else {
				rules, problems = Compile(obj, r.opts)
			}
			rulesByNS[ns] = append(rulesByNS[ns], rules...)
			for _, p := range problems {
				s.problems[src+": "+p.Error()] = p
			}
			nv := s.view.Namespaces[ns]
			nv.Objects = append(nv.Objects, ObjectView{
				Source: src, Name: name, Spec: spec,
				Rules: ruleStrings(rules), Problems: problems,
			})
			s.view.Namespaces[ns] = nv
		}
	}
	for ns, rules := range rulesByNS {
		nv := s.view.Namespaces[ns]
		if r.adminPolicy[ns] != nil {
			continue
		}
		if p := newPolicy(ns, rules); p != nil {
			s.policies[ns] = p
			nv.Fingerprint = p.Fingerprint
			nv.Rules = ruleStrings(p.Rules)
		}
		s.view.Namespaces[ns] = nv
	}
	for ns := range r.adminPolicy {
		nv := s.view.Namespaces[ns]
		nv.Admin, nv.Fingerprint = true, "admin"
		s.view.Namespaces[ns] = nv
	}
	// encoding/json sorts map keys and every slice above is built in a
	// fixed order, so equal contents give equal digests.
	b, err := json.Marshal(s.view)
	if err != nil {
		// Cannot happen for these types; make every build a change rather
		// than hide one.
		b = fmt.Appendf(nil, "%d %v", generation, err)
	}
	s.digest = sha256.Sum256(b)
	s.view.Generation = generation
	return s
}

// newPolicy ORs the rules of a namespace. Duplicates are dropped and the
// rest sorted, so the fingerprint depends on what is granted, not on the
// order or the objects it was written in. nil when nothing is granted.
func newPolicy(ns string, rules []Rule) *Policy {
	if len(rules) == 0 {
		return nil
	}
	byText := make(map[string]Rule, len(rules))
	for _, rule := range rules {
		text := rule.String()
		// Keep the smallest origin so the choice does not depend on order.
		if prev, ok := byText[text]; !ok || rule.Origin < prev.Origin {
			byText[text] = rule
		}
	}
	texts := slices.Sorted(maps.Keys(byText))
	p := &Policy{Namespace: ns, Rules: make([]Rule, 0, len(texts))}
	h := sha256.New()
	h.Write([]byte("tenancy-rules-v1\n"))
	for _, text := range texts {
		p.Rules = append(p.Rules, byText[text])
		h.Write([]byte(text))
		h.Write([]byte{'\n'})
	}
	p.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return p
}

// Union is what a request naming several namespaces may read: a series is
// visible iff some namespace's policy shows it, so the rules are the OR of
// all their rules (each already bound to its namespace's source, hence the
// union of each namespace's visible series). Its fingerprint is that of
// the combined rule set: independent of the order, and equal to a part's
// only when the union grants exactly what that part grants. An admin part
// makes the union admin. Parts must be non-nil.
func Union(parts ...*Policy) *Policy {
	if len(parts) == 1 {
		return parts[0]
	}
	names := make([]string, 0, len(parts))
	var rules []Rule
	admin := false
	for _, p := range parts {
		names = append(names, p.Namespace)
		rules = append(rules, p.Rules...)
		admin = admin || p.Admin
	}
	slices.Sort(names)
	names = slices.Compact(names)
	ns := strings.Join(names, ",")
	if admin {
		return &Policy{Namespace: ns, Namespaces: names, Admin: true, Fingerprint: "admin"}
	}
	p := newPolicy(ns, rules)
	if p == nil {
		return &Policy{Namespace: ns, Namespaces: names, Fingerprint: Fingerprint(nil)}
	}
	p.Namespaces = names
	return p
}

// Namespaces returns the namespaces that have a policy (admin namespaces
// not counted), sorted: the candidates of "every namespace I may read".
func (r *Registry) Namespaces() []string {
	return slices.Sorted(maps.Keys(r.state.Load().policies))
}

// Fingerprint returns the fingerprint a policy with these rules carries.
func Fingerprint(rules []Rule) string {
	if p := newPolicy("", rules); p != nil {
		return p.Fingerprint
	}
	return ""
}

func (r *Registry) logChanges(old, next *snapshot) {
	for key, p := range next.problems {
		if _, ok := old.problems[key]; !ok {
			r.logger.Warn("MetricAccess problem", "object", p.Object, "entry", p.Entry, "reason", p.Reason)
		}
	}
	for key, p := range old.problems {
		if _, ok := next.problems[key]; !ok {
			r.logger.Info("MetricAccess problem resolved", "object", p.Object, "entry", p.Entry)
		}
	}
	for ns, p := range next.policies {
		if op := old.policies[ns]; op == nil || op.Fingerprint != p.Fingerprint {
			r.logger.Info("tenant policy changed", "namespace", ns, "rules", len(p.Rules), "fingerprint", p.Fingerprint)
		}
	}
	for ns := range old.policies {
		if next.policies[ns] == nil {
			r.logger.Info("tenant policy removed: namespace now has no access", "namespace", ns)
		}
	}
}

func ruleStrings(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	return out
}
