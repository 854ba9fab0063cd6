package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cache"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/httpapi"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// app is the assembled proxy: discovery, engine, tenancy, cache and server.
type app struct {
	cfg      Config
	logger   *slog.Logger
	registry *prometheus.Registry
	backends *discovery.Manager
	fanout   *engine.Fanout
	tenants  *tenancy.Registry
	cache    *cache.Engine
	server   *httpapi.Server
	tracing  *tracing.Provider

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newApp(ctx context.Context, cfg Config, logger *slog.Logger) (*app, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Lines logged for a request carry its trace ID.
	logger = slog.New(tracing.LogHandler(logger.Handler()))
	tp, err := tracing.Start(cfg.Tracing, logger.With("component", "tracing"))
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, logger: logger, registry: reg, tracing: tp}
	defer func() {
		if a.server == nil {
			tp.Stop() // newApp failed
		}
	}()

	var probe discovery.Probe
	backends, err := discovery.NewManager(cfg.Discovery, func(ctx context.Context, g *discovery.Group, r *discovery.Replica) (labels.Labels, error) {
		return probe(ctx, g, r)
	}, logger.With("component", "discovery"))
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
	probe = fanout.Probe
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
	a.cache = results
	ctx, a.cancel = context.WithCancel(ctx)
	for _, k := range cfg.Discovery.Kubernetes {
		kd, err := discovery.NewKubernetes(k, time.Duration(cfg.Discovery.RefreshInterval), logger.With("component", "discovery-kubernetes", "cluster", k.Name))
		if err != nil {
			a.cancel()
			return nil, err
		}
		// /ready waits for the informers' first complete list of every cluster.
		name := k.ProviderName()
		backends.ExpectProvider(name)
		a.wg.Go(func() { backends.RunProvider(ctx, name, kd) })
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
			a.cancel()
			return nil, fmt.Errorf("auth.kubernetes: %w", err)
		}
	}
	if opts.Identify, err = authn.New(cfg.Auth, authOpts); err != nil {
		a.cancel()
		return nil, err
	}
	if headerAdmin(cfg) {
		a.wg.Go(func() { warnEvery(ctx, headerWarnInterval, logger, headerAdminWarning) })
	}
	if cfg.Tenants.Enabled() {
		tenants, err := tenancy.NewRegistry(cfg.Tenants, logger.With("component", "tenancy"))
		if err != nil {
			a.cancel()
			return nil, err
		}
		a.tenants = tenants
		opts.Policies = tenants
		opts.Tenants = tenantsDebug{tenants}
		ready := &tenantsReady{tenants: tenants}
		opts.Ready = ready
		if len(cfg.Tenants.Files) > 0 {
			files := tenancy.NewFileSource(cfg.Tenants.Files, time.Duration(cfg.Tenants.FileRefreshInterval), logger.With("component", "tenancy-files"))
			a.wg.Go(func() { tenants.Run(ctx, "files", files) })
		}
		if cfg.Tenants.Kubernetes {
			// MetricAccess objects live in the first (or only) cluster listed.
			var kubeconfig string
			if len(cfg.Discovery.Kubernetes) > 0 {
				kubeconfig = cfg.Discovery.Kubernetes[0].Kubeconfig
			}
			rc, err := discovery.RESTConfig(kubeconfig)
			if err != nil {
				a.cancel()
				return nil, fmt.Errorf("tenants.kubernetes: %w", err)
			}
			ks, err := tenancy.NewKubernetesSource(cfg.Tenants, rc, logger.With("component", "tenancy-kubernetes"))
			if err != nil {
				a.cancel()
				return nil, err
			}
			ready.kube = ks
			a.wg.Go(func() { tenants.Run(ctx, "kubernetes", ks) })
		}
	}
	srv, err := httpapi.New(opts)
	if err != nil {
		a.cancel()
		return nil, err
	}
	a.server = srv
	a.wg.Go(func() { backends.RunHealthChecks(ctx) })
	return a, nil
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

// tenantsDebug shows the registry on /debug/tenants.
type tenantsDebug struct{ *tenancy.Registry }

func (d tenantsDebug) Debug() any { return d.Registry.Debug() }

// Serve answers HTTP on ln, and the management endpoints on mgmt (may be
// nil), until ctx ends.
func (a *app) Serve(ctx context.Context, ln, mgmt net.Listener) error {
	if err := checkListener(a.cfg, ln.Addr()); err != nil {
		return err
	}
	return a.server.Serve(ctx, ln, mgmt)
}

// Close stops the background work and waits for it.
func (a *app) Close() {
	a.cancel()
	a.wg.Wait()
	a.fanout.Close()
	if err := a.cache.Close(); err != nil {
		a.logger.Warn("closing the results cache", "err", err)
	}
	a.tracing.Stop()
}

func promEngineVersion() string { return httpapi.PrometheusCompatVersion() }
