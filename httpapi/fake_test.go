package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/teststorage"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// The fan-out is what cmd/proxy hands the server; the fake below stands in
// for it in these tests.
var (
	_ Reader   = (*engine.Fanout)(nil)
	_ Reader   = (*fakeReader)(nil)
	_ Backends = (*discovery.Manager)(nil)
	_ Backends = (*fakeBackends)(nil)
)

// testData is what every test server reads: two tenants' series over
// [0s, 30m] at 1m steps, as promqltest loads them.
const testData = `
load 1m
	up{job="api", namespace="team-a", instance="a1"} 1+0x30
	up{job="api", namespace="team-a", instance="a2"} 0+0x30
	http_requests_total{job="api", namespace="team-a", code="200"} 0+10x30
	memory_usage_bytes{job="db", namespace="team-b"} 100+1x30
`

// exemplarSeries carries the one exemplar of the test data, at 31m (after
// the loaded samples: the head takes no sample out of order).
var exemplarSeries = labels.FromStrings("__name__", "http_requests_total", "job", "api", "namespace", "team-a", "code", "200")

// loadTestStorage is an in-memory TSDB holding testData and one exemplar.
func loadTestStorage(t *testing.T) *teststorage.TestStorage {
	t.Helper()
	db := promqltest.LoadedStorage(t, testData)
	app := db.Appender(context.Background())
	ref, err := app.Append(0, exemplarSeries, 1_860_000, 310)
	if err == nil {
		_, err = app.AppendExemplar(ref, exemplarSeries, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "abc"), Value: 310, Ts: 1_860_000, HasTs: true})
	}
	if err == nil {
		err = app.Commit()
	}
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// fakeReader answers the server's reads from an in-memory storage and fixed
// metadata, rules and alerts. err, when set, fails every read with it (a
// backend group down, a broken answer); warns come with every answer that
// has room for them. It records the tenant namespace each read was made
// under, so a test sees the request's policy reached the reader.
type fakeReader struct {
	db       *teststorage.TestStorage
	metadata map[string][]engine.Metadata
	rules    *v1.RuleDiscovery
	alerts   *v1.AlertDiscovery
	warns    annotations.Annotations
	err      error
	// gate, when set, holds every read until it is closed; each read
	// first sends on entered.
	gate    chan struct{}
	entered chan struct{}

	mu      sync.Mutex
	tenants []string            // namespace of each read's policy ("" for none)
	filter  *engine.RulesFilter // what the last /rules read asked
}

func newFakeReader(db *teststorage.TestStorage) *fakeReader {
	return &fakeReader{
		db: db,
		metadata: map[string][]engine.Metadata{
			"http_requests_total": {{Type: "counter", Help: "Requests served.", Unit: ""}},
			"up":                  {{Type: "gauge", Help: "Whether the target answered.", Unit: ""}},
		},
		rules: &v1.RuleDiscovery{RuleGroups: []*v1.RuleGroup{{
			Name: "api", File: "api.yaml", Interval: 60,
			Rules: []v1.Rule{v1.RecordingRule{Name: "job:up:sum", Query: "sum by (job) (up)", Labels: labels.EmptyLabels(), Health: "ok", Type: "recording"}},
		}}},
		alerts: &v1.AlertDiscovery{Alerts: []*v1.Alert{{
			Labels: labels.FromStrings("alertname", "InstanceDown", "namespace", "team-a"), Annotations: labels.EmptyLabels(), State: "firing", Value: "0e+00",
		}}},
	}
}

// read records the tenant of ctx and returns the injected error.
func (f *fakeReader) read(ctx context.Context) error {
	ns := ""
	if p := tenancy.FromContext(ctx); p != nil {
		ns = p.Namespace
	}
	f.mu.Lock()
	f.tenants = append(f.tenants, ns)
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		<-gate
	}
	return f.err
}

// reset forgets what earlier requests read and any injected fault.
func (f *fakeReader) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.warns, f.tenants, f.filter = nil, nil, nil, nil
}

// readTenants is the namespace of every read so far.
func (f *fakeReader) readTenants() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tenants...)
}

func (f *fakeReader) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := f.db.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &fakeQuerier{Querier: q, f: f}, nil
}

func (f *fakeReader) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return f.db.ChunkQuerier(mint, maxt)
}

func (f *fakeReader) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	if err := f.read(ctx); err != nil {
		return nil, err
	}
	return f.db.ExemplarQuerier(ctx)
}

func (f *fakeReader) Metadata(ctx context.Context, _, _ int64, metric string, limit, _ int) (map[string][]engine.Metadata, annotations.Annotations, error) {
	if err := f.read(ctx); err != nil {
		return nil, nil, err
	}
	out := map[string][]engine.Metadata{}
	for name, md := range f.metadata {
		if (metric == "" || metric == name) && (limit <= 0 || len(out) < limit) {
			out[name] = md
		}
	}
	return out, f.warns, nil
}

func (f *fakeReader) Rules(ctx context.Context, flt engine.RulesFilter) (*v1.RuleDiscovery, annotations.Annotations, error) {
	f.mu.Lock()
	f.filter = &flt
	f.mu.Unlock()
	if err := f.read(ctx); err != nil {
		return nil, nil, err
	}
	return f.rules, f.warns, nil
}

func (f *fakeReader) Alerts(ctx context.Context) (*v1.AlertDiscovery, annotations.Annotations, error) {
	if err := f.read(ctx); err != nil {
		return nil, nil, err
	}
	return f.alerts, f.warns, nil
}

// fakeQuerier records the tenant of every read and fails it with the
// reader's error, the way the fan-out reports a failed group.
type fakeQuerier struct {
	storage.Querier
	f *fakeReader
}

func (q *fakeQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	if err := q.f.read(ctx); err != nil {
		return storage.ErrSeriesSet(err)
	}
	set := q.Querier.Select(ctx, sortSeries, hints, ms...)
	if len(q.f.warns) == 0 {
		return set
	}
	return warningSet{SeriesSet: set, warns: q.f.warns}
}

func (q *fakeQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if err := q.f.read(ctx); err != nil {
		return nil, nil, err
	}
	vals, warns, err := q.Querier.LabelValues(ctx, name, hints, ms...)
	return vals, warns.Merge(q.f.warns), err
}

func (q *fakeQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if err := q.f.read(ctx); err != nil {
		return nil, nil, err
	}
	names, warns, err := q.Querier.LabelNames(ctx, hints, ms...)
	return names, warns.Merge(q.f.warns), err
}

// warningSet adds warnings to a series set, as a partial answer has them.
type warningSet struct {
	storage.SeriesSet
	warns annotations.Annotations
}

func (s warningSet) Warnings() annotations.Annotations {
	w := s.SeriesSet.Warnings()
	return w.Merge(s.warns)
}

// fakeBackends is discovery's view: groups, their status and whether the
// first discovery is done.
type fakeBackends struct {
	groups []*discovery.Group
	synced bool
}

func (b *fakeBackends) Groups() []*discovery.Group { return b.groups }
func (b *fakeBackends) Synced() bool               { return b.synced }

func (b *fakeBackends) Status() []discovery.GroupStatus {
	out := make([]discovery.GroupStatus, 0, len(b.groups))
	for _, g := range b.groups {
		st := discovery.GroupStatus{Group: g.Name, Source: g.Source, Labels: g.Labels.Map()}
		for _, r := range g.Replicas {
			st.Replicas = append(st.Replicas, r.Status())
		}
		out = append(out, st)
	}
	return out
}

// fakeExplainer explains any query that parses, as one line naming it.
type fakeExplainer struct{}

func (fakeExplainer) ExplainQuery(_ context.Context, qs string) (string, error) {
	if _, err := engine.Parser().ParseExpr(qs); err != nil {
		return "", err
	}
	return "evaluated in the proxy: " + qs, nil
}

// serverSetup is what differs between the servers of the endpoint table.
type serverSetup struct {
	// tenancy: the tenant source of testRegistry (team-a reads up, team-b
	// memory_usage_bytes; monitoring is an admin namespace).
	tenancy bool
	// limits replace admission's default limits.
	limits *admission.Limits
	// maxBody replaces proxy.max_body_bytes.
	maxBody int64
	// unsynced: discovery has not delivered yet.
	unsynced bool
	// management: a management listener is configured (server.management_address).
	management bool
	// queueTimeout replaces proxy.queue_timeout.
	queueTimeout time.Duration
}

// newTestServer builds a server over f, with the real PromQL engine; it
// logs to logs as JSON.
func newTestServer(t *testing.T, f *fakeReader, st serverSetup, logs io.Writer) *Server {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	reg := prometheus.NewRegistry()
	ecfg := engine.DefaultConfig()
	opts := Options{
		Proxy: DefaultProxyConfig(), Server: DefaultServerConfig(), Engine: ecfg,
		Limits: admission.DefaultConfig(), MaxNamespaces: authn.DefaultConfig().MaxNamespaces,
		QueryEngine: engine.NewPromQL(ecfg, reg, logger),
		Fanout:      f,
		Explain:     fakeExplainer{},
		Backends: &fakeBackends{synced: !st.unsynced, groups: discovery.StaticGroups([]discovery.StaticGroup{
			{Name: "eu", URLs: []string{"http://scraper:s3cret@10.0.0.1:9090"}, Labels: map[string]string{"cluster": "eu"}},
		})},
		Registry: reg, Logger: logger, Version: "test",
	}
	if st.tenancy {
		reg := testRegistry(t)
		opts.Policies, opts.Tenants = reg, registryDebug{reg}
	}
	if st.limits != nil {
		opts.Limits = admission.DefaultConfig()
		opts.Limits.Defaults = *st.limits
	}
	if st.management {
		// Only named: New does not listen.
		opts.Server.ManagementAddress = "127.0.0.1:0"
	}
	if st.queueTimeout > 0 {
		opts.Proxy.QueueTimeout = model.Duration(st.queueTimeout)
	}
	if st.maxBody > 0 {
		opts.Proxy.MaxBodyBytes = st.maxBody
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// registryDebug shows the tenant registry's view at /debug/tenants.
type registryDebug struct{ *tenancy.Registry }

func (d registryDebug) Debug() any { return d.Registry.Debug() }

// errGroupDown is what the fan-out answers when a group fails and partial
// answers are refused.
var errGroupDown = &engine.UnavailableError{Err: errors.New(`backend group "eu" unavailable`)}
