package tenancy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestRegistry builds a registry from cfg; the literal configurations
// of these tests leave the label and the interval to the defaults.
func newTestRegistry(t *testing.T, cfg Config) *Registry {
	t.Helper()
	d := DefaultConfig()
	cfg.NamespaceLabel = cmp.Or(cfg.NamespaceLabel, d.NamespaceLabel)
	cfg.FileRefreshInterval = cmp.Or(cfg.FileRefreshInterval, d.FileRefreshInterval)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistryPolicy(t *testing.T) {
	r := newTestRegistry(t, Config{AdminNamespaces: []string{"monitoring"}})
	r.Update("files", []*MetricAccess{
		newMA("team-a", "http", "team-a", nil, "http_requests_total", "http_request_duration_seconds"),
		newMA("team-a", "extra", "team-a", nil, "up", "bad("),
		newMA("team-b", "cross", "team-a", nil, "up"), // cross-namespace: grants nothing
		newMA("monitoring", "m", "monitoring", nil, "up"),
	})

	p, err := r.Policy("team-a")
	if err != nil {
		t.Fatal(err)
	}
	if p.Namespace != "team-a" || p.Admin || len(p.Rules) != 3 || p.Fingerprint == "" {
		t.Errorf("team-a policy = %+v", p)
	}
	if !p.Matches(s("up", "namespace", "team-a")) || p.Matches(s("up", "namespace", "team-b")) {
		t.Errorf("team-a policy matches wrongly")
	}

	for _, ns := range []string{"team-b", "nobody", ""} {
		if _, err := r.Policy(ns); !errors.Is(err, ErrNoAccess) {
			t.Errorf("Policy(%q) error = %v, want ErrNoAccess", ns, err)
		}
	}
	if _, err := r.Policy("team-b"); !strings.Contains(err.Error(), `"team-b"`) {
		t.Errorf("error %q does not name the tenant", err)
	}

	adm, err := r.Policy("monitoring")
	if err != nil || !adm.Admin || adm.Fingerprint != "admin" || adm.Namespace != "monitoring" || !adm.Unrestricted() {
		t.Errorf("admin policy = %+v, %v", adm, err)
	}
	if n := r.ActiveTenants(); n != 1 {
		t.Errorf("ActiveTenants = %d, want 1", n)
	}
}

func TestRegistrySources(t *testing.T) {
	r := newTestRegistry(t, Config{})
	r.Update("files", []*MetricAccess{newMA("team-a", "a", "team-a", nil, "up")})
	r.Update("kubernetes", []*MetricAccess{newMA("team-b", "b", "team-b", nil, "up")})
	if r.ActiveTenants() != 2 {
		t.Fatalf("ActiveTenants = %d", r.ActiveTenants())
	}

	// Replacing one source leaves the other alone.
	r.Update("files", []*MetricAccess{newMA("team-c", "c", "team-c", nil, "up")})
	for ns, want := range map[string]bool{"team-a": false, "team-b": true, "team-c": true} {
		if _, err := r.Policy(ns); (err == nil) != want {
			t.Errorf("Policy(%q) err = %v, want access %v", ns, err, want)
		}
	}
	r.Update("kubernetes", nil)
	if _, err := r.Policy("team-b"); !errors.Is(err, ErrNoAccess) {
		t.Errorf("team-b still has access after its source emptied")
	}

	// The registry copies: changing the caller's object changes nothing.
	obj := newMA("team-d", "d", "team-d", nil, "up")
	r.Update("x", []*MetricAccess{obj})
	before, _ := r.Policy("team-d")
	obj.Spec.Metrics[0] = ".*"
	after, _ := r.Policy("team-d")
	if before.Fingerprint != after.Fingerprint || after.Rules[0].Origin != "team-d/d: up" {
		t.Errorf("registry shares the caller's object")
	}
}

func TestFingerprint(t *testing.T) {
	cross := Config{AllowCrossNamespaceSource: true}
	fp := func(t *testing.T, cfg Config, objs ...*MetricAccess) string {
		t.Helper()
		r := newTestRegistry(t, cfg)
		r.Update("s", objs)
		p, err := r.Policy(objs[0].Namespace)
		if err != nil {
			t.Fatal(err)
		}
		return p.Fingerprint
	}
	sel := map[string]string{"cluster": "cluster-a"}
	base := fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "up", "http_.*"))

	same := map[string]string{
		"entries reordered": fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "http_.*", "up")),
		"split over objects": fp(t, Config{},
			newMA("team-a", "y", "team-a", sel, "http_.*"), newMA("team-a", "x", "team-a", sel, "up")),
		"duplicate entry":     fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "up", "http_.*", "up")),
		"other object name":   fp(t, Config{}, newMA("team-a", "zzz", "team-a", sel, "up", "http_.*")),
		"invalid entry added": fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "up", "http_.*", "(")),
		"invalid object added": fp(t, Config{},
			newMA("team-a", "a", "team-a", sel, "up", "http_.*"), newMA("team-a", "b", "team-b", nil, ".*")),
		"same rules, selector matcher order": fp(t, Config{}, newMA("team-a", "a", "team-a", sel, `{__name__=~"up|up_bucket|up_sum|up_count"}`, "http_.*")),
	}
	for name, got := range same {
		if got != base {
			t.Errorf("%s: fingerprint changed", name)
		}
	}

	differ := map[string]string{
		"entry changed":        fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "up", "http_.+")),
		"entry removed":        fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "up")),
		"entry added":          fp(t, Config{}, newMA("team-a", "a", "team-a", sel, "up", "http_.*", "x")),
		"label selector value": fp(t, Config{}, newMA("team-a", "a", "team-a", map[string]string{"cluster": "cluster-b"}, "up", "http_.*")),
		"label selector gone":  fp(t, Config{}, newMA("team-a", "a", "team-a", nil, "up", "http_.*")),
		"source":               fp(t, cross, newMA("team-a", "a", "team-b", sel, "up", "http_.*")),
		"namespace label":      fp(t, Config{NamespaceLabel: "ns"}, newMA("team-a", "a", "team-a", sel, "up", "http_.*")),
	}
	seen := map[string]string{base: "base"}
	for name, got := range differ {
		if prev, ok := seen[got]; ok {
			t.Errorf("%s: fingerprint equals that of %s", name, prev)
		}
		seen[got] = name
	}

	// Two namespaces granted the same series share a fingerprint.
	r := newTestRegistry(t, cross)
	r.Update("s", []*MetricAccess{
		newMA("team-x", "a", "team-a", nil, "up", "memory_.*"),
		newMA("team-y", "b", "team-a", nil, "memory_.*", "up"),
	})
	px, _ := r.Policy("team-x")
	py, _ := r.Policy("team-y")
	if px == nil || py == nil || px.Fingerprint != py.Fingerprint || px.Namespace == py.Namespace {
		t.Errorf("equal grants, fingerprints %v and %v", px, py)
	}
	if got := Fingerprint(px.Rules); got != px.Fingerprint {
		t.Errorf("Fingerprint(rules) = %s, policy has %s", got, px.Fingerprint)
	}
}

func TestRegistryChanges(t *testing.T) {
	r := newTestRegistry(t, Config{})
	ch, cancel := r.Subscribe()
	defer cancel()
	g0 := r.Generation()

	r.Update("s", []*MetricAccess{newMA("team-a", "a", "team-a", nil, "up")})
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("no notification after a change")
	}
	g1 := r.Generation()
	if g1 == g0 {
		t.Fatal("generation did not move")
	}

	// The same content again is no change.
	r.Update("s", []*MetricAccess{newMA("team-a", "a", "team-a", nil, "up")})
	select {
	case <-ch:
		t.Fatal("notified without a change")
	default:
	}
	if r.Generation() != g1 {
		t.Fatal("generation moved without a change")
	}

	// A new problem alone is a change (debug output differs).
	r.Update("s", []*MetricAccess{newMA("team-a", "a", "team-a", nil, "up", "(")})
	if r.Generation() == g1 {
		t.Fatal("generation did not move for a new problem")
	}
	if got := r.Debug().Generation; got != r.Generation() {
		t.Errorf("debug generation %d, registry %d", got, r.Generation())
	}
	<-ch

	cancel()
	r.Update("s", nil)
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

// fakeSource delivers what it is sent on objs, and reports fixed problems.
type fakeSource struct {
	objs     chan []*MetricAccess
	problems []Problem
}

func (f *fakeSource) Run(ctx context.Context, update func([]*MetricAccess)) {
	for {
		select {
		case <-ctx.Done():
			return
		case objs := <-f.objs:
			update(objs)
		}
	}
}

func (f *fakeSource) Problems() []Problem { return f.problems }

func TestRegistryRun(t *testing.T) {
	if r := newTestRegistry(t, Config{}); !r.Ready() {
		t.Fatal("registry without configured sources not ready")
	}
	r := newTestRegistry(t, Config{Kubernetes: true})
	if r.Ready() {
		t.Fatal("ready before any source delivered")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &fakeSource{
		objs:     make(chan []*MetricAccess),
		problems: []Problem{newProblem("x.yaml", "", ErrInvalidFile, "broken")},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, "files", src)
	}()
	waitFor(t, func() bool { return !r.Ready() })
	src.objs <- []*MetricAccess{newMA("team-a", "a", "team-a", nil, "up")}
	waitFor(t, r.Ready)
	if _, err := r.Policy("team-a"); err != nil {
		t.Fatal(err)
	}
	if ps := r.Debug().SourceProblems["files"]; len(ps) != 1 || !errors.Is(ps[0], ErrInvalidFile) {
		t.Errorf("source problems = %v", ps)
	}
	cancel()
	<-done
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegistryDebug(t *testing.T) {
	r := newTestRegistry(t, Config{
		AdminNamespaces:    []string{"monitoring"},
		WatchAllNamespaces: false,
		Namespaces:         []string{"team-a", "team-c"},
	})
	r.Update("files", []*MetricAccess{
		newMA("team-a", "a", "team-a", map[string]string{"cluster": "cluster-a"}, "up", "x{"),
		newMA("team-b", "b", "team-b", nil, "up"),
	})
	v := r.Debug()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, want := range []string{
		`"team-a"`, `"source":"files"`, `"name":"a"`,
		`{__name__=~\"up|up_bucket|up_sum|up_count\", cluster=\"cluster-a\", namespace=\"team-a\"}`,
		`"entry":"x{"`, `"labelSelectors":{"cluster":"cluster-a"}`,
		`"monitoring":{"admin":true,"fingerprint":"admin"`,
		ErrNamespaceNotWatched.Error(),
	} {
		if !strings.Contains(js, want) {
			t.Errorf("debug JSON lacks %s:\n%s", want, js)
		}
	}
	if _, err := r.Policy("team-b"); !errors.Is(err, ErrNoAccess) {
		t.Errorf("unwatched namespace got access")
	}
	a := v.Namespaces["team-a"]
	if len(a.Objects) != 1 || len(a.Objects[0].Problems) != 1 || len(a.Rules) != 1 || a.Fingerprint == "" {
		t.Errorf("team-a view = %+v", a)
	}
}

func TestConfig(t *testing.T) {
	var c Config
	src := `
watch_all_namespaces: false
namespaces: [team-a]
files: ["examples/tenants/*.yaml"]
namespace_label: kubernetes_namespace
admin_namespaces: [monitoring]
allow_cross_namespace_source: true
file_refresh_interval: 5m
`
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.Enabled() || c.Watches("team-b") || !c.Watches("team-a") ||
		c.FileRefreshInterval != model.Duration(5*time.Minute) || c.NamespaceLabel != "kubernetes_namespace" ||
		!c.CompileOptions().AllowCrossNamespaceSource {
		t.Errorf("parsed config = %+v", c)
	}
	if d := DefaultConfig(); !d.WatchAllNamespaces || d.Enabled() || !d.Watches("anything") {
		t.Errorf("DefaultConfig() = %+v", d)
	}
	if c := (Config{Kubernetes: true}); !c.Enabled() {
		t.Error("kubernetes source not Enabled")
	}

	configtest.Refuses(t, DefaultConfig, Config.Validate, []configtest.Refusal[Config]{
		{Key: "namespace_label: ", Change: func(c *Config) { c.NamespaceLabel = "bad\xff" }},
		{Key: "namespace_label: ", Change: func(c *Config) { c.NamespaceLabel = "" }},
		{Key: "files[0]: ", Change: func(c *Config) { c.Files = []string{"["} }},
		{Key: "files[0]: ", Change: func(c *Config) { c.Files = []string{""} }},
		{Key: "namespaces[0]: ", Change: func(c *Config) { c.Namespaces = []string{""} }},
		{Key: "admin_namespaces[0]: ", Change: func(c *Config) { c.AdminNamespaces = []string{""} }},
		{Key: "file_refresh_interval: ", Change: func(c *Config) { c.FileRefreshInterval = -1 }},
		{Key: "file_refresh_interval: ", Change: func(c *Config) { c.FileRefreshInterval = 0 }},
	})
}

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "files: [a.yaml]\nkubernetes: true\n", Want: func(c *Config) { c.Files, c.Kubernetes = []string{"a.yaml"}, true }},
	})
}
