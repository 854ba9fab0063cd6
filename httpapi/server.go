package httpapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grafana/regexp"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/route"
	"github.com/prometheus/prometheus/promql"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Policies resolves a namespace to what it may read.
type Policies interface {
	// Policy returns the namespace's policy, or an error wrapping
	// tenancy.ErrNoAccess when it may read nothing.
	Policy(namespace string) (*tenancy.Policy, error)
}

// Debugger is anything that can describe itself for a /debug endpoint.
type Debugger interface {
	Debug() any
}

// Readiness is a condition /ready waits for besides the backends (tenant
// sources synced, say): nil when met, else what is missing.
type Readiness interface {
	Ready() error
}

// Backends is the read-only view of discovery the server shows and checks.
type Backends interface {
	Status() []discovery.GroupStatus
	Groups() []*discovery.Group
	Synced() bool
}

// Options assembles a Server.
type Options struct {
	Proxy  ProxyConfig
	Server ServerConfig
	// Limits are the per-tenant limits; the zero value means
	// admission.DefaultConfig().
	Limits      admission.Config
	Engine      engine.Config
	QueryEngine promql.QueryEngine // the PromQL engine, or the cache wrapping it
	// Fanout is what every endpoint reads: the fan-out over the backend
	// groups (engine.Fanout).
	Fanout Reader
	// Explain answers /api/v1/query?…&explain=true; may be nil.
	Explain  Explainer
	Backends Backends
	// Policies is nil when no tenant source is configured: the proxy is then
	// an open federation gateway and every request sees everything.
	Policies Policies
	// Identify finds who is asking (package authn); nil trusts the
	// X-Tenant-Namespace header.
	Identify Identifier
	// MaxNamespaces bounds the namespaces one request may name
	// (auth.max_namespaces).
	MaxNamespaces int
	Tenants       Debugger // for /debug/tenants; may be nil
	// Ready adds conditions to /ready (e.g. tenant sources synced); may be nil.
	Ready    Readiness
	Registry *prometheus.Registry
	Logger   *slog.Logger
	Version  string
}

// Server is the proxy's HTTP server.
type Server struct {
	opts    Options
	echo    *echo.Echo
	mgmt    *echo.Echo // the management listener's routes
	promAPI *route.Router
	sched   *admission.Scheduler
	metrics *serverMetrics
	started time.Time
	// draining is set when shutdown begins: /ready fails from then on.
	draining atomic.Bool
}

type serverMetrics struct {
	requests       *prometheus.CounterVec
	tenantRequests *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	inflight       prometheus.Gauge
	rejected       prometheus.Counter
	authFailures   *prometheus.CounterVec
}

// New builds the server from validated sections (each package's Validate,
// called by the assembler); it neither checks nor fills them again.
func New(opts Options) (*Server, error) {
	if opts.QueryEngine == nil || opts.Fanout == nil || opts.Backends == nil {
		return nil, errors.New("httpapi: query engine, fan-out and backends are required")
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Identify == nil {
		opts.Identify = authn.HeaderIdentifier{MaxNamespaces: opts.MaxNamespaces}
	}
	s := &Server{opts: opts, started: time.Now()}
	s.metrics = newServerMetrics()
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	sched, err := admission.NewScheduler(opts.Limits, opts.Proxy.MaxConcurrentRequests, time.Duration(opts.Proxy.QueueTimeout), opts.Registry)
	if err != nil {
		return nil, err
	}
	s.sched = sched
	cors := regexp.MustCompile("^(?s:" + opts.Server.CORSOrigin + ")$")
	build := &v1.PrometheusVersion{Version: PrometheusCompatVersion(), Revision: opts.Version, Branch: "prometheus-multi-tenant-proxy", GoVersion: goVersion()}
	s.promAPI = newPrometheusAPI(budgetEngine{opts.QueryEngine}, countingQueryable{opts.Fanout}, opts.Fanout, cors, time.Duration(opts.Engine.LookbackDelta), time.Duration(opts.Engine.Timeout), build, opts.Registry, opts.Logger)
	s.echo = s.routes()
	s.mgmt = s.managementRoutes()
	return s, nil
}

// Handler returns the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.echo }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	// X-Forwarded-For is believed only from loopback and private addresses
	// (an ingress in the cluster); anyone else could write any remote_ip
	// into the request log with it.
	e.IPExtractor = echo.ExtractIPFromXFFHeader()
	e.Use(s.recoverPanics, s.instrument)

	// Who is asking is settled before the body is read; the namespace the
	// request acts as may come in the body, so it is chosen after.
	api := e.Group("/api/v1", s.authenticate, s.limitBody, s.chooseTenant, s.admit, s.partialResponse)
	prom := echo.WrapHandler(pooledGzip(s.promAPI))
	// Served over GET and POST; other methods get 405, as in Prometheus.
	getPost := map[string]echo.HandlerFunc{
		"/query":           s.explainOr(prom),
		"/query_range":     s.explainOr(prom),
		"/series":          prom,
		"/labels":          prom,
		"/format_query":    prom,
		"/parse_query":     prom,
		"/query_exemplars": s.exemplars,
	}
	for p, h := range getPost {
		api.GET(p, h)
		api.POST(p, h)
		api.Match(notGetOrPost, p, methodNotAllowed)
	}
	// Served over GET only, as Prometheus does: other methods get its 405.
	getOnly := map[string]echo.HandlerFunc{
		"/label/:name/values": prom,
		"/status/buildinfo":   prom,
		"/metadata":           s.metadata,
		"/rules":              s.rules,
		"/alerts":             s.alerts,
		"/status/tenant":      s.tenantStatus,
	}
	for p, h := range getOnly {
		api.GET(p, h)
		api.Match(otherMethods, p, methodNotAllowed)
	}

	admin := []echo.MiddlewareFunc{s.authenticate, s.limitBody, s.chooseTenant, s.requireAdmin}
	if s.opts.Server.ManagementAddress == "" {
		// Probes reach these without credentials; with a management
		// listener they go there and the main port keeps them admin-only.
		e.GET("/health", s.health)
		e.GET("/ready", s.ready)
	} else {
		e.GET("/health", s.health, admin...)
		e.GET("/ready", s.ready, admin...)
	}
	mgmt := e.Group("", admin...)
	if s.opts.Proxy.EnableMetrics {
		mgmt.GET("/metrics", s.metricsHandler())
	}
	mgmt.GET("/debug/targets", s.debugTargets)
	mgmt.GET("/debug", s.debugIndex)
	mgmt.GET("/debug/tenants", s.debugTenants)
	addPprof(mgmt)
	s.pageRoutes(e)
	return e
}

// The methods answered with 405: by a GET and POST endpoint (notGetOrPost),
// by a GET-only one (otherMethods).
var (
	notGetOrPost = []string{http.MethodPut, http.MethodDelete, http.MethodPatch}
	otherMethods = append([]string{http.MethodPost}, notGetOrPost...)
)

func methodNotAllowed(echo.Context) error {
	return apiError(http.StatusMethodNotAllowed, errorBadData, "method not allowed")
}

func (s *Server) metricsHandler() echo.HandlerFunc {
	// OpenMetrics, when the scraper asks for it, carries the trace IDs of
	// the request-duration histogram's exemplars.
	return echo.WrapHandler(promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{Registry: s.opts.Registry, EnableOpenMetrics: true}))
}

// managementRoutes is what the management listener serves: metrics and
// probes, without credentials (a ServiceMonitor and the kubelet have none),
// and Go's profiles. Nothing there belongs to a tenant; the rest of /debug
// stays on the main port, admin-only.
func (s *Server) managementRoutes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.recoverPanics)
	e.GET("/health", s.health)
	e.GET("/ready", s.ready)
	if s.opts.Proxy.EnableMetrics {
		e.GET("/metrics", s.metricsHandler())
	}
	addPprof(e.Group(""))
	return e
}

// addPprof serves Go's profiles under /debug/pprof/, where Prometheus,
// Thanos and Mimir serve theirs (go tool pprof http://…/debug/pprof/heap).
// Profiles hold no tenant data, but cost CPU while they run: on the main
// port they sit behind the admin check with the rest of /debug.
func addPprof(g *echo.Group) {
	g.GET("/debug/pprof/cmdline", echo.WrapHandler(http.HandlerFunc(pprof.Cmdline)))
	g.GET("/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
	g.GET("/debug/pprof/symbol", echo.WrapHandler(http.HandlerFunc(pprof.Symbol)))
	g.POST("/debug/pprof/symbol", echo.WrapHandler(http.HandlerFunc(pprof.Symbol)))
	g.GET("/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(pprof.Trace)))
	// The index, and every named profile (heap, goroutine, allocs, …).
	g.GET("/debug/pprof/*", echo.WrapHandler(http.HandlerFunc(pprof.Index)))
}

// ManagementHandler returns the management listener's handler.
func (s *Server) ManagementHandler() http.Handler { return s.mgmt }

// Serve answers on ln, and on mgmt (may be nil) the management endpoints,
// until ctx is cancelled, then drains (/ready fails, serving goes on for
// server.drain_delay) and shuts down gracefully: in-flight requests get
// server.shutdown_timeout to finish.
func (s *Server) Serve(ctx context.Context, ln, mgmt net.Listener) error {
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return err
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	servers := []*http.Server{s.httpServer(s.echo)}
	listeners := []net.Listener{ln}
	if mgmt != nil {
		// The management port holds no tenant data and is scraped and
		// probed from inside the cluster: plain HTTP.
		servers = append(servers, s.httpServer(s.mgmt))
		listeners = append(listeners, mgmt)
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	select {
	case err := <-errc:
		for _, srv := range servers {
			_ = srv.Close()
		}
		return err
	case <-ctx.Done():
	}
	s.Drain()
	// New connections still come while load balancers notice /ready;
	// answering "Connection: close" makes clients open the next request's
	// connection afresh, to wherever they are sent now.
	// The management listener keeps serving /ready (now 503) meanwhile.
	servers[0].SetKeepAlivesEnabled(false)
	if d := time.Duration(s.opts.Server.DrainDelay); d > 0 {
		s.opts.Logger.Info("draining: /ready fails, still serving", "drain_delay", d)
		select {
		case err := <-errc:
			for _, srv := range servers {
				_ = srv.Close()
			}
			return err
		case <-time.After(d):
		}
	}
	s.opts.Logger.Info("shutting down: no new connections, waiting for requests in flight", "shutdown_timeout", time.Duration(s.opts.Server.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.opts.Server.ShutdownTimeout))
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	return errors.Join(errs...)
}

// httpServer bounds what a slow or idle client can hold: headers must
// arrive within read_header_timeout, the body within read_timeout, the
// answer must be written within write_timeout (long enough for the longest
// query), and idle keep-alive connections close after idle_timeout.
func (s *Server) httpServer(h http.Handler) *http.Server {
	c := s.opts.Server
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: time.Duration(c.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(c.ReadTimeout),
		WriteTimeout:      time.Duration(c.WriteTimeout),
		IdleTimeout:       time.Duration(c.IdleTimeout),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn),
	}
}

// Drain makes /ready fail from now on, so that no new traffic is sent here;
// Serve calls it when its context ends.
func (s *Server) Drain() { s.draining.Store(true) }

// Keys of values the middleware leaves in the echo context for the request log.
const (
	subjectKey   = "proxy.subject"
	authErrorKey = "proxy.auth_error"
	limitKey     = "proxy.limit" // the limit that refused the request
)

// instrument counts and times every request and writes the request log.
func (s *Server) instrument(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		endpoint := c.Path() // the route: echo routes before middleware runs
		if endpoint == "" {
			endpoint = "other"
		}
		ctx, span := s.startRequestSpan(c, endpoint)
		defer span.End()
		// The reads are counted for the request log only: counting wraps
		// every series and every sample step the engine takes.
		var reads *readStats
		if s.opts.Proxy.EnableRequestLogging {
			ctx, reads = withReadStats(ctx)
		}
		groups := &requestGroups{}
		ctx = engine.WithObserver(ctx, groups)
		c.SetRequest(c.Request().WithContext(ctx))
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		code := c.Response().Status
		took := time.Since(start)
		s.metrics.requests.WithLabelValues(endpoint, methodLabel(c.Request().Method), strconv.Itoa(code)).Inc()
		observeWithTrace(ctx, s.metrics.duration.WithLabelValues(endpoint), took.Seconds())
		r := c.Request()
		p := tenancy.FromContext(r.Context())
		endRequestSpan(span, p, code)
		if p != nil {
			// Only namespaces that hold a policy get here, so the label's
			// values are bounded by the configuration, not by callers.
			s.metrics.tenantRequests.WithLabelValues(tenantLabel(p), strconv.Itoa(code)).Inc()
		}
		if s.opts.Proxy.EnableRequestLogging {
			// Never headers or bodies: they carry credentials.
			attrs := []any{
				"method", r.Method, "path", r.URL.Path, "status", code,
				"duration", took.Seconds(), "remote_ip", c.RealIP(),
				"bytes", c.Response().Size,
			}
			if p != nil {
				tenant := tenantLabel(p)
				if len(p.Namespaces) > 1 {
					// A log line may name the namespaces a label may not.
					tenant = clipString(p.Namespace, 300)
				}
				attrs = append(attrs, "tenant", tenant)
			}
			if sub, _ := c.Get(subjectKey).(string); sub != "" {
				attrs = append(attrs, "subject", sub)
			}
			if msg, _ := c.Get(authErrorKey).(string); msg != "" {
				attrs = append(attrs, "auth_error", msg)
			}
			if reason, _ := c.Get(limitKey).(string); reason != "" {
				attrs = append(attrs, "limit", reason)
			}
			if q := r.Form.Get("query"); q != "" {
				attrs = append(attrs, "query", q)
			}
			if m := r.Form["match[]"]; len(m) > 0 {
				attrs = append(attrs, "match", m)
			}
			if strings.HasPrefix(endpoint, "/api/v1/") {
				attrs = append(attrs, "series", reads.series.Load(), "samples", reads.samples.Load())
				targets, called := groups.snapshot()
				attrs = append(attrs, "target", targets, "groups", called)
			}
			s.opts.Logger.InfoContext(ctx, "request", attrs...)
		}
		return nil
	}
}

// methodLabel buckets the request method: clients may send any string as
// a method, and each would otherwise become a series of its own.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost:
		return m
	}
	return "other"
}

func tenantLabel(p *tenancy.Policy) string {
	if p.Namespace == "" && p.Admin {
		return "(admin)"
	}
	if len(p.Namespaces) > 1 {
		// Every combination of namespaces would be a series of its own.
		return "(several)"
	}
	return p.Namespace
}

func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(r)
				}
				s.opts.Logger.Error("panic serving request", "path", c.Request().URL.Path, "panic", fmt.Sprint(r))
				err = apiError(http.StatusInternalServerError, errorInternal, "internal error")
			}
		}()
		return next(c)
	}
}

func (s *Server) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.opts.Proxy.MaxBodyBytes)
		// Parse once here, bounded, so a too-large body is a clear 413 and
		// later middleware can read parameters.
		if err := r.ParseForm(); err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				return apiError(http.StatusRequestEntityTooLarge, errorBadData, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
			}
			return apiError(http.StatusBadRequest, errorBadData, "invalid form: "+err.Error())
		}
		return next(c)
	}
}

// partialResponse honours a per-request partial_response=true|false.
func (s *Server) partialResponse(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		v := c.Request().Form.Get("partial_response")
		if v == "" {
			return next(c)
		}
		allow, err := strconv.ParseBool(v)
		if err != nil {
			return apiError(http.StatusBadRequest, errorBadData, fmt.Sprintf("invalid parameter \"partial_response\": %q is not a boolean", v))
		}
		r := c.Request()
		c.SetRequest(r.WithContext(engine.WithPartialResponse(r.Context(), allow)))
		return next(c)
	}
}

// PrometheusCompatVersion is the Prometheus version whose API and PromQL the
// proxy speaks (that of the embedded engine), reported by buildinfo so
// clients such as Grafana enable the right features.
func PrometheusCompatVersion() string { return promVersion }

func writeJSON(c echo.Context, code int, v any) error {
	c.Response().Header().Set(echo.HeaderContentType, "application/json")
	c.Response().WriteHeader(code)
	return json.NewEncoder(c.Response()).Encode(v)
}
