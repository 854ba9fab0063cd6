// Package app assembles the proxy from its packages: discovery, engine,
// tenancy, cache, authentication and the HTTP server. The command parses
// flags and signals and hands the configuration to New.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cache"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/httpapi"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// App is the assembled proxy. New opens what it holds (Close releases
// it); Serve runs the server and every background loop as one group.
type App struct {
	cfg      Config
	logger   *slog.Logger
	registry *prometheus.Registry
	backends *discovery.Manager
	fanout   *engine.Fanout
	tenants  *tenancy.Registry
	cache    *cache.Engine
	server   *httpapi.Server
	tracing  *tracing.Provider

	// closers release what New opened, in reverse order.
	closers []func()
	// loops run beside the server until Serve's context ends.
	loops []func(context.Context)
}

// New assembles the proxy from cfg (validated). version is what
// /api/v1/status/buildinfo reports. On error, everything opened so far is
// closed again.
func New(cfg Config, logger *slog.Logger, version string) (_ *App, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Lines logged for a request carry its trace ID.
	logger = slog.New(tracing.LogHandler(logger.Handler()))
	a := &App{cfg: cfg, logger: logger, registry: reg}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.tracing, err = tracing.Start(cfg.Tracing, logger.With("component", "tracing")); err != nil {
		return nil, err
	}
	a.onClose(a.tracing.Stop)

	backends, err := discovery.NewManager(cfg.Discovery, logger.With("component", "discovery"))
	if err != nil {
		return nil, err
	}
	a.backends = backends
	fanout, err := engine.NewFanout(backends, engine.FanoutOptions{
		LoadBalancing:   cfg.Discovery.LoadBalancing,
		PartialResponse: cfg.Discovery.PartialResponse,
		Remote:          cfg.Backend,
		Logger:          logger.With("component", "engine"),
		Registerer:      reg,
	})
	if err != nil {
		return nil, err
	}
	a.onClose(fanout.Close)
	a.fanout = fanout
	backends.OnUpdate(fanout.Retain)

	ng := engine.NewPromQL(cfg.Engine, reg, logger.With("component", "promql"))
	// The planner also answers explain=true when push-down is off (saying so).
	pushDown, err := engine.NewPushDown(ng, fanout, cfg.Engine, reg, logger.With("component", "push-down"))
	if err != nil {
		return nil, err
	}
	var qe cache.QueryEngine = ng
	if cfg.Engine.PushDown.Enabled {
		qe = pushDown
	}
	if qe, err = engine.NewReEvaluating(qe, reg, logger.With("component", "promql")); err != nil {
		return nil, err
	}
	scope := cacheScope{backends: backends, reassociate: cfg.Engine.PushDown.Enabled && cfg.Engine.PushDown.FloatSums == plan.FloatSumsReassociate}
	results, err := cache.New(cfg.Cache, qe, scope, reg, logger.With("component", "cache"))
	if err != nil {
		return nil, err
	}
	a.onClose(func() {
		if err := results.Close(); err != nil {
			logger.Warn("closing the results cache", "err", err)
		}
	})
	a.cache = results
	for _, k := range cfg.Discovery.Kubernetes {
		kd, err := discovery.NewKubernetes(k, time.Duration(cfg.Discovery.RefreshInterval), logger.With("component", "discovery-kubernetes", "cluster", k.Name))
		if err != nil {
			return nil, err
		}
		// /ready waits for the informers' first complete list of every cluster.
		name := k.ProviderName()
		backends.ExpectProvider(name)
		a.loop(func(ctx context.Context) { backends.RunProvider(ctx, name, kd) })
	}
	opts := httpapi.Options{
		Proxy:  cfg.Proxy,
		Server: cfg.Server,
		Limits: cfg.Limits,
		Engine: cfg.Engine,
		// One bound for the names a request may give and the namespaces
		// "every namespace I may read" may review.
		MaxNamespaces: cfg.Auth.MaxNamespaces,
		QueryEngine:   results,
		Fanout:        fanout,
		Explain:       pushDown,
		Backends:      backends,
		Registry:      reg,
		Logger:        logger.With("component", "http"),
		Version:       version,
	}
	for _, w := range trustWarnings(cfg) {
		logger.Warn(w)
	}
	authOpts := authn.Options{Logger: logger}
	if cfg.Auth.Type == authn.TypeKubernetes {
		kubeconfig := cfg.Auth.Kubernetes.Kubeconfig
		if k := cfg.Discovery.Kubernetes; kubeconfig == "" && len(k) > 0 {
			kubeconfig = k[0].Kubeconfig // the first (or only) cluster listed
		}
		if authOpts.KubeConfig, err = discovery.RESTConfig(kubeconfig); err != nil {
			return nil, fmt.Errorf("auth.kubernetes: %w", err)
		}
	}
	if opts.Identify, err = authn.New(cfg.Auth, authOpts); err != nil {
		return nil, err
	}
	if headerAdmin(cfg) {
		a.loop(func(ctx context.Context) { warnEvery(ctx, headerWarnInterval, logger, headerAdminWarning) })
	}
	if cfg.Tenants.Enabled() {
		if err := a.tenancy(cfg, &opts); err != nil {
			return nil, err
		}
	}
	if a.server, err = httpapi.New(opts); err != nil {
		return nil, err
	}
	// Health checks start where what they call exists: the fan-out probes
	// replicas with its clients for the manager it reads groups from.
	a.loop(func(ctx context.Context) { backends.RunHealthChecks(ctx, fanout.Probe) })
	return a, nil
}

// tenancy builds the tenant registry and its sources, and what /ready and
// /debug/tenants show of them.
func (a *App) tenancy(cfg Config, opts *httpapi.Options) error {
	tenants, err := tenancy.NewRegistry(cfg.Tenants, a.logger.With("component", "tenancy"))
	if err != nil {
		return err
	}
	a.tenants = tenants
	opts.Policies = tenants
	opts.Tenants = tenantsDebug{tenants}
	ready := &tenantsReady{tenants: tenants}
	opts.Ready = ready
	if len(cfg.Tenants.Files) > 0 {
		files := tenancy.NewFileSource(cfg.Tenants.Files, time.Duration(cfg.Tenants.FileRefreshInterval), a.logger.With("component", "tenancy-files"))
		a.loop(func(ctx context.Context) { tenants.Run(ctx, "files", files) })
	}
	if cfg.Tenants.Kubernetes {
		// MetricAccess objects live in the first (or only) cluster listed.
		var kubeconfig string
		if len(cfg.Discovery.Kubernetes) > 0 {
			kubeconfig = cfg.Discovery.Kubernetes[0].Kubeconfig
		}
		rc, err := discovery.RESTConfig(kubeconfig)
		if err != nil {
			return fmt.Errorf("tenants.kubernetes: %w", err)
		}
		ks, err := tenancy.NewKubernetesSource(cfg.Tenants, rc, a.logger.With("component", "tenancy-kubernetes"))
		if err != nil {
			return err
		}
		ready.kube = ks
		a.loop(func(ctx context.Context) { tenants.Run(ctx, "kubernetes", ks) })
	}
	return nil
}

// cacheScope is what cached answers depend on besides the query and the
// tenant: the backend groups, how sums are combined, and per request
// whether a partial answer is acceptable.
type cacheScope struct {
	backends *discovery.Manager
	// reassociate: re-associated sums differ from exact ones in the last
	// bits, so such answers must not be served to a proxy that promises
	// exact ones (or the reverse) through a shared cache.
	reassociate bool
}

func (s cacheScope) KeyScope() string {
	if s.reassociate {
		return s.backends.Topology() + "\x00float_sums=reassociate"
	}
	return s.backends.Topology()
}

func (cacheScope) FlightScope(ctx context.Context) string { return engine.PartialResponseScope(ctx) }

// tenantsReady holds /ready until the tenant sources have synced and the
// Kubernetes source (if any) reaches its API server.
type tenantsReady struct {
	tenants *tenancy.Registry
	kube    *tenancy.KubernetesSource // nil without tenants.kubernetes
}

func (r *tenantsReady) Ready() error {
	if !r.tenants.Ready() {
		return errors.New("tenant sources have not synced yet")
	}
	if r.kube != nil {
		return r.kube.Ready()
	}
	return nil
}

func (a *App) onClose(f func()) { a.closers = append(a.closers, f) }

func (a *App) loop(f func(context.Context)) { a.loops = append(a.loops, f) }

// tenantsDebug shows the registry on /debug/tenants.
type tenantsDebug struct{ *tenancy.Registry }

func (d tenantsDebug) Debug() any { return d.Registry.Debug() }

// Serve answers HTTP on ln, and the management endpoints on mgmt (may be
// nil), and runs discovery, tenant sources and health checks beside them,
// until ctx ends or the server fails; it returns when all of them have
// stopped. Serve runs once per App.
func (a *App) Serve(ctx context.Context, ln, mgmt net.Listener) error {
	if err := checkListener(a.cfg, ln.Addr()); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g run.Group
	g.Add(func() error { return a.server.Serve(ctx, ln, mgmt) }, func(error) { cancel() })
	for _, f := range a.loops {
		g.Add(func() error {
			f(ctx)
			// A loop that ends early (a source that gave up) leaves the
			// proxy serving what it has; only the end of ctx stops it.
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	err := g.Run()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Close releases what New opened; call it after Serve has returned.
func (a *App) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// Registry is the registry of the proxy's own metrics (/metrics).
func (a *App) Registry() *prometheus.Registry { return a.registry }

// Backends is the discovered backend groups and their health.
func (a *App) Backends() *discovery.Manager { return a.backends }

// Tenants is the tenant registry; nil without a tenant source.
func (a *App) Tenants() *tenancy.Registry { return a.tenants }

// PromEngineVersion is the Prometheus release whose PromQL engine answers.
func PromEngineVersion() string { return httpapi.PrometheusCompatVersion() }
