package operations

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
)

// otlpSpan is one span as an OTLP receiver got it.
type otlpSpan struct {
	traceID, id, parent string
	name                string
	service             string // the exporting process's service.name
	kind                tracepb.Span_SpanKind
	attrs               map[string]string
	events              []string
}

// otlpReceiver is a real OTLP/gRPC trace endpoint on 127.0.0.1 that keeps
// every span exported to it, whoever exports (the proxy, the backends).
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans []otlpSpan
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: ln.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := otlpAttributes(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := otlpSpan{
					traceID: hex.EncodeToString(s.GetTraceId()),
					id:      hex.EncodeToString(s.GetSpanId()),
					parent:  hex.EncodeToString(s.GetParentSpanId()),
					name:    s.GetName(),
					service: service,
					kind:    s.GetKind(),
					attrs:   otlpAttributes(s.GetAttributes()),
				}
				for _, e := range s.GetEvents() {
					sp.events = append(sp.events, e.GetName())
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func otlpAttributes(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.GetStringValue()
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = strconv.FormatBool(v.GetBoolValue())
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
		default:
			m[kv.GetKey()] = fmt.Sprint(v)
		}
	}
	return m
}

// trace returns the spans of one trace, by span ID.
func (r *otlpReceiver) trace(traceID string) map[string]otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]otlpSpan{}
	for _, s := range r.spans {
		if s.traceID == traceID {
			out[s.id] = s
		}
	}
	return out
}

// traceTree answers questions about one trace's parent/child relations.
type traceTree map[string]otlpSpan

func (tr traceTree) named(name string) []otlpSpan {
	var out []otlpSpan
	for _, s := range tr {
		if s.name == name {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b otlpSpan) int { return strings.Compare(a.id, b.id) })
	return out
}

func (tr traceTree) children(parent otlpSpan) []otlpSpan {
	var out []otlpSpan
	for _, s := range tr {
		if s.parent == parent.id {
			out = append(out, s)
		}
	}
	return out
}

// under reports whether s is a descendant of ancestor.
func (tr traceTree) under(s, ancestor otlpSpan) bool {
	for seen := 0; s.parent != "" && seen < len(tr); seen++ {
		if s.parent == ancestor.id {
			return true
		}
		p, ok := tr[s.parent]
		if !ok {
			return false
		}
		s = p
	}
	return false
}

// await waits for the trace's spans: the proxy's, up to the encoding of
// its answer, and at least backends spans of backends under the proxy's
// calls. Spans arrive in batches, from several processes.
func (r *otlpReceiver) await(t *testing.T, traceID string, backends int) traceTree {
	t.Helper()
	var tr traceTree
	e2eutil.Eventually(t, time.Minute, "the spans of trace "+traceID+" at the receiver", func() error {
		tr = r.trace(traceID)
		if n := len(tr.backendSpans()); len(tr.named("encode response")) == 0 || n < backends {
			return fmt.Errorf("%d spans, %d of backends:\n%s", len(tr), n, tr.dump())
		}
		return nil
	})
	t.Logf("trace %s:\n%s", traceID, tr.dump())
	return tr
}

// backendSpans are the server spans under a client span: a backend's
// answers to the proxy's calls (the proxy's own server span has the
// client's span, from outside the trace's spans, as parent).
func (tr traceTree) backendSpans() []otlpSpan {
	var out []otlpSpan
	for _, s := range tr {
		if p, ok := tr[s.parent]; ok && s.kind == tracepb.Span_SPAN_KIND_SERVER && p.kind == tracepb.Span_SPAN_KIND_CLIENT {
			out = append(out, s)
		}
	}
	return out
}

func (tr traceTree) dump() string {
	var lines []string
	for _, s := range tr {
		lines = append(lines, fmt.Sprintf("%s parent=%s %s kind=%s %v", s.id, s.parent, s.name, s.kind, s.attrs))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// tracingData is one gauge for team-a, sampled every 15 s over the half
// hour before now: old enough to be cached, recent enough to be read.
func tracingData(now time.Time, group string) io.Reader {
	var b strings.Builder
	b.WriteString("# TYPE trace_test_value unknown\n")
	for ts := now.Add(-30 * time.Minute); ts.Before(now.Add(-5 * time.Minute)); ts = ts.Add(15 * time.Second) {
		fmt.Fprintf(&b, "trace_test_value{namespace=\"team-a\",instance=%q} 1 %d\n", group, ts.Unix())
	}
	b.WriteString("# EOF\n")
	return strings.NewReader(b.String())
}

// TestTracing: one query sent with a client's traceparent becomes one
// trace at a real OTLP receiver: the proxy's spans continue the client's
// trace with the expected tree, and two real Prometheus servers started with
// tracing on add their spans under the proxy's calls to them. The request
// log line and the duration histogram's exemplar carry the trace ID.
func TestTracing(t *testing.T) {
	recv := startOTLPReceiver(t)
	now := time.Now().Truncate(time.Minute)
	groups := []string{"a", "b"}
	var static []discovery.StaticGroup
	for _, g := range groups {
		p := e2eutil.StartPrometheus(t, e2eutil.V3, tracingData(now, g), e2eutil.WithName("tracing-"+g), e2eutil.WithTracing(recv.addr),
			// Disjoint groups: an aggregation may be pushed to them.
			e2eutil.WithExternalLabels(map[string]string{"cluster": g}))
		static = append(static, discovery.StaticGroup{Name: g, URLs: []string{p.URL}})
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "team-a.yaml"), []byte(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: traced, namespace: team-a}
spec:
  source: team-a
  metrics: ["trace_test_value"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := app.DefaultConfig()
	cfg.Discovery.Static = static
	cfg.Tenants.Files = []string{filepath.Join(dir, "*.yaml")}
	cfg.Proxy.EnableRequestLogging = true
	cfg.Server.ManagementAddress = "127.0.0.1:0"
	cfg.Tracing = tracing.DefaultConfig()
	cfg.Tracing.Endpoint = recv.addr
	cfg.Tracing.Insecure = true
	// Nothing the proxy starts itself is sampled: only the request below,
	// whose caller samples it, is traced.
	cfg.Tracing.SamplingFraction = 0
	proxy, logs := e2eproxy.StartProxyLogging(t, cfg, slog.LevelInfo)

	query := url.Values{"query": {"trace_test_value"}, "time": {strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)}}
	get := func(header http.Header) (int, string) {
		req, err := http.NewRequest(http.MethodGet, proxy.URL+"/api/v1/query?"+query.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The tenant's rules are read from the file shortly after start.
	e2eproxy.WaitFor(t, 30*time.Second, "team-a's policy", func() bool {
		code, _ := get(e2eproxy.TenantHeader("team-a"))
		return code == http.StatusOK
	})

	const (
		traceID      = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpanID = "00f067aa0ba902b7"
	)
	h := e2eproxy.TenantHeader("team-a")
	h.Set("traceparent", "00-"+traceID+"-"+clientSpanID+"-01")
	// The cache is bypassed by its own key: the earlier requests asked the
	// same query and filled it, so ask for one a second later.
	query.Set("time", strconv.FormatInt(now.Add(-10*time.Minute+time.Second).Unix(), 10))
	code, body := get(h)
	if code != http.StatusOK || !strings.Contains(body, `"instance":"a"`) || !strings.Contains(body, `"instance":"b"`) {
		t.Fatalf("traced query: %d %s", code, body)
	}

	tr := recv.await(t, traceID, len(groups))

	one := func(name string) otlpSpan {
		t.Helper()
		ss := tr.named(name)
		if len(ss) != 1 {
			t.Fatalf("%d spans named %q, want 1:\n%s", len(ss), name, tr.dump())
		}
		return ss[0]
	}
	root := one("GET /api/v1/query")
	if root.parent != clientSpanID || root.kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("request span: parent %s kind %s, want the client's span %s, server", root.parent, root.kind, clientSpanID)
	}
	if root.service != tracing.ServiceName {
		t.Errorf("request span: service.name %q, want %q (told apart from the backends' %q)", root.service, tracing.ServiceName, "prometheus")
	}
	for k, want := range map[string]string{"tenant.namespace": "team-a", "http.route": "/api/v1/query", "http.response.status_code": "200", "http.request.method": "GET"} {
		if got := root.attrs[k]; got != want {
			t.Errorf("request span: %s = %q, want %q", k, got, want)
		}
	}
	childOf := func(s, parent otlpSpan) {
		t.Helper()
		if s.parent != parent.id {
			t.Errorf("%s (%s) is a child of %s, want of %s (%s)", s.name, s.id, s.parent, parent.name, parent.id)
		}
	}
	under := func(s, ancestor otlpSpan) {
		t.Helper()
		if !tr.under(s, ancestor) {
			t.Errorf("%s (%s) is not under %s (%s)", s.name, s.id, ancestor.name, ancestor.id)
		}
	}
	childOf(one("admission wait"), root)
	childOf(one("encode response"), root)
	api := one("promqlInstantQuery") // Prometheus' own handler
	childOf(api, root)
	pl := one("plan")
	childOf(pl, api)
	if pl.attrs["pushed"] != "false" || pl.attrs["decisions"] == "" {
		t.Errorf("plan span: pushed=%q decisions=%q; a bare selector is read, not pushed, and the decision says why", pl.attrs["pushed"], pl.attrs["decisions"])
	}
	c := one("cache")
	childOf(c, api)
	lookup := one("cache lookup")
	childOf(lookup, c)
	if lookup.attrs["hit"] != "false" {
		t.Errorf("cache lookup: hit=%q, want false (a time not asked before)", lookup.attrs["hit"])
	}
	eval := one("evaluate")
	childOf(eval, c)

	reads := tr.named("group read")
	var readGroups []string
	for _, gr := range reads {
		under(gr, eval)
		readGroups = append(readGroups, gr.attrs["group"])
		rr := tr.children(gr)
		if len(rr) != 1 || rr[0].name != "replica read" {
			t.Errorf("group read %s: children %v, want one replica read", gr.attrs["group"], rr)
			continue
		}
		i := slices.Index(groups, gr.attrs["group"])
		if i < 0 {
			continue
		}
		if want := redact.URL(static[i].URLs[0]); rr[0].attrs["replica"] != want {
			t.Errorf("replica read of group %s: replica %q, want %q", gr.attrs["group"], rr[0].attrs["replica"], want)
		}
		// The backend's own server span hangs under the proxy's HTTP
		// client span of this read.
		joined := false
		for _, s := range tr.backendSpans() {
			if tr.under(s, rr[0]) && s.attrs["url.path"] == "/api/v1/read" {
				joined = true
				if s.service != "prometheus" {
					t.Errorf("group %s: the backend's span has service.name %q, want prometheus", gr.attrs["group"], s.service)
				}
			}
		}
		if !joined {
			t.Errorf("group %s: no span of the backend under the proxy's remote-read call", gr.attrs["group"])
		}
	}
	slices.Sort(readGroups)
	if !slices.Equal(readGroups, groups) {
		t.Errorf("group reads of groups %v, want %v", readGroups, groups)
	}

	// The request's log line and the duration histogram lead to the trace.
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"trace_id":"`+traceID+`"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no request log line carries trace_id %s:\n%s", traceID, e2eproxy.Clip(logs.Bytes()))
	}
	req, err := http.NewRequest(http.MethodGet, proxy.ManagementURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	exemplar := false
	for _, line := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(line, `prometheus_proxy_request_duration_seconds_bucket{endpoint="/api/v1/query"`) && strings.Contains(line, `# {trace_id="`+traceID+`"}`) {
			exemplar = true
		}
	}
	if !exemplar {
		t.Errorf("no bucket of prometheus_proxy_request_duration_seconds holds the exemplar trace_id=%s", traceID)
	}

	// After the exemplar check: a bucket keeps the latest exemplar, and
	// this query would replace it.
	testTracingPushDown(t, recv, proxy.URL, groups, now)
}

// testTracingPushDown: a pushed aggregation's trace shows the plan's
// verdict, one fragment per group, and each backend's evaluation of it
// under the proxy's call.
func testTracingPushDown(t *testing.T, recv *otlpReceiver, base string, groups []string, now time.Time) {
	const traceID = "5cf92f3577b34da6a3ce929d0e0e4737"
	q := url.Values{"query": {"max(trace_test_value)"}, "time": {strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)}}
	req, err := http.NewRequest(http.MethodGet, base+"/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = e2eproxy.TenantHeader("team-a")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b8-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pushed query: %d %s", resp.StatusCode, body)
	}
	tr := recv.await(t, traceID, len(groups))
	pl := tr.named("plan")
	if len(pl) != 1 || pl[0].attrs["pushed"] != "true" || pl[0].attrs["fragments"] != "1" {
		t.Fatalf("plan spans %v, want one saying one fragment is pushed", pl)
	}
	frags := tr.named("push-down group")
	var fragGroups []string
	for _, f := range frags {
		fragGroups = append(fragGroups, f.attrs["group"])
		if f.attrs["refused"] != "" {
			t.Errorf("fragment of group %s refused: %s", f.attrs["group"], f.attrs["refused"])
		}
		gq := tr.children(f)
		if len(gq) != 1 || gq[0].name != "group query" {
			t.Errorf("fragment of group %s: children %v, want one group query", f.attrs["group"], gq)
			continue
		}
		evaluated := false
		for _, s := range tr.backendSpans() {
			if tr.under(s, gq[0]) && s.attrs["url.path"] == "/api/v1/query" {
				evaluated = true
			}
		}
		if !evaluated {
			t.Errorf("fragment of group %s: no span of the backend's /api/v1/query under it", f.attrs["group"])
		}
	}
	slices.Sort(fragGroups)
	if !slices.Equal(fragGroups, groups) {
		t.Errorf("fragments for groups %v, want %v", fragGroups, groups)
	}
}
