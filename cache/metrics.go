package cache

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	skipped  *prometheus.CounterVec
}

// newMetrics registers the cache's metrics on reg (nil: not registered).
func newMetrics(reg prometheus.Registerer, storeName string, store Store) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_cache_requests_total",
			Help: "Cache lookups (one per instant query or range extent) by store and result: hit, miss, or bypass when the store could not be asked.",
		}, []string{"store", "result"}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_cache_errors_total",
			Help: "Failed store calls (get, set) and unreadable entries (decode), by store.",
		}, []string{"store", "op"}),
		skipped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_cache_skipped_total",
			Help: "Queries answered without the cache, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"hit", "miss", "bypass"} {
		m.requests.WithLabelValues(storeName, r)
	}
	for _, op := range []string{"get", "set", "decode"} {
		m.errors.WithLabelValues(storeName, op)
	}
	if ms, ok := store.(*MemoryStore); ok {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "prometheus_proxy_cache_bytes",
			Help:        "Bytes held by the in-memory store, as counted against cache.memory.max_bytes.",
			ConstLabels: prometheus.Labels{"store": storeName},
		}, func() float64 { return float64(ms.Bytes()) })
	}
	return m
}
