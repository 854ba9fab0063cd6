// Package tracing configures OpenTelemetry tracing the way Prometheus does
// (same keys, checked by Prometheus' own parser; OTLP over gRPC or HTTP) and
// gives the rest of the proxy one tracer, the W3C propagator and a log
// handler that writes a traced request's IDs into its log lines.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	tracesdk "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config is the top-level tracing: section. Its keys are Prometheus' own
// (config.TracingConfig), so one block works for both; tracing is off
// while Endpoint is empty.
type Config struct {
	// Endpoint is host:port of an OTLP receiver; "" turns tracing off.
	Endpoint string `yaml:"endpoint"`
	// ClientType is grpc or http (OTLP over gRPC or over HTTP).
	ClientType string `yaml:"client_type"`
	// Insecure sends without TLS.
	Insecure bool `yaml:"insecure"`
	// TLSConfig is used unless Insecure.
	TLSConfig config_util.TLSConfig `yaml:"tls_config"`
	// Headers are sent with every export (not Authorization).
	Headers map[string]string `yaml:"headers"`
	// SamplingFraction of the traces started here are kept; a request
	// that arrives with a sampled traceparent is always traced.
	SamplingFraction float64 `yaml:"sampling_fraction"`
	// Compression is "" or gzip.
	Compression string `yaml:"compression"`
	// Timeout bounds one export (0: the exporter's default, 10s).
	Timeout model.Duration `yaml:"timeout"`
}

// DefaultConfig is tracing off, with Prometheus' defaults for the rest.
func DefaultConfig() Config {
	return Config{ClientType: string(promconfig.TracingClientGRPC)}
}

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Enabled reports whether spans are exported.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// Validate checks the section as Prometheus checks its own, by handing it
// to Prometheus' parser, so the two accept exactly the same blocks. It
// changes nothing; errors name keys within the section.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if c.SamplingFraction < 0 || c.SamplingFraction > 1 {
		return fmt.Errorf("sampling_fraction: %v is not between 0 and 1", c.SamplingFraction)
	}
	_, err := c.prometheus()
	return err
}

// prometheus converts the section into Prometheus' type and has Prometheus'
// own UnmarshalYAML check it (headers, compression, endpoint), handing it
// the converted value instead of decoding YAML: a round trip through YAML
// would write the TLS key as "<secret>".
func (c Config) prometheus() (promconfig.TracingConfig, error) {
	ct := promconfig.TracingClientType(c.ClientType)
	if ct != promconfig.TracingClientGRPC && ct != promconfig.TracingClientHTTP {
		return promconfig.TracingConfig{}, fmt.Errorf("client_type must be %s or %s, not %q", promconfig.TracingClientGRPC, promconfig.TracingClientHTTP, c.ClientType)
	}
	in := promconfig.TracingConfig{
		ClientType:       ct,
		Endpoint:         c.Endpoint,
		SamplingFraction: c.SamplingFraction,
		Insecure:         c.Insecure,
		TLSConfig:        c.TLSConfig,
		Headers:          c.Headers,
		Compression:      c.Compression,
		Timeout:          c.Timeout,
	}
	var out promconfig.TracingConfig
	err := out.UnmarshalYAML(func(v any) error {
		dst := reflect.ValueOf(v).Elem()
		dst.Set(reflect.ValueOf(in).Convert(dst.Type()))
		return nil
	})
	return out, err
}

// Provider is the installed tracer provider; Stop flushes it.
type Provider struct {
	tp *tracesdk.TracerProvider
}

// Start installs the global tracer provider described by cfg (nothing when
// tracing is off) and the W3C trace-context propagator.
func Start(cfg Config, logger *slog.Logger) (*Provider, error) {
	otel.SetTextMapPropagator(Propagator)
	if !cfg.Enabled() {
		return &Provider{}, nil
	}
	pc, err := cfg.prometheus()
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	tp, err := newProvider(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	logExportErrors(logger)
	otel.SetTracerProvider(tp)
	return &Provider{tp: tp}, nil
}

// Stop exports what is buffered and turns tracing off.
func (p *Provider) Stop() {
	if p == nil || p.tp == nil {
		return
	}
	// A later proxy in the same process (tests) must not hand spans to a
	// provider that was shut down.
	otel.SetTracerProvider(noop.NewTracerProvider())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.tp.Shutdown(ctx) // what could not be sent was logged by the exporter
}

// Propagator reads and writes W3C traceparent/tracestate headers.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

const scope = "github.com/ethos-io/prometheus-multi-tenant-proxy"

// Tracer is the proxy's tracer. It is looked up on each call, so a
// provider installed later is used.
func Tracer() trace.Tracer { return otel.GetTracerProvider().Tracer(scope) }

// StartSpan starts a span named name under the span in ctx, if any. When
// no span is there and none is being traced it costs next to nothing.
func StartSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// Spans are only started under a request's span: a span of its
		// own would start a trace no request belongs to.
		return ctx, trace.SpanFromContext(ctx)
	}
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(scope).Start(ctx, name, trace.WithAttributes(attrs...))
}

// Fail marks span as failed with err (nil: nothing).
func Fail(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// IDs returns the trace and span IDs of the span in ctx, and whether it
// is sampled (its trace is exported).
func IDs(ctx context.Context) (traceID, spanID string, sampled bool) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", "", false
	}
	return sc.TraceID().String(), sc.SpanID().String(), sc.IsSampled()
}
