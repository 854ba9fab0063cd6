package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

func testRegistry(t *testing.T) *tenancy.Registry {
	t.Helper()
	tcfg := tenancy.DefaultConfig()
	tcfg.AdminNamespaces = []string{"monitoring"}
	r, err := tenancy.NewRegistry(tcfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ma := func(ns, metric string) *tenancy.MetricAccess {
		return &tenancy.MetricAccess{
			TypeMeta:   metav1.TypeMeta{APIVersion: tenancy.APIVersion(), Kind: tenancy.Kind},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"},
			Spec:       tenancy.MetricAccessSpec{Metrics: []string{metric}, Source: ns},
		}
	}
	r.Update("test", []*tenancy.MetricAccess{ma("team-a", "up"), ma("team-b", "memory_usage_bytes"), ma("team-c", "node_load1")})
	return r
}

// chooseAs runs authenticate and chooseTenant for a request with header h
// and form values; it returns the policy chosen or the error answered.
func chooseAs(t *testing.T, s *Server, h http.Header, form url.Values) (*tenancy.Policy, error) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/query?"+form.Encode(), nil)
	req.Header = h
	if err := req.ParseForm(); err != nil {
		t.Fatal(err)
	}
	c := echo.New().NewContext(req, httptest.NewRecorder())
	var got *tenancy.Policy
	err := s.authenticate(s.chooseTenant(func(c echo.Context) error {
		got = tenancy.FromContext(c.Request().Context())
		return nil
	}))(c)
	return got, err
}

func wantCode(t *testing.T, what string, err error, code int, mention string) {
	t.Helper()
	var pe *promError
	if !errors.As(err, &pe) || pe.Code != code || !strings.Contains(pe.Msg, mention) {
		t.Errorf("%s: %v, want HTTP %d naming %q", what, err, code, mention)
	}
}

// TestSeveralNamespaces: a list in the one header or parameter is
// authorised namespace by namespace and reads the union; a namespace the
// caller may not read refuses the request naming it; `*` is what the
// credentials name.
func TestSeveralNamespaces(t *testing.T) {
	reg := testRegistry(t)
	key := "k3y"
	sum := sha256.Sum256([]byte(key))
	cfg := authn.DefaultConfig()
	cfg.Type, cfg.MaxNamespaces, cfg.APIKeys = authn.TypeAPIKey, 3, []string{
		hex.EncodeToString(sum[:]) + " team-a", hex.EncodeToString(sum[:]) + " team-b",
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	idf, err := authn.New(cfg, authn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: Options{Policies: reg, Identify: idf, MaxNamespaces: 3}, metrics: newServerMetrics()}
	withKey := func(kv ...string) http.Header {
		h := http.Header{}
		h.Set(authn.APIKeyHeader, key)
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	pa, _ := reg.Policy("team-a")
	pb, _ := reg.Policy("team-b")
	union := tenancy.Union(pa, pb)

	for name, c := range map[string]struct {
		h    http.Header
		form url.Values
	}{
		"header":            {withKey(authn.TenantHeader, "team-b,team-a"), nil},
		"header, spaces":    {withKey(authn.TenantHeader, " team-a , team-b "), nil},
		"parameter":         {withKey(), url.Values{"namespace": {"team-a,team-b"}}},
		"both, agreeing":    {withKey(authn.TenantHeader, "team-a,team-b"), url.Values{"namespace": {"team-a,team-b"}}},
		"every one I read":  {withKey(authn.TenantHeader, "*"), nil},
		"duplicates":        {withKey(authn.TenantHeader, "team-a,team-b,team-a"), nil},
		"star as parameter": {withKey(), url.Values{"namespace": {"*"}}},
	} {
		p, err := chooseAs(t, s, c.h, c.form)
		if err != nil || p == nil || p.Fingerprint != union.Fingerprint || p.Namespace != "team-a,team-b" {
			t.Errorf("%s: policy %+v, err %v; want the union of team-a and team-b", name, p, err)
		}
	}
	if p, err := chooseAs(t, s, withKey(authn.TenantHeader, "team-a"), nil); err != nil || p != pa {
		t.Errorf("one namespace: %+v %v", p, err)
	}

	_, err = chooseAs(t, s, withKey(authn.TenantHeader, "team-a,team-c"), nil)
	wantCode(t, "a namespace not the key's", err, http.StatusForbidden, `"team-c"`)
	_, err = chooseAs(t, s, withKey(authn.TenantHeader, "team-a,team-b,team-c,team-d"), nil)
	wantCode(t, "too many", err, http.StatusBadRequest, "max_namespaces")
	_, err = chooseAs(t, s, withKey(authn.TenantHeader, "team-a,,team-b"), nil)
	wantCode(t, "empty item", err, http.StatusBadRequest, "empty")
	_, err = chooseAs(t, s, withKey(authn.TenantHeader, "team-a,team-b"), url.Values{"namespace": {"team-a"}})
	wantCode(t, "header and parameter differ", err, http.StatusBadRequest, "differ")
	_, err = chooseAs(t, s, withKey(), url.Values{"namespace": {"team-a", "team-b"}})
	wantCode(t, "parameter repeated", err, http.StatusBadRequest, "given 2 times")

	// The trusted header (auth.type none): every listed namespace needs
	// rules of its own, and `*` means nothing without a known caller.
	hs := &Server{opts: Options{Policies: reg, Identify: authn.HeaderIdentifier{MaxNamespaces: 3}, MaxNamespaces: 3}, metrics: newServerMetrics()}
	if p, err := chooseAs(t, hs, http.Header{authn.TenantHeader: {"team-b,team-a"}}, nil); err != nil || p.Fingerprint != union.Fingerprint {
		t.Errorf("header list: %+v %v", p, err)
	}
	_, err = chooseAs(t, hs, http.Header{authn.TenantHeader: {"team-a,nobody"}}, nil)
	wantCode(t, "a namespace without rules", err, http.StatusForbidden, `"nobody"`)
	_, err = chooseAs(t, hs, http.Header{authn.TenantHeader: {"*"}}, nil)
	wantCode(t, "star without a known caller", err, http.StatusBadRequest, "*")
	if p, err := chooseAs(t, hs, http.Header{authn.TenantHeader: {"team-a,monitoring"}}, nil); err != nil || !p.Admin {
		t.Errorf("a list with an admin namespace: %+v %v, want admin", p, err)
	}
	if l := tenantLabel(union); l != "(several)" {
		t.Errorf("metrics label of a union: %q", l)
	}
}

// TestSeveralNamespacesLimits: a request naming two namespaces runs under
// the strictest of their limits, whatever order it names them in.
func TestSeveralNamespacesLimits(t *testing.T) {
	reg := testRegistry(t)
	cfg := admission.DefaultConfig()
	cfg.Tenants = map[string]admission.Limits{"team-a": {MaxFetchedSeriesPerQuery: 5}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sched, err := admission.NewScheduler(cfg, 4, time.Second, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: Options{Policies: reg, Identify: authn.HeaderIdentifier{}, MaxNamespaces: 3}, metrics: newServerMetrics(), sched: sched}
	for _, names := range []string{"team-a,team-b", "team-b,team-a", "team-a"} {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=up", nil)
		req.Header.Set(authn.TenantHeader, names)
		if err := req.ParseForm(); err != nil {
			t.Fatal(err)
		}
		var got admission.Limits
		c := echo.New().NewContext(req, httptest.NewRecorder())
		err := s.authenticate(s.chooseTenant(s.admit(func(c echo.Context) error {
			b, _ := c.Request().Context().Value(budgetKey{}).(*admission.Budget)
			if b == nil {
				return errors.New("no budget")
			}
			got = b.Limits()
			return nil
		})))(c)
		if err != nil || got.MaxFetchedSeriesPerQuery != 5 {
			t.Errorf("%s: max_fetched_series_per_query %d (err %v), want team-a's 5", names, got.MaxFetchedSeriesPerQuery, err)
		}
	}
}
