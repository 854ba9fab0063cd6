package httpapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/grafana/regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/route"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
)

// newPrometheusAPI builds Prometheus' own v1 API over the proxy's engine and
// Queryable and returns its router. NewAPI's long positional parameter list
// changes between Prometheus versions, so it is called here and nowhere else.
// Only the routes Server mounts explicitly are reachable; everything this API
// offers that the proxy does not enforce (admin, remote read/write, targets,
// status) stays unrouted; rules and alerts are the proxy's own handlers.
func newPrometheusAPI(qe promql.QueryEngine, q storage.SampleAndChunkQueryable, eq storage.ExemplarQueryable, corsOrigin *regexp.Regexp,
	lookback time.Duration, timeout time.Duration, build *v1.PrometheusVersion, reg *prometheus.Registry, logger *slog.Logger,
) *route.Router {
	api := v1.NewAPI(
		qe,
		q,
		nil,           // appendable: the proxy accepts no writes
		eq,            // exemplars: fanned out with the tenant's rules (engine.Fanout)
		nil, nil, nil, // scrape pools, targets, alertmanagers: not routed
		func() config.Config { return config.Config{} },
		map[string]string{},
		v1.GlobalURLOptions{},
		func(f http.HandlerFunc) http.HandlerFunc { return f },
		nil, "", // TSDB admin stats and dir: not routed
		false,    // admin APIs
		false, 0, // search API
		logger,
		nil,         // rules: not routed
		0, 1, 1<<20, // remote read limits (endpoint not routed, but must be sane)
		false, // agent mode
		corsOrigin,
		nil, // runtime info: not routed
		build,
		nil, nil, // notifications
		reg, reg,
		nil,        // stats renderer: Prometheus' default
		false, nil, // remote write
		false, false, false, // OTLP
		lookback,
		false,                          // type and unit labels
		false,                          // append metadata
		statusFor(v1.ErrorUnavailable), // unavailable is 503, not the library's default 500
		nil,                            // feature registry
		v1.OpenAPIOptions{},
		engine.Parser(),
		false, // query cost
		timeout,
	)
	r := route.New()
	api.Register(r.WithPrefix("/api/v1"))
	return r
}

// statusFor answers errors of type unavailable (a backend group down with
// partial answers refused, tsdb.ErrNotReady) with 503, as the proxy
// documents and as clients retry; v1 defaults to 500 for them. The error
// number type is unexported, hence the type parameter.
func statusFor[N comparable](unavailable N) func(N, error) (int, bool) {
	return func(n N, _ error) (int, bool) {
		if n == unavailable {
			return http.StatusServiceUnavailable, true
		}
		return 0, false
	}
}
