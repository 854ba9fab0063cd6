package e2eproxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// Fleet is the shared test world: one Prometheus per shard of the generated
// data (mixing the 3.x build the proxy's engine comes from and Debian's
// 2.42), and one reference Prometheus (3.x) holding the union.
type Fleet struct {
	Data      datagen.Config
	Shards    []*e2eutil.Prometheus
	Reference *e2eutil.Prometheus
}

// ShardKinds mixes Prometheus versions, as real fleets do.
var ShardKinds = []e2eutil.Kind{e2eutil.V3, e2eutil.V2, e2eutil.V3}

// OpenMetrics is shard's data (all shards' for -1) as OpenMetrics text,
// generated as it is read: the fleets' data is tens of megabytes, and
// StartPrometheus spools it to a file anyway.
func OpenMetrics(t testing.TB, cfg datagen.Config, shard int, keep func(labels.Labels) bool) io.Reader {
	t.Helper()
	return datagen.Reader(cfg, shard, keep)
}

func StartFleet(t testing.TB) *Fleet {
	t.Helper()
	f := &Fleet{Data: datagen.DefaultConfig()}
	f.Shards = make([]*e2eutil.Prometheus, f.Data.Shards())
	for i := range f.Shards {
		f.Shards[i] = e2eutil.StartPrometheus(t, ShardKinds[i%len(ShardKinds)], OpenMetrics(t, f.Data, i, nil), e2eutil.WithName(f.Data.Clusters[i]))
	}
	f.Reference = e2eutil.StartPrometheus(t, e2eutil.V3, OpenMetrics(t, f.Data, -1, nil), e2eutil.WithName("reference"))
	return f
}

// StaticConfig points the proxy at the fleet, one group per shard.
func (f *Fleet) StaticConfig() []discovery.StaticGroup {
	var gs []discovery.StaticGroup
	for i, p := range f.Shards {
		gs = append(gs, discovery.StaticGroup{Name: f.Data.Clusters[i], URLs: []string{p.URL}})
	}
	return gs
}

// Proxy is an in-process proxy listening on 127.0.0.1.
type Proxy struct {
	URL string
	// ManagementURL is the management listener's, when configured.
	ManagementURL string
	App           *app.App
}

type SyncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

// Bytes is a copy of what was written so far.
func (b *SyncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.Buffer.Bytes())
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func StartProxy(t testing.TB, cfg app.Config) *Proxy {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("PROXY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	p, _ := StartProxyLogging(t, cfg, level)
	return p
}

// StartProxyLogging starts the proxy in-process on 127.0.0.1 with its log
// kept at level, and returns the log so tests can read what it writes.
func StartProxyLogging(t testing.TB, cfg app.Config, level slog.Level) (*Proxy, *SyncBuffer) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &SyncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(cfg, logger, "test")
	if err != nil {
		cancel()
		t.Fatalf("proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mgmt net.Listener
	mgmtURL := ""
	if cfg.Server.ManagementAddress != "" {
		// Whatever the configured address, tests listen on loopback.
		if mgmt, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		mgmtURL = "http://" + mgmt.Addr().String()
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln, mgmt) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy serve: %v", err)
		}
		a.Close()
		if t.Failed() {
			t.Logf("proxy log:\n%s", Clip(logs.Bytes()))
		}
	})
	if cfg.Tenants.Enabled() && !cfg.Tenants.Kubernetes {
		// Serve reads the tenant files as it starts; tests ask as a tenant
		// at once. (Kubernetes sources are awaited by their tests, some of
		// which look at the proxy before they sync.)
		if !e2eutil.WaitFor(30*time.Second, a.Tenants().Ready) {
			t.Fatalf("proxy: tenant files %v not read within 30s", cfg.Tenants.Files)
		}
	}
	scheme := "http"
	if cfg.Server.TLS.CertFile != "" {
		scheme = "https"
	}
	return &Proxy{URL: scheme + "://" + ln.Addr().String(), ManagementURL: mgmtURL, App: a}, logs
}

func BaseConfig(f *Fleet) app.Config {
	cfg := app.DefaultConfig()
	cfg.Discovery.Static = f.StaticConfig()
	cfg.Proxy.EnableRequestLogging = false
	return cfg
}
