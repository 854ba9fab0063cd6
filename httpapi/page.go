package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/storage"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// The page for people at /: plain HTML, JavaScript and SVG served from the
// binary, no framework and no third-party origin. It holds no data itself:
// it asks /api/v1/status/tenant and the query API with the caller's
// credentials, so it shows exactly what the caller may see.
//
//go:embed ui
var uiFiles embed.FS

// maxMetricNames bounds the list of metric names on the page.
const maxMetricNames = 10000

func (s *Server) pageRoutes(e *echo.Echo) {
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.FileServer(http.FS(sub))
	e.GET("/", func(c echo.Context) error {
		b, err := fs.ReadFile(sub, "index.html")
		if err != nil {
			return err
		}
		setPageHeaders(c)
		return c.HTMLBlob(http.StatusOK, b)
	})
	e.GET("/ui/*", func(c echo.Context) error {
		setPageHeaders(c)
		r := c.Request().Clone(c.Request().Context())
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/ui")
		files.ServeHTTP(c.Response(), r)
		return nil
	})
}

// setPageHeaders forbids every origin but the proxy's own, so the page can
// load nothing from elsewhere and send a token nowhere else.
func setPageHeaders(c echo.Context) {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// TenantStatus is the answer of /api/v1/status/tenant: who the caller is
// and what it may read, only about the caller's own namespace.
type TenantStatus struct {
	Tenancy        bool           `json:"tenancy"`
	Namespace      string         `json:"namespace"`
	Admin          bool           `json:"admin"`
	Subject        string         `json:"subject,omitempty"`
	Authentication string         `json:"authentication"`
	Rules          []string       `json:"rules"`
	Objects        []TenantObject `json:"objects"`
	MetricNames    []string       `json:"metricNames"`
	Truncated      bool           `json:"metricNamesTruncated,omitempty"`
	Links          []string       `json:"links,omitempty"`
}

// TenantObject is one MetricAccess object of the caller's namespace as compiled.
type TenantObject struct {
	Name     string            `json:"name"`
	Source   string            `json:"source"`
	Metrics  []string          `json:"metrics"`
	Rules    []string          `json:"rules"`
	Problems []tenancy.Problem `json:"problems"`
}

func (s *Server) tenantStatus(c echo.Context) error {
	ctx := c.Request().Context()
	p := tenancy.FromContext(ctx)
	st := TenantStatus{Tenancy: s.opts.Policies != nil, Rules: []string{}, Objects: []TenantObject{}, MetricNames: []string{}}
	sub, _ := c.Get(subjectKey).(string)
	st.Subject = sub
	st.Authentication = "none"
	if kind, _, ok := strings.Cut(sub, ":"); ok {
		st.Authentication = kind
	}
	if p != nil {
		st.Namespace, st.Admin = p.Namespace, p.Admin
		for _, r := range p.Rules {
			st.Rules = append(st.Rules, r.String())
		}
	}
	if !st.Tenancy {
		st.Admin = true
	}
	namespaces := []string{st.Namespace}
	if p != nil && len(p.Namespaces) > 0 {
		namespaces = p.Namespaces
	}
	dv, ok := s.tenantsView()
	for _, ns := range namespaces {
		if !ok || ns == "" {
			continue
		}
		for _, o := range dv.Namespaces[ns].Objects {
			to := TenantObject{Name: o.Name, Source: o.Spec.Source, Metrics: o.Spec.Metrics, Rules: o.Rules, Problems: o.Problems}
			if to.Problems == nil {
				to.Problems = []tenancy.Problem{}
			}
			st.Objects = append(st.Objects, to)
		}
	}
	if st.Admin {
		st.Links = []string{"/debug", "/debug/targets", "/debug/tenants", "/metrics"}
	}
	q, err := s.opts.Fanout.Querier(requestRange(c))
	if err != nil {
		return fanoutError(err)
	}
	names, warns, err := q.LabelValues(ctx, model.MetricNameLabel, &storage.LabelHints{Limit: maxMetricNames + 1})
	if err != nil {
		return fanoutError(err)
	}
	if len(names) > maxMetricNames {
		names, st.Truncated = names[:maxMetricNames], true
	}
	st.MetricNames = append(st.MetricNames, names...)
	return promSuccess(c, st, warns)
}

// tenantsView is the registry's view, when the tenant source offers one.
func (s *Server) tenantsView() (tenancy.DebugView, bool) {
	if s.opts.Tenants == nil {
		return tenancy.DebugView{}, false
	}
	dv, ok := s.opts.Tenants.Debug().(tenancy.DebugView)
	return dv, ok
}
