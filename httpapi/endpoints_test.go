package httpapi

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
)

// apiBody is any answer in Prometheus' JSON format, success or error.
type apiBody struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType errorType       `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

// endpointCase is one request to a fresh server over a fakeReader.
type endpointCase struct {
	name   string
	setup  serverSetup
	fault  func(*fakeReader) // changes the reader before the request
	method string            // GET when empty
	path   string            // with its query string
	form   url.Values        // a form-encoded body (POST)
	tenant string            // X-Tenant-Namespace
	header http.Header       // more request headers
	mgmt   bool              // to the management listener
	code   int
	// logged are key/value pairs of the request's log line, as JSON text
	// (`"tenant":"team-a"`).
	logged []string
	// wantHeader are response headers the answer must carry.
	wantHeader http.Header
	// errType is the errorType of an error answer; every answer of 400 or
	// more must be one, in Prometheus' JSON error format.
	errType errorType
	// check looks at a JSON answer's data (success) or message (error).
	check func(t *testing.T, b apiBody, f *fakeReader)
	// raw checks an answer that is not JSON (metrics, pages, profiles).
	raw func(t *testing.T, rec *httptest.ResponseRecorder)
}

// formOf is the parameters given as name, value, name, value, ….
func formOf(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// urlOf is a path with the parameters given as in formOf.
func urlOf(path string, kv ...string) string {
	if len(kv) == 0 {
		return path
	}
	return path + "?" + formOf(kv...).Encode()
}

// TestEndpoints runs every route the server registers through its
// middleware and handler over a fake reader: for each, an answer that
// succeeds, with the shape of its data, and the error answers it has, with
// their status code and Prometheus errorType. The e2e suite shows the same
// routes over real backends.
func TestEndpoints(t *testing.T) {
	db := loadTestStorage(t)
	// One server per setup: Prometheus' API builds its OpenAPI document
	// anew for each, which costs more than all the requests of a row.
	type server struct {
		srv  *Server
		f    *fakeReader
		logs *bytes.Buffer
	}
	servers := map[serverSetup]server{}
	for _, tc := range endpointCases() {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := servers[tc.setup]
			if !ok {
				f, logs := newFakeReader(db), &bytes.Buffer{}
				s = server{newTestServer(t, f, tc.setup, logs), f, logs}
				servers[tc.setup] = s
			}
			f := s.f
			f.reset()
			s.logs.Reset()
			if tc.fault != nil {
				tc.fault(f)
			}
			rec := serveRow(s.srv, tc)
			if rec.Code != tc.code {
				t.Fatalf("%s %s: HTTP %d, want %d: %s", cmp.Or(tc.method, http.MethodGet), tc.path, rec.Code, tc.code, clipString(rec.Body.String(), 500))
			}
			if len(tc.logged) > 0 {
				line := requestLogLine(t, s.logs.String())
				for _, kv := range tc.logged {
					if !strings.Contains(line, kv) {
						t.Errorf("request log line lacks %s: %s", kv, line)
					}
				}
			}
			for k, want := range tc.wantHeader {
				if got := rec.Header().Values(k); !slices.Equal(got, want) {
					t.Errorf("header %s: %q, want %q", k, got, want)
				}
			}
			if tc.raw != nil {
				tc.raw(t, rec)
				return
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q, want JSON: %s", ct, clipString(rec.Body.String(), 300))
			}
			var b apiBody
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
				t.Fatalf("answer is not JSON (%v): %s", err, clipString(rec.Body.String(), 300))
			}
			switch {
			case tc.code >= 400:
				if b.Status != "error" || b.ErrorType != tc.errType || b.Error == "" || b.Data != nil {
					t.Fatalf("error answer %s, want status error, errorType %q and a message", rec.Body, tc.errType)
				}
				if strings.Contains(b.Error, "s3cret") || strings.Contains(b.Error, "10.0.0.1") {
					t.Errorf("error names a backend: %s", b.Error)
				}
			case tc.errType != "":
				t.Fatalf("row wants errorType %q with HTTP %d", tc.errType, tc.code)
			}
			if tc.check != nil {
				tc.check(t, b, f)
			}
		})
	}
}

// requestLogLine is the one request log line in logs.
func requestLogLine(t *testing.T, logs string) string {
	t.Helper()
	var found []string
	for l := range strings.Lines(logs) {
		if strings.Contains(l, `"msg":"request"`) {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d request log lines, want 1: %s", len(found), logs)
	}
	return found[0]
}

// serveRow sends the row's request to the server's main handler, or to its
// management handler.
func serveRow(srv *Server, tc endpointCase) *httptest.ResponseRecorder {
	method := cmp.Or(tc.method, http.MethodGet)
	var req *http.Request
	if tc.form != nil {
		req = httptest.NewRequest(method, tc.path, strings.NewReader(tc.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, tc.path, nil)
	}
	for k, vs := range tc.header {
		req.Header[k] = vs
	}
	if tc.tenant != "" {
		req.Header.Set("X-Tenant-Namespace", tc.tenant)
	}
	rec := httptest.NewRecorder()
	h := srv.Handler()
	if tc.mgmt {
		h = srv.ManagementHandler()
	}
	h.ServeHTTP(rec, req)
	return rec
}

// TestQueueFull: a tenant over its max_concurrent_requests waits in its
// queue; one more than max_queued_requests is refused at once with 429
// too_many_requests and a Retry-After, without reading anything; the
// waiting request runs when the slot frees.
func TestQueueFull(t *testing.T) {
	l := admission.DefaultLimits()
	l.MaxConcurrentRequests, l.MaxQueuedRequests = 1, 1
	f := newFakeReader(loadTestStorage(t))
	f.gate, f.entered = make(chan struct{}), make(chan struct{}, 4)
	// The waiting request must not time out while the test holds the slot.
	srv := newTestServer(t, f, serverSetup{limits: &l, queueTimeout: time.Hour}, io.Discard)
	query := endpointCase{path: urlOf("/api/v1/query", "query", "up", "time", "600"), tenant: "team-a"}

	answers := make(chan *httptest.ResponseRecorder, 2)
	go func() { answers <- serveRow(srv, query) }()
	<-f.entered // the first request holds the tenant's one slot
	go func() { answers <- serveRow(srv, query) }()
	for waited := time.Duration(0); srv.sched.State().Tenants["team-a"].Queued != 1; waited += time.Millisecond {
		if waited > time.Minute {
			t.Fatal("the second request never queued")
		}
		time.Sleep(time.Millisecond)
	}

	rec := serveRow(srv, query)
	var b apiBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || rec.Code != http.StatusTooManyRequests || b.ErrorType != errorTooManyRequests || !strings.Contains(b.Error, "max_queued_requests=1") {
		t.Fatalf("third request: HTTP %d %s (%v), want 429 too_many_requests naming max_queued_requests", rec.Code, rec.Body, err)
	}
	if ra := rec.Header().Get("Retry-After"); ra == "" {
		t.Error("429 without Retry-After")
	}
	if n := len(f.readTenants()); n != 1 {
		t.Errorf("%d reads with one request running, want 1", n)
	}

	close(f.gate)
	for range 2 {
		if rec := <-answers; rec.Code != http.StatusOK {
			t.Errorf("queued request: HTTP %d %s", rec.Code, rec.Body)
		}
	}
}

// TestEndpointsCoverEveryRoute: each route of either listener, with each
// method it serves, has a row of the table that reaches it and succeeds.
func TestEndpointsCoverEveryRoute(t *testing.T) {
	srv := newTestServer(t, newFakeReader(loadTestStorage(t)), serverSetup{}, io.Discard)
	covered := map[string]bool{}
	for _, tc := range endpointCases() {
		if tc.code >= 400 {
			continue
		}
		e := srv.echo
		if tc.mgmt {
			e = srv.mgmt
		}
		method := cmp.Or(tc.method, http.MethodGet)
		c := e.NewContext(httptest.NewRequest(method, tc.path, nil), httptest.NewRecorder())
		e.Router().Find(method, c.Request().URL.Path, c)
		covered[fmt.Sprint(tc.mgmt, method, c.Path())] = true
	}
	for _, l := range []struct {
		mgmt bool
		e    *echo.Echo
	}{{false, srv.echo}, {true, srv.mgmt}} {
		for _, r := range l.e.Routes() {
			if strings.HasSuffix(r.Name, ".methodNotAllowed") || r.Method == echo.RouteNotFound {
				continue // answers only 405 or 404, which rows check
			}
			if !covered[fmt.Sprint(l.mgmt, r.Method, r.Path)] {
				t.Errorf("no row succeeds at %s %s (management listener: %v)", r.Method, r.Path, l.mgmt)
			}
		}
	}
}

// decodeData reads a success answer's data into v.
func decodeData(t *testing.T, b apiBody, v any) {
	t.Helper()
	if b.Status != "success" {
		t.Fatalf("status %q, want success", b.Status)
	}
	if err := json.Unmarshal(b.Data, v); err != nil {
		t.Fatalf("data %s: %v", b.Data, err)
	}
}

// queryResult checks a query answer: its type and number of series.
func queryResult(typ string, n int) func(*testing.T, apiBody, *fakeReader) {
	return func(t *testing.T, b apiBody, _ *fakeReader) {
		var d struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		}
		decodeData(t, b, &d)
		if d.ResultType != typ || len(d.Result) != n {
			t.Errorf("data %s, want %d %s series", b.Data, n, typ)
		}
	}
}

// stringList checks a list of strings holding at least want.
func stringList(want ...string) func(*testing.T, apiBody, *fakeReader) {
	return func(t *testing.T, b apiBody, _ *fakeReader) {
		var d []string
		decodeData(t, b, &d)
		for _, w := range want {
			if !slices.Contains(d, w) {
				t.Errorf("data %v lacks %q", d, w)
			}
		}
	}
}

// mentions checks an error message names what went wrong.
func mentions(parts ...string) func(*testing.T, apiBody, *fakeReader) {
	return func(t *testing.T, b apiBody, _ *fakeReader) {
		for _, p := range parts {
			if !strings.Contains(b.Error, p) {
				t.Errorf("error %q does not mention %q", b.Error, p)
			}
		}
	}
}

// warned checks a success answer carries a warning.
func warned(w string) func(*testing.T, apiBody, *fakeReader) {
	return func(t *testing.T, b apiBody, _ *fakeReader) {
		if b.Status != "success" || !slices.ContainsFunc(b.Warnings, func(s string) bool { return strings.Contains(s, w) }) {
			t.Errorf("answer %s %q, want success with warning %q", b.Status, b.Warnings, w)
		}
	}
}

// readAs checks the reader was asked under the tenant's policy (and only it).
func readAs(ns string) func(*testing.T, apiBody, *fakeReader) {
	return func(t *testing.T, _ apiBody, f *fakeReader) {
		got := f.readTenants()
		if len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != ns }) {
			t.Errorf("reads made as %q, want every one as %q", got, ns)
		}
	}
}

// noRead checks the request was refused before it read anything.
func noRead(t *testing.T, _ apiBody, f *fakeReader) {
	if got := f.readTenants(); len(got) != 0 {
		t.Errorf("refused request read %d times", len(got))
	}
}

// checkAll runs every check.
func checkAll(checks ...func(*testing.T, apiBody, *fakeReader)) func(*testing.T, apiBody, *fakeReader) {
	return func(t *testing.T, b apiBody, f *fakeReader) {
		for _, c := range checks {
			c(t, b, f)
		}
	}
}

// rawHas checks a raw answer's content type and text.
func rawHas(contentType string, texts ...string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, contentType) {
			t.Errorf("Content-Type %q, want %s", ct, contentType)
		}
		for _, s := range texts {
			if !strings.Contains(rec.Body.String(), s) {
				t.Errorf("answer lacks %q: %s", s, clipString(rec.Body.String(), 300))
			}
		}
	}
}
