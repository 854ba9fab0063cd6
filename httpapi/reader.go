package httpapi

import (
	"context"

	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
)

// The server reads everything through these interfaces, declared here by
// their one consumer as Prometheus' web/api/v1 declares its retrievers: the
// fan-out over every backend group implements them all (engine.Fanout), and
// the server's tests answer them from an in-memory storage. Each carries
// the tenant's policy in ctx (tenancy.NewContext).

// MetadataRetriever answers /api/v1/metadata: metric families of the series
// in [mint, maxt] (milliseconds), metric and the limits as in Prometheus.
type MetadataRetriever interface {
	Metadata(ctx context.Context, mint, maxt int64, metric string, limit, limitPerMetric int) (map[string][]engine.Metadata, annotations.Annotations, error)
}

// RulesRetriever answers /api/v1/rules. An error wrapping
// engine.ErrBadNextToken is the client's (400); an engine.UnavailableError
// is 503; any other is 422.
type RulesRetriever interface {
	Rules(ctx context.Context, flt engine.RulesFilter) (*v1.RuleDiscovery, annotations.Annotations, error)
}

// AlertsRetriever answers /api/v1/alerts.
type AlertsRetriever interface {
	Alerts(ctx context.Context) (*v1.AlertDiscovery, annotations.Annotations, error)
}

// Reader is everything the server reads: series, samples and label values
// for the PromQL engine and the listing endpoints, exemplars, metadata,
// rules and alerts.
type Reader interface {
	storage.SampleAndChunkQueryable
	storage.ExemplarQueryable
	MetadataRetriever
	RulesRetriever
	AlertsRetriever
}
