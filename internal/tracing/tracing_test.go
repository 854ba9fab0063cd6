package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/otel/trace"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
)

func sampledContext(t *testing.T) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
}

// TestLogHandler: a line logged with a traced context carries its trace and
// span IDs, through loggers derived with With; others carry none.
func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "http")
	logger.InfoContext(sampledContext(t), "request", "status", 200)
	logger.InfoContext(context.Background(), "untraced")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	var traced, untraced map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &traced); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &untraced); err != nil {
		t.Fatal(err)
	}
	if traced["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || traced["span_id"] != "00f067aa0ba902b7" || traced["component"] != "http" {
		t.Errorf("traced line: %s", lines[0])
	}
	if _, ok := untraced["trace_id"]; ok {
		t.Errorf("untraced line has a trace_id: %s", lines[1])
	}
}

// TestConfig: the section becomes Prometheus' own, checked by Prometheus'
// rules; the TLS key survives the conversion.
func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil || DefaultConfig().Enabled() {
		t.Fatalf("default: enabled %v, %v; want off and valid", DefaultConfig().Enabled(), err)
	}
	c := DefaultConfig()
	c.Endpoint = "collector:4317"
	c.SamplingFraction = 0.25
	c.Timeout = model.Duration(5 * time.Second)
	c.TLSConfig = config_util.TLSConfig{CAFile: "/ca.pem", Key: "PRIVATE"}
	pc, err := c.prometheus()
	if err != nil {
		t.Fatal(err)
	}
	if pc.ClientType != promconfig.TracingClientGRPC || pc.Endpoint != "collector:4317" || pc.SamplingFraction != 0.25 ||
		pc.Timeout != c.Timeout || pc.TLSConfig.Key != "PRIVATE" || pc.TLSConfig.CAFile != "/ca.pem" {
		t.Errorf("converted: %+v", pc)
	}
	for name, mutate := range map[string]func(*Config){
		"client_type":       func(c *Config) { c.ClientType = "udp" },
		"compression":       func(c *Config) { c.Compression = "zstd" },
		"authorization":     func(c *Config) { c.Headers = map[string]string{"Authorization": "x"} },
		"sampling_fraction": func(c *Config) { c.SamplingFraction = -1 },
	} {
		bad := c
		mutate(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming it", name, err)
		}
	}
}

// TestStartSpanNeedsARequest: work outside any request (health probes,
// discovery) starts no trace of its own.
func TestStartSpanNeedsARequest(t *testing.T) {
	ctx, span := StartSpan(context.Background(), "group read")
	if span.SpanContext().IsValid() || trace.SpanContextFromContext(ctx).IsValid() {
		t.Errorf("a span was started without a request: %v", span.SpanContext())
	}
	span.End()
}

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets, and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "endpoint: collector:4317\nheaders: {X-Org: a}\n", Want: func(c *Config) {
			c.Endpoint, c.Headers = "collector:4317", map[string]string{"X-Org": "a"}
		}},
	})
}
