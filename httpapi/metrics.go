package httpapi

import (
	"github.com/prometheus/client_golang/prometheus"
)

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_requests_total",
			Help: "HTTP requests served, by endpoint, method (GET, POST or other) and status code.",
		}, []string{"endpoint", "method", "code"}),
		tenantRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_tenant_requests_total",
			Help: "Requests of identified tenants (namespaces holding a policy; (admin) for admin credentials without one), by status code.",
		}, []string{"tenant", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prometheus_proxy_request_duration_seconds",
			Help:    "Duration of HTTP requests, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"endpoint"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prometheus_proxy_requests_in_flight",
			Help: "Prometheus API requests being served.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prometheus_proxy_requests_rejected_total",
			Help: "Requests refused with 503 because max_concurrent_requests were running.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_auth_failures_total",
			Help: "Requests refused by authentication or tenant choice: missing or invalid credentials (401), a namespace the caller may not act as or that has no policy (forbidden, 403), a credential or tenant given twice or a malformed or too long namespace list (ambiguous, 400), or credentials that could not be checked (unavailable, 503).",
		}, []string{"reason"}),
	}
}

// registerMetrics registers the server's own metrics and the gauges read
// from discovery and tenancy at scrape time.
func (s *Server) registerMetrics() error {
	m := s.metrics
	for _, r := range []string{"missing", "invalid", "forbidden", "ambiguous", "unavailable"} {
		m.authFailures.WithLabelValues(r)
	}
	// prometheus_proxy_tenants_active asks Policies, if it can tell.
	tenants := func() int { return 0 }
	if ta, ok := s.opts.Policies.(interface{ ActiveTenants() int }); ok {
		tenants = ta.ActiveTenants
	}
	cs := []prometheus.Collector{
		m.requests, m.tenantRequests, m.duration, m.inflight, m.rejected, m.authFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "prometheus_proxy_tenants_active",
			Help: "Namespaces holding at least one valid MetricAccess rule (admin namespaces not counted).",
		}, func() float64 { return float64(tenants()) }),
		backendsCollector{s.opts.Backends},
	}
	for _, c := range cs {
		if err := s.opts.Registry.Register(c); err != nil {
			return err
		}
	}
	return nil
}

var (
	targetsDesc = prometheus.NewDesc("prometheus_proxy_targets_discovered",
		"Backend replicas known to discovery, in all groups.", nil, nil)
	healthyTargetsDesc = prometheus.NewDesc("prometheus_proxy_targets_healthy",
		"Backend replicas currently healthy, in all groups.", nil, nil)
	groupsDesc = prometheus.NewDesc("prometheus_proxy_groups_discovered",
		"Backend groups known to discovery.", nil, nil)
	groupHealthyDesc = prometheus.NewDesc("prometheus_proxy_group_healthy_replicas",
		"Healthy replicas of each backend group; 0 means the group cannot answer.", []string{"group"}, nil)
)

// backendsCollector reads discovery's view at scrape time, so the gauges
// can never drift from what /debug/targets shows.
type backendsCollector struct{ b Backends }

func (backendsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- targetsDesc
	ch <- healthyTargetsDesc
	ch <- groupsDesc
	ch <- groupHealthyDesc
}

func (c backendsCollector) Collect(ch chan<- prometheus.Metric) {
	groups := c.b.Groups()
	replicas, healthy := 0, 0
	for _, g := range groups {
		h := 0
		for _, r := range g.Replicas {
			if r.Healthy() {
				h++
			}
		}
		replicas += len(g.Replicas)
		healthy += h
		ch <- prometheus.MustNewConstMetric(groupHealthyDesc, prometheus.GaugeValue, float64(h), g.Name)
	}
	ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue, float64(replicas))
	ch <- prometheus.MustNewConstMetric(healthyTargetsDesc, prometheus.GaugeValue, float64(healthy))
	ch <- prometheus.MustNewConstMetric(groupsDesc, prometheus.GaugeValue, float64(len(groups)))
}
