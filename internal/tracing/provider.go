package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	config_util "github.com/prometheus/common/config"
	promconfig "github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	tracesdk "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc/credentials"
)

// ServiceName is the service.name of the proxy's spans. Prometheus' own
// tracing manager names every process "prometheus", which would file the
// proxy's spans under its backends' name in a trace viewer; so the provider
// is built here, from the same keys.
const ServiceName = "prometheus-multi-tenant-proxy"

// newProvider builds an OTLP exporter and a batching tracer provider for a
// checked configuration. Traces started here keep SamplingFraction of
// them; a request that arrives sampled is always traced (parent-based).
func newProvider(ctx context.Context, cfg promconfig.TracingConfig) (*tracesdk.TracerProvider, error) {
	client, err := exportClient(cfg)
	if err != nil {
		return nil, err
	}
	exporter, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName(ServiceName), semconv.ServiceVersion(moduleVersion())),
		resource.WithProcessRuntimeDescription(),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, err
	}
	return tracesdk.NewTracerProvider(
		tracesdk.WithBatcher(exporter),
		tracesdk.WithSampler(tracesdk.ParentBased(tracesdk.TraceIDRatioBased(cfg.SamplingFraction))),
		tracesdk.WithResource(res),
	), nil
}

// exportClient is OTLP over gRPC or HTTP as the section says.
func exportClient(cfg promconfig.TracingConfig) (otlptrace.Client, error) {
	timeout := time.Duration(cfg.Timeout)
	switch cfg.ClientType {
	case promconfig.TracingClientGRPC:
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithHeaders(cfg.Headers)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else {
			tlsConfig, err := config_util.NewTLSConfig(&cfg.TLSConfig)
			if err != nil {
				return nil, err
			}
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsConfig)))
		}
		if cfg.Compression != "" {
			opts = append(opts, otlptracegrpc.WithCompressor(cfg.Compression))
		}
		if timeout > 0 {
			opts = append(opts, otlptracegrpc.WithTimeout(timeout))
		}
		return otlptracegrpc.NewClient(opts...), nil
	case promconfig.TracingClientHTTP:
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.Endpoint), otlptracehttp.WithHeaders(cfg.Headers)}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else {
			tlsConfig, err := config_util.NewTLSConfig(&cfg.TLSConfig)
			if err != nil {
				return nil, err
			}
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsConfig))
		}
		if cfg.Compression == promconfig.GzipCompression {
			opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}
		if timeout > 0 {
			opts = append(opts, otlptracehttp.WithTimeout(timeout))
		}
		return otlptracehttp.NewClient(opts...), nil
	}
	return nil, fmt.Errorf("client_type %q", cfg.ClientType)
}

// moduleVersion is the proxy's version as the Go toolchain stamped it.
func moduleVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "unknown"
}

// logExportErrors sends the SDK's errors (an unreachable receiver) to the
// log instead of the standard logger.
func logExportErrors(logger *slog.Logger) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Error("exporting spans", "err", err)
	}))
}
