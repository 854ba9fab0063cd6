package app

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cache"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// lifecycleConfig opens what New can open before a late failure: a
// tracing exporter, a Redis client for the results cache, a backend.
func lifecycleConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Discovery.Static = []discovery.StaticGroup{{Name: "a", URLs: []string{e2eutil.ClosedPort(t)}}}
	cfg.Tracing.Endpoint = strings.TrimPrefix(e2eutil.ClosedPort(t), "http://")
	cfg.Tracing.Insecure = true
	cfg.Proxy.EnableCaching = true
	cfg.Cache.Backend = cache.BackendRedis
	cfg.Cache.Redis.Addresses = []string{strings.TrimPrefix(e2eutil.ClosedPort(t), "http://")}
	cfg.Cache.Redis.Shared = false // this proxy alone: no signing key needed
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestNewFailsLateClosesEverything: a configuration found wrong only after
// the tracing exporter, the fan-out and the Redis cache were opened (a
// kubeconfig that does not exist) fails New and leaves nothing running.
func TestNewFailsLateClosesEverything(t *testing.T) {
	cfg := lifecycleConfig(t)
	cfg.Auth.Type = authn.TypeKubernetes
	cfg.Auth.Kubernetes.Kubeconfig = filepath.Join(t.TempDir(), "no-such-kubeconfig")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	leaks := e2eutil.LeakCheck(t, 0)
	a, err := New(cfg, slog.New(slog.DiscardHandler), "test")
	if err == nil {
		a.Close()
		t.Fatal("New accepted a kubeconfig that does not exist")
	}
	if !strings.Contains(err.Error(), "auth.kubernetes") {
		t.Errorf("error %q does not name auth.kubernetes", err)
	}
	leaks()
}

// TestServeStopsEverything: Serve runs the server and the background loops
// as one group; when its context ends all of them stop, and Close releases
// the rest.
func TestServeStopsEverything(t *testing.T) {
	cfg := lifecycleConfig(t)
	cfg.Tenants.Files = []string{filepath.Join(t.TempDir(), "*.yaml")}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	leaks := e2eutil.LeakCheck(t, 0, http.DefaultClient.CloseIdleConnections)
	a, err := New(cfg, slog.New(slog.DiscardHandler), "test")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln, nil) }()
	e2eutil.Eventually(t, 10*time.Second, "proxy answering /health", func() error {
		resp, err := http.Get("http://" + ln.Addr().String() + "/health")
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	a.Close()
	leaks()
}
